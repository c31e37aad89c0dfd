//! Sealing bytes to the fleet key: age encryption (X25519 + ChaCha20-Poly1305) behind a
//! one-line header that names the key by its public fingerprint.
//!
//! Format: `flotilla-sealed/v1 <fingerprint>\n` followed by a binary age file. age itself
//! does not say which key a file was encrypted to (recipients are anonymous by design), so
//! without the header a node with the wrong key file could only say "cannot decrypt"; with
//! it, the error names both fingerprints. The header is not authenticated: changing it can
//! only change that error message, never what decrypts. Plain age files (no header) are
//! opened too.

use secrecy::SecretSlice;

use crate::{AuthError, KeyFile};

const HEADER_TAG: &[u8] = b"flotilla-sealed/v1 ";
/// Longest header line accepted (tag + fingerprint + newline, with room to spare).
const MAX_HEADER_LEN: usize = 128;
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// Encrypts `plaintext` to `key`. Every call gives different bytes (a fresh ephemeral key).
pub fn seal(key: &KeyFile, plaintext: &[u8]) -> Result<Vec<u8>, AuthError> {
    let ciphertext =
        age::encrypt(key.recipient(), plaintext).map_err(|e| AuthError::Encrypt { reason: e.to_string() })?;
    let fingerprint = key.fingerprint();
    let mut out = Vec::with_capacity(HEADER_TAG.len() + fingerprint.len() + 1 + ciphertext.len());
    out.extend_from_slice(HEADER_TAG);
    out.extend_from_slice(fingerprint.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts what [`seal`] made. Data sealed to another key is [`AuthError::WrongKey`] (naming
/// the fingerprint it was sealed to) or, for headerless age data, [`AuthError::NoMatchingKey`];
/// damaged data is [`AuthError::Corrupt`]. The plaintext is zeroed when dropped.
pub fn open(key: &KeyFile, sealed: &[u8]) -> Result<SecretSlice<u8>, AuthError> {
    let ours = key.fingerprint();
    let body = if let Some(rest) = sealed.strip_prefix(HEADER_TAG) {
        let window = &rest[..rest.len().min(MAX_HEADER_LEN)];
        let nl = window.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt("the header line has no end"))?;
        let fingerprint = std::str::from_utf8(&window[..nl])
            .ok()
            .filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| corrupt("the header names no key fingerprint"))?;
        if fingerprint != ours {
            return Err(AuthError::WrongKey { sealed_with: fingerprint.to_owned(), ours });
        }
        &rest[nl + 1..]
    } else if sealed.starts_with(AGE_MAGIC) {
        sealed
    } else {
        return Err(corrupt("it does not start with a flotilla-sealed or age header"));
    };
    match age::decrypt(key.identity(), body) {
        Ok(plain) => Ok(SecretSlice::from(plain)),
        // With a matching header this means two keys share a fingerprint, or the header was
        // edited; either way this node's key does not open the data.
        Err(age::DecryptError::NoMatchingKeys) => Err(AuthError::NoMatchingKey { ours }),
        Err(e) => Err(corrupt(&e.to_string())),
    }
}

fn corrupt(reason: &str) -> AuthError {
    AuthError::Corrupt { reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn key(dir: &tempfile::TempDir, name: &str) -> KeyFile {
        KeyFile::create_new(&dir.path().join(name)).unwrap()
    }

    #[test]
    fn round_trip_and_each_seal_differs() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(&dir, "a.key");
        let msg = b"sk-ant-api03-round-trip-secret";
        let one = seal(&k, msg).unwrap();
        let two = seal(&k, msg).unwrap();
        assert_ne!(one, two);
        assert!(!one.windows(msg.len()).any(|w| w == msg), "plaintext visible in sealed bytes");
        assert_eq!(open(&k, &one).unwrap().expose_secret(), msg);
        assert_eq!(open(&k, &two).unwrap().expose_secret(), msg);
        // Another process loading the same file opens it too.
        let reloaded = KeyFile::load(k.path()).unwrap();
        assert_eq!(open(&reloaded, &one).unwrap().expose_secret(), msg);
        assert_eq!(open(&k, &seal(&k, b"").unwrap()).unwrap().expose_secret(), b"");
    }

    #[test]
    fn wrong_key_names_the_sealing_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(&dir, "a.key"), key(&dir, "b.key"));
        let sealed = seal(&a, b"secret").unwrap();
        let err = open(&b, &sealed).unwrap_err();
        match &err {
            AuthError::WrongKey { sealed_with, ours } => {
                assert_eq!(sealed_with, &a.fingerprint());
                assert_eq!(ours, &b.fingerprint());
            }
            other => panic!("expected WrongKey, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("sealed with a different key file (fingerprint {})", a.fingerprint())),
            "{msg}"
        );
        assert!(err.is_key_problem());
    }

    #[test]
    fn headerless_age_data_with_wrong_key_cannot_decrypt() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(&dir, "a.key"), key(&dir, "b.key"));
        let raw = age::encrypt(a.recipient(), b"plain age").unwrap();
        assert_eq!(open(&a, &raw).unwrap().expose_secret(), b"plain age");
        let err = open(&b, &raw).unwrap_err();
        assert!(matches!(err, AuthError::NoMatchingKey { .. }), "{err:?}");
        assert!(err.to_string().starts_with("cannot decrypt: wrong key file"), "{err}");
        // A header edited to claim our key still cannot open it.
        let mut forged = seal(&a, b"x").unwrap();
        let fa = a.fingerprint();
        let fb = b.fingerprint();
        let pos = forged.windows(fa.len()).position(|w| w == fa.as_bytes()).unwrap();
        forged[pos..pos + fb.len()].copy_from_slice(fb.as_bytes());
        assert!(matches!(open(&b, &forged), Err(AuthError::NoMatchingKey { .. })));
    }

    #[test]
    fn damage_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(&dir, "a.key");
        let sealed = seal(&k, b"some secret value").unwrap();
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(open(&k, &flipped), Err(AuthError::Corrupt { .. })));
        assert!(matches!(open(&k, &sealed[..sealed.len() - 10]), Err(AuthError::Corrupt { .. })));
        assert!(matches!(open(&k, b"{\"kind\":\"api-key\"}"), Err(AuthError::Corrupt { .. })));
        assert!(matches!(open(&k, b"flotilla-sealed/v1 no-newline"), Err(AuthError::Corrupt { .. })));
        assert!(matches!(open(&k, b""), Err(AuthError::Corrupt { .. })));
    }
}

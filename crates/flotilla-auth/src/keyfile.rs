//! The fleet key file: one age X25519 identity, kept outside the cluster store (mode 600) and
//! copied to every node once at setup, that seals and opens the credentials in the store.
//!
//! The file is in `age-keygen`'s format (`#` comment lines, then one `AGE-SECRET-KEY-1…`
//! line), so a key made by `age-keygen -o fleet.key` works too, and `age -d -i fleet.key`
//! can open what flotilla sealed (after the one-line header, see [`crate::sealed`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use age::secrecy::ExposeSecret;
use age::x25519::{Identity, Recipient};
use secrecy::zeroize::Zeroizing;

use crate::AuthError;

/// Characters of the public key (`age1…`) shown as the key's fingerprint: `age1` plus 12
/// characters of key material, 60 bits, plenty to tell a fleet's key from another.
const FINGERPRINT_LEN: usize = 16;

/// A key file is a few hundred bytes; anything much larger is not one.
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

const SECRET_KEY_PREFIX: &str = "AGE-SECRET-KEY-1";

/// The fleet's key, loaded from its file. `Debug` shows the path and the fingerprint only.
pub struct KeyFile {
    identity: Identity,
    recipient: Recipient,
    path: PathBuf,
}

impl KeyFile {
    /// Loads the key file at `path`. A missing file is [`AuthError::KeyFileMissing`] (whose
    /// message says to copy the file from the node where it was created, or run
    /// `flotilla auth keygen`); a file accessible by group or others is refused with
    /// [`AuthError::KeyFilePermissions`] (the message gives the `chmod 600` to run).
    pub fn load(path: &Path) -> Result<KeyFile, AuthError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(AuthError::KeyFileMissing { path: path.to_owned() });
            }
            Err(e) => return Err(AuthError::io("open key file", path, e)),
        };
        // Checked on the open file, not the path, so the file read is the file checked.
        let meta = file.metadata().map_err(|e| AuthError::io("read key file", path, e))?;
        check_private(path, &meta)?;
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(AuthError::KeyFileInvalid { path: path.to_owned(), reason: "the file is too large" });
        }
        // Sized up front so reading never reallocates and leaves copies of the key behind.
        let cap = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut text = Zeroizing::new(String::with_capacity(cap));
        match file.take(MAX_KEY_FILE_LEN).read_to_string(&mut text) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(AuthError::KeyFileInvalid { path: path.to_owned(), reason: "the file is not UTF-8 text" });
            }
            Err(e) => return Err(AuthError::io("read key file", path, e)),
        }
        let identity = parse_identity(path, &text)?;
        Ok(KeyFile::from_identity(identity, path))
    }

    /// Creates a new key file at `path` (mode 600; missing parent directories are created
    /// with mode 700). Refuses with [`AuthError::KeyFileExists`] if there is one already: a
    /// fleet key is never overwritten, since that would orphan every credential sealed to it.
    /// The file appears complete or not at all (written aside, then linked into place).
    pub fn create_new(path: &Path) -> Result<KeyFile, AuthError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(|e| AuthError::io("create key file directory", parent, e))?;
        }
        let identity = Identity::generate();
        let recipient = identity.to_public();
        let text = Zeroizing::new(format!(
            "# flotilla fleet key: copy this file to every node of the fleet (mode 600).\n\
             # Never put it into the cluster store or a repository.\n\
             # public key: {recipient}\n\
             {}\n",
            identity.to_string().expose_secret()
        ));
        write_new_private(path, text.as_bytes())?;
        Ok(KeyFile { identity, recipient, path: path.to_owned() })
    }

    /// [`KeyFile::load`], or [`KeyFile::create_new`] when there is no file yet. When another
    /// process creates the file at the same moment, both end up with the same key.
    pub fn load_or_create(path: &Path) -> Result<KeyFile, AuthError> {
        match Self::load(path) {
            Err(AuthError::KeyFileMissing { .. }) => match Self::create_new(path) {
                Err(AuthError::KeyFileExists { .. }) => Self::load(path),
                other => other,
            },
            other => other,
        }
    }

    /// Where the key was loaded from or created.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A short public identifier of the key (the first characters of its public key), safe
    /// to print and log; the same on every node holding the same key file.
    pub fn fingerprint(&self) -> String {
        self.recipient.to_string().chars().take(FINGERPRINT_LEN).collect()
    }

    /// The full public key (`age1…`): anyone holding it can seal data for the fleet.
    pub fn public_key(&self) -> String {
        self.recipient.to_string()
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn recipient(&self) -> &Recipient {
        &self.recipient
    }

    fn from_identity(identity: Identity, path: &Path) -> KeyFile {
        let recipient = identity.to_public();
        KeyFile { identity, recipient, path: path.to_owned() }
    }
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile").field("path", &self.path).field("fingerprint", &self.fingerprint()).finish()
    }
}

/// Where the key file is by default: `$FLOTILLA_KEY_FILE`, else
/// `$XDG_CONFIG_HOME/flotilla/fleet.key`, else `$HOME/.config/flotilla/fleet.key`, else (a
/// service with no home, such as a system unit) `/etc/flotilla/fleet.key`. Empty variables
/// count as unset, and so does a relative `XDG_CONFIG_HOME` (the XDG spec says to ignore it).
/// `env` looks a variable up (pass `|k| std::env::var(k).ok()`); tests pass a map instead.
pub fn default_key_path(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = var("FLOTILLA_KEY_FILE") {
        return PathBuf::from(p);
    }
    if let Some(xdg) = var("XDG_CONFIG_HOME").map(PathBuf::from).filter(|p| p.is_absolute()) {
        return xdg.join("flotilla").join("fleet.key");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".config").join("flotilla").join("fleet.key");
    }
    PathBuf::from("/etc/flotilla/fleet.key")
}

/// The one identity in a key file's text; comment and blank lines are skipped.
fn parse_identity(path: &Path, text: &str) -> Result<Identity, AuthError> {
    let invalid = |reason| AuthError::KeyFileInvalid { path: path.to_owned(), reason };
    let mut keys = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = keys.next().ok_or_else(|| invalid("it holds no key line"))?;
    if keys.next().is_some() {
        return Err(invalid("it holds more than one key line"));
    }
    if !line.starts_with(SECRET_KEY_PREFIX) {
        return Err(invalid("its key line does not start with AGE-SECRET-KEY-1"));
    }
    // age's parse error is a fixed string, but it is dropped anyway: nothing about the line
    // (which is the secret) goes into the message.
    Identity::from_str(line).map_err(|_| invalid("its key line is not a valid age X25519 identity"))
}

/// Refuses a key file that group or others can read or write.
#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), AuthError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthError::KeyFilePermissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), AuthError> {
    // Without Unix modes there is nothing portable to check; the directory's ACLs decide.
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Only the directories created here get 700; existing ones (say ~/.config) are left
        // as they are.
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `bytes` to a new file at `path` with mode 600, atomically and without ever
/// replacing an existing file: the bytes go to a temporary file beside it, which is then
/// hard-linked into place (a link fails if the name exists, where a rename would clobber).
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "fleet.key".to_owned());
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let written = write_private(&tmp, bytes);
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    // The temporary name goes whatever happened; the key lives on under `path` if linked.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(AuthError::KeyFileExists { path: path.to_owned() });
        }
        Err(e) => return Err(AuthError::io("create key file", path, e)),
    }
    // Make the new name durable. Some platforms cannot fsync a directory; the file itself is
    // already synced, so a failure here is not worth failing the command for.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn created_file_is_0600_in_a_0700_directory_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("fleet.key");
        let created = KeyFile::load_or_create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a").join("b")), 0o700);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with(SECRET_KEY_PREFIX)).count(), 1);
        assert!(text.contains(&created.public_key()));
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        let loaded = KeyFile::load(&path).unwrap();
        assert_eq!(loaded.fingerprint(), created.fingerprint());
        let again = KeyFile::load_or_create(&path).unwrap();
        assert_eq!(again.public_key(), created.public_key());
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_file_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        KeyFile::create_new(&path).unwrap();
        for bad in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            let err = KeyFile::load(&path).unwrap_err();
            assert!(matches!(err, AuthError::KeyFilePermissions { mode, .. } if mode == bad), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("chmod 600 {}", path.display())), "{msg}");
            // load_or_create must not "fix" it by making a new key.
            assert!(matches!(KeyFile::load_or_create(&path), Err(AuthError::KeyFilePermissions { .. })));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(KeyFile::load(&path).is_ok());
    }

    #[test]
    fn missing_file_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = KeyFile::load(&dir.path().join("nope.key")).unwrap_err();
        assert!(matches!(err, AuthError::KeyFileMissing { .. }));
        let msg = err.to_string();
        assert!(msg.contains("copy it from the node where it was created"), "{msg}");
        assert!(msg.contains("flotilla auth keygen"), "{msg}");
        assert!(err.is_key_problem());
    }

    #[test]
    fn create_new_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        let first = KeyFile::create_new(&path).unwrap();
        let err = KeyFile::create_new(&path).unwrap_err();
        assert!(matches!(err, AuthError::KeyFileExists { .. }), "{err:?}");
        assert_eq!(KeyFile::load(&path).unwrap().public_key(), first.public_key());
    }

    #[test]
    fn reads_age_keygen_format_and_refuses_junk_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let id = Identity::generate();
        let secret = id.to_string().expose_secret().to_owned();
        let good = format!("# created: 2026-01-01T00:00:00Z\n# public key: {}\n\n{secret}\n", id.to_public());
        assert_eq!(parse_identity(&path, &good).unwrap().to_public().to_string(), id.to_public().to_string());

        let two = format!("{secret}\n{secret}\n");
        let cases = [
            ("", "no key line"),
            ("# only a comment\n", "no key line"),
            (two.as_str(), "more than one key line"),
            ("sk-ant-api03-not-an-age-key\n", "does not start with"),
            ("AGE-SECRET-KEY-1NOTBECH32\n", "not a valid age"),
        ];
        for (text, want) in cases {
            let msg = parse_identity(&path, text).err().expect("refused").to_string();
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert!(!msg.contains("sk-ant") && !msg.contains("NOTBECH32") && !msg.contains(&secret), "{msg}");
        }
    }

    #[test]
    fn debug_shows_fingerprint_not_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        let key = KeyFile::create_new(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let secret = text.lines().find(|l| l.starts_with(SECRET_KEY_PREFIX)).unwrap();
        let dbg = format!("{key:?} {key:#?}");
        assert!(!dbg.contains(secret), "{dbg}");
        assert!(!dbg.contains(SECRET_KEY_PREFIX), "{dbg}");
        assert!(dbg.contains(&key.fingerprint()), "{dbg}");
        assert!(key.fingerprint().starts_with("age1"));
        assert_eq!(key.fingerprint().len(), FINGERPRINT_LEN);
    }

    #[test]
    fn default_path_order() {
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            move |k: &str| m.get(k).cloned()
        };
        let all = [("FLOTILLA_KEY_FILE", "/k/f.key"), ("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(default_key_path(env(&all)), PathBuf::from("/k/f.key"));
        assert_eq!(default_key_path(env(&all[1..])), PathBuf::from("/x/flotilla/fleet.key"));
        assert_eq!(default_key_path(env(&all[2..])), PathBuf::from("/h/.config/flotilla/fleet.key"));
        // Empty and relative values are ignored.
        let odd = [("FLOTILLA_KEY_FILE", ""), ("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")];
        assert_eq!(default_key_path(env(&odd)), PathBuf::from("/h/.config/flotilla/fleet.key"));
        assert_eq!(default_key_path(env(&[])), PathBuf::from("/etc/flotilla/fleet.key"));
    }
}

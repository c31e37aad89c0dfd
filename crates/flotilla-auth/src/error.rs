//! What can go wrong with key files, sealed data and credential inputs. Messages never quote
//! a secret value and, where a human can fix the problem, say how.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// `EX_USAGE` from sysexits.h: the command was given something unusable.
const EX_USAGE: i32 = 64;
/// `EX_DATAERR`: input data (a credential file, a sealed blob) is wrong.
const EX_DATAERR: i32 = 65;
/// `EX_NOINPUT`: an input file does not exist.
const EX_NOINPUT: i32 = 66;
/// `EX_SOFTWARE`: an internal error.
const EX_SOFTWARE: i32 = 70;
/// `EX_CANTCREAT`: an output file cannot be created.
const EX_CANTCREAT: i32 = 73;
/// `EX_IOERR`: an i/o error.
const EX_IOERR: i32 = 74;
/// `EX_NOPERM`: insufficient permission, here also "not the key this data was sealed to".
const EX_NOPERM: i32 = 77;
/// `EX_CONFIG`: a configuration file (the key file) is wrong.
const EX_CONFIG: i32 = 78;

/// Every failure of this crate except OAuth refresh (see [`crate::RefreshError`]).
#[derive(Debug, Error)]
pub enum AuthError {
    /// [`crate::KeyFile::load`] found no key file.
    #[error(
        "key file {} does not exist: copy it from the node where it was created (same path, mode 600), or run `flotilla auth keygen` to make a new one (credentials sealed with another key must then be added again)",
        .path.display()
    )]
    KeyFileMissing { path: PathBuf },
    /// [`crate::KeyFile::create_new`] found a key file already there; it is never overwritten.
    #[error("key file {} already exists; it is never overwritten (move it away first if you really mean to replace the fleet key)", .path.display())]
    KeyFileExists { path: PathBuf },
    /// The key file can be read or written by group or others.
    #[error("key file {} is accessible by group or others (mode {mode:03o}): run `chmod 600 {}`", .path.display(), .path.display())]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    /// The key file does not hold exactly one age X25519 identity.
    #[error("key file {} is not an age identity: {reason} (expected one line starting with AGE-SECRET-KEY-1)", .path.display())]
    KeyFileInvalid { path: PathBuf, reason: &'static str },
    /// Reading or writing a file failed.
    #[error("cannot {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The data was sealed to another key file, known by its fingerprint.
    #[error(
        "sealed with a different key file (fingerprint {sealed_with}); this node's key file has fingerprint {ours}: copy the fleet's key file to this node"
    )]
    WrongKey { sealed_with: String, ours: String },
    /// The data names no key, and this node's key does not open it.
    #[error("cannot decrypt: wrong key file (this node's key file has fingerprint {ours})")]
    NoMatchingKey { ours: String },
    /// The data is not sealed data, or was damaged after sealing.
    #[error("sealed data is damaged or was not made by flotilla: {reason}")]
    Corrupt { reason: String },
    /// age refused to encrypt (not expected with an X25519 recipient).
    #[error("cannot encrypt: {reason}")]
    Encrypt { reason: String },
    /// `--api-key-env VAR` named an unset variable.
    #[error("environment variable {var} is not set")]
    EnvVarMissing { var: String },
    /// A credential input held nothing but whitespace.
    #[error("{what} is empty")]
    EmptySecret { what: String },
    /// An API key input held more than the key (several words or lines).
    #[error("{what} must hold only the key, as one word on one line")]
    NotOneWord { what: String },
    /// JSON that does not parse. Only the position is kept: serde_json's own message can quote
    /// the input, which here is secret.
    #[error("{what} is not valid JSON (line {line}, column {column})")]
    Json { what: String, line: usize, column: usize },
    /// An OAuth file parsed as JSON but is not a shape we know, or misses a field.
    #[error("{what}: {problem}")]
    OAuthFile { what: String, problem: String },
    /// No token URL or client id for an OAuth credential: not in the file, not given, and no
    /// default for the provider.
    #[error("no OAuth {field} known for provider {provider:?}: give one with --{flag}")]
    NoOAuthDefault { provider: String, field: &'static str, flag: &'static str },
    /// An opened record is not a credential record.
    #[error("sealed credential record is not valid (line {line}, column {column})")]
    Record { line: usize, column: usize },
}

impl AuthError {
    /// The process exit code for a command that failed with this error (sysexits.h).
    pub fn exit_code(&self) -> i32 {
        match self {
            AuthError::KeyFileMissing { .. } => EX_NOINPUT,
            AuthError::KeyFileExists { .. } => EX_CANTCREAT,
            AuthError::KeyFilePermissions { .. } | AuthError::WrongKey { .. } | AuthError::NoMatchingKey { .. } => {
                EX_NOPERM
            }
            AuthError::KeyFileInvalid { .. } => EX_CONFIG,
            AuthError::Io { .. } => EX_IOERR,
            AuthError::Encrypt { .. } => EX_SOFTWARE,
            AuthError::Corrupt { .. }
            | AuthError::EmptySecret { .. }
            | AuthError::NotOneWord { .. }
            | AuthError::Json { .. }
            | AuthError::OAuthFile { .. }
            | AuthError::Record { .. } => EX_DATAERR,
            AuthError::EnvVarMissing { .. } | AuthError::NoOAuthDefault { .. } => EX_USAGE,
        }
    }

    /// True when the node's key file is the problem (missing, unreadable, not the fleet's
    /// key), as opposed to the data: the fix is to copy the right key file to this node.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            AuthError::KeyFileMissing { .. }
                | AuthError::KeyFilePermissions { .. }
                | AuthError::KeyFileInvalid { .. }
                | AuthError::WrongKey { .. }
                | AuthError::NoMatchingKey { .. }
        )
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        AuthError::Io { action, path: path.into(), source }
    }

    pub(crate) fn json(what: impl Into<String>, e: &serde_json::Error) -> Self {
        AuthError::Json { what: what.into(), line: e.line(), column: e.column() }
    }
}

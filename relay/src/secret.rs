//! The HS256 secret: loading it from a file, and generating it once for `--dev`.
//!
//! The secret is the file's bytes, used verbatim as the HMAC key, except that one trailing
//! `"\n"` (or `"\r\n"`) is dropped so that `echo "$SECRET" > FILE` works. The relay and
//! `weft-relay token` read the file the same way, so tokens minted from a file verify against a
//! relay started with the same file, `--dev`'s generated `DATA_DIR/jwt.secret` included.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// The shortest secret accepted, in bytes (the HS256 key should be at least as long as its hash).
pub const MIN_SECRET_LEN: usize = 32;

/// The file name of the `--dev` secret inside the data directory.
pub const DEV_SECRET_FILE: &str = "jwt.secret";

/// Larger files are not secrets; bounding the read also makes `/dev/zero` fail instead of hang.
const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;

/// Random bytes in a generated secret (written as twice as many hex characters).
const DEV_SECRET_RANDOM_BYTES: usize = 32;

/// An HS256 secret of at least [`MIN_SECRET_LEN`] bytes. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    /// Wraps `bytes`, refusing fewer than [`MIN_SECRET_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                path: None,
                len: bytes.len(),
            });
        }
        Ok(JwtSecret(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtSecret({} bytes, redacted)", self.0.len())
    }
}

/// Why a secret could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file is missing or unreadable.
    #[error("cannot read the secret file {}", path.display())]
    Read {
        /// The secret file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "the secret{} is {len} bytes long; at least {MIN_SECRET_LEN} are required",
        path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
    )]
    TooShort {
        /// The secret file, when the secret came from one.
        path: Option<PathBuf>,
        /// The secret's length in bytes, after dropping one trailing newline.
        len: usize,
    },
    /// The file is larger than any sensible secret.
    #[error("the secret file {} is larger than {MAX_SECRET_FILE_LEN} bytes", path.display())]
    TooLong {
        /// The secret file.
        path: PathBuf,
    },
    /// Writing a generated secret failed.
    #[error("cannot write the secret file {}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Reads the secret in `path`: its bytes minus one trailing newline, at least
/// [`MIN_SECRET_LEN`] of them.
///
/// Logs a warning when group or others may read the file (Unix only).
pub fn load_secret(path: &Path) -> Result<JwtSecret, SecretError> {
    load_named_secret(path, "JWT secret")
}

/// [`load_secret`] for any secret (`what` names it in the warning), such as the push hook's.
pub fn load_named_secret(path: &Path, what: &str) -> Result<JwtSecret, SecretError> {
    let read_err = |source| SecretError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    warn_if_readable_by_others(&file, path, what);
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(SecretError::TooLong {
            path: path.to_owned(),
        });
    }
    strip_one_newline(&mut bytes);
    JwtSecret::new(bytes).map_err(|err| match err {
        SecretError::TooShort { len, .. } => SecretError::TooShort {
            path: Some(path.to_owned()),
            len,
        },
        other => other,
    })
}

/// Returns the `--dev` secret in `DATA_DIR/jwt.secret`, creating it first if it is missing.
///
/// A new secret is 64 random hex characters (and a newline), written with mode 0600 to a
/// temporary file and linked into place without replacing anything, so a crash never leaves a
/// truncated secret and two relays starting at once end up with the same one. An existing
/// file is loaded with [`load_secret`], so a too-short one is refused rather than replaced.
pub fn ensure_dev_secret(data_dir: &Path) -> Result<JwtSecret, SecretError> {
    let path = data_dir.join(DEV_SECRET_FILE);
    if path.exists() {
        return load_secret(&path);
    }
    let write_err = |source| SecretError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(write_err)?;

    let mut random = [0u8; DEV_SECRET_RANDOM_BYTES];
    rand::rng().fill_bytes(&mut random);
    let mut text = hex(&random);
    text.push('\n');

    // tempfile creates its files with mode 0600 on Unix.
    let mut tmp = tempfile::Builder::new()
        .prefix(".jwt.secret.")
        .tempfile_in(data_dir)
        .map_err(write_err)?;
    tmp.write_all(text.as_bytes()).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => sync_dir(data_dir).map_err(write_err)?,
        // Another process created it first: use theirs.
        Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(write_err(err.error)),
    }
    load_secret(&path)
}

/// Whether a Unix permission `mode` lets group or others read the file.
pub fn is_readable_by_others(mode: u32) -> bool {
    mode & 0o044 != 0
}

/// Logs a warning when `file` is readable by group or others. `what` names it in the log.
pub(crate) fn warn_if_readable_by_others(file: &File, path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = file.metadata() {
            let mode = meta.permissions().mode();
            if is_readable_by_others(mode) {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "the {what} file is readable by group or others; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (file, path, what);
}

/// Makes a rename or link in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn strip_one_newline(bytes: &mut Vec<u8>) {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, contents: &[u8]) {
        std::fs::write(path, contents).unwrap();
    }

    #[test]
    fn a_secret_shorter_than_32_bytes_is_refused() {
        let err = JwtSecret::new(vec![b'x'; 31]).unwrap_err();
        assert!(matches!(err, SecretError::TooShort { len: 31, .. }));
        assert!(err.to_string().contains("at least 32"), "{err}");
        assert!(JwtSecret::new(vec![b'x'; 32]).is_ok());
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let secret = JwtSecret::new(b"super-secret-super-secret-super-secret".to_vec()).unwrap();
        assert!(!format!("{secret:?}").contains("super"));
    }

    #[test]
    fn one_trailing_newline_is_dropped_so_echo_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let text = "0123456789abcdef0123456789abcdef";
        write(&path, format!("{text}\n").as_bytes());
        assert_eq!(load_secret(&path).unwrap().as_bytes(), text.as_bytes());
        write(&path, format!("{text}\r\n").as_bytes());
        assert_eq!(load_secret(&path).unwrap().as_bytes(), text.as_bytes());
        // Only one: other whitespace is part of the secret.
        write(&path, format!("{text}\n\n").as_bytes());
        assert_eq!(
            load_secret(&path).unwrap().as_bytes(),
            format!("{text}\n").as_bytes()
        );
    }

    #[test]
    fn a_31_byte_secret_plus_newline_is_too_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write(&path, format!("{}\n", "x".repeat(31)).as_bytes());
        let err = load_secret(&path).unwrap_err();
        assert!(
            matches!(err, SecretError::TooShort { len: 31, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn a_missing_secret_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope");
        let err = load_secret(&path).unwrap_err();
        assert!(matches!(err, SecretError::Read { .. }));
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn a_huge_file_is_not_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        write(&path, &vec![b'a'; MAX_SECRET_FILE_LEN as usize + 1]);
        assert!(matches!(
            load_secret(&path).unwrap_err(),
            SecretError::TooLong { .. }
        ));
    }

    #[test]
    fn group_or_world_readable_modes_are_flagged() {
        assert!(!is_readable_by_others(0o600));
        assert!(!is_readable_by_others(0o400));
        assert!(!is_readable_by_others(0o700));
        assert!(!is_readable_by_others(0o100600)); // regular-file bits are ignored
        assert!(!is_readable_by_others(0o622)); // writable but not readable by others
        assert!(is_readable_by_others(0o640));
        assert!(is_readable_by_others(0o604));
        assert!(is_readable_by_others(0o644));
    }

    #[test]
    fn the_dev_secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = ensure_dev_secret(&data_dir).unwrap();
        let path = data_dir.join(DEV_SECRET_FILE);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 65);
        assert!(on_disk[..64].iter().all(u8::is_ascii_hexdigit));
        assert_eq!(first.as_bytes(), &on_disk[..64]);

        let second = ensure_dev_secret(&data_dir).unwrap();
        assert_eq!(first, second);
        assert_eq!(std::fs::read(&path).unwrap(), on_disk);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn the_dev_secret_is_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_secret(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(DEV_SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_existing_short_dev_secret_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEV_SECRET_FILE);
        write(&path, b"short\n");
        assert!(matches!(
            ensure_dev_secret(dir.path()).unwrap_err(),
            SecretError::TooShort { len: 5, .. }
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"short\n");
    }
}

//! The relay's data directory and what it keeps there private.
//!
//! The directory holds the store (`relay.redb`), `--dev`'s HS256 secret (`jwt.secret`) and its
//! TLS identity (`tls/`, whose `key.pem` is the private key): all of it is the relay's alone.
//! On every start the directory and `tls/` are set to mode 0700 and those files to 0600 (Unix),
//! whether the relay created them or found them, since a directory that already existed (made
//! by hand, restored from a backup) keeps whatever modes it had. The store file is created by
//! the store with the default mode, so it is set again once the store is open
//! ([`make_file_private`]). Files named by flags outside the directory (`--jwt-secret-file`,
//! `--key`) are the operator's and are left as they are (a readable one is warned about).

use std::io;
use std::path::{Path, PathBuf};

use crate::secret::DEV_SECRET_FILE;
use crate::tls::dev_cert_paths;

/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "relay.redb";

/// Why the data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare {}", path.display())]
pub struct DataDirError {
    /// The directory or file concerned.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Creates `dir` (and missing parents) if needed, then sets mode 0700 on it and on `tls/`, and
/// 0600 on the store, the dev secret and the dev private key, where they exist.
pub fn prepare_data_dir(dir: &Path) -> Result<(), DataDirError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| DataDirError { path, source }
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(fail(dir))?;
    set_mode(dir, 0o700).map_err(fail(dir))?;
    let (_, key) = dev_cert_paths(dir);
    if let Some(tls) = key.parent() {
        set_mode_if_present(tls, 0o700).map_err(fail(tls))?;
    }
    for file in [dir.join(STORE_FILE), dir.join(DEV_SECRET_FILE), key] {
        set_mode_if_present(&file, 0o600).map_err(fail(&file))?;
    }
    Ok(())
}

/// Sets mode 0600 on `path` (a file the relay created in its data directory).
pub fn make_file_private(path: &Path) -> Result<(), DataDirError> {
    set_mode(path, 0o600).map_err(|source| DataDirError {
        path: path.to_owned(),
        source,
    })
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

fn set_mode_if_present(path: &Path, mode: u32) -> io::Result<()> {
    match set_mode(path, mode) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn open_up(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_existing_directory_and_its_files_are_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let (cert, key) = dev_cert_paths(&dir);
        std::fs::create_dir(key.parent().unwrap()).unwrap();
        let files = [dir.join(STORE_FILE), dir.join(DEV_SECRET_FILE), key.clone()];
        for file in files.iter().chain([&cert]) {
            std::fs::write(file, b"x").unwrap();
            open_up(file, 0o644);
        }
        open_up(key.parent().unwrap(), 0o755);
        open_up(&dir, 0o755);

        prepare_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(key.parent().unwrap()), 0o700);
        for file in &files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        // The certificate is public.
        assert_eq!(mode(&cert), 0o644);
    }

    #[test]
    fn a_missing_directory_is_created_private_with_its_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        prepare_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}

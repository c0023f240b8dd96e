//! The data directory of one device.
//!
//! | file          | what                                                        |
//! |---------------|-------------------------------------------------------------|
//! | `weft.redb`   | the document store (documents, sync states, metadata)       |
//! | `device.pem`  | the device key and its self-signed certificate (mode 0600)  |
//! | `device.json` | `{"name": ...}`, the device's display name                  |
//! | `weft.sock`   | while a long-running command holds the store: its socket    |
//! | `outbox.json` | share/unshare/delete requests queued for the relay          |
//! | `rejected/`   | local versions the relay refused (read-only), kept aside    |
//!
//! The directory and `rejected/` are mode 0700 and every file in them 0600 (Unix): the key,
//! the documents and the request queue are this user's alone. The modes are set again on
//! every start, so a directory made by hand or copied with looser modes is tightened.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_core::quic::DeviceKey;

use crate::DeviceError;

/// A device's data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct Info {
    #[serde(default)]
    name: Option<String>,
}

impl DataDir {
    /// The directory at `path` (nothing is created yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DataDir { path: path.into() }
    }

    /// The platform's data directory for weft (`$XDG_DATA_HOME/weft` on Linux).
    pub fn platform_default() -> Option<Self> {
        dirs::data_dir().map(|d| DataDir::new(d.join("weft")))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.path.join("weft.redb")
    }

    /// The device key file.
    pub fn key_path(&self) -> PathBuf {
        self.path.join("device.pem")
    }

    /// The socket a long-running command listens on.
    pub fn socket_path(&self) -> PathBuf {
        self.path.join("weft.sock")
    }

    /// Where rejected local changes are kept (one Automerge file per rejected version).
    pub fn rejected_path(&self) -> PathBuf {
        self.path.join("rejected")
    }

    /// The kinds of document the relay declared (TOML), as it last sent them.
    pub fn kinds_path(&self) -> PathBuf {
        self.path.join("kinds.toml")
    }

    /// The kinds this device knows: the built-in ones and those its relay declared (the
    /// built-in ones alone when the relay declared none or the file does not parse).
    pub fn kinds(&self) -> weft_schema::rules::Kinds {
        use weft_schema::rules::Kinds;
        match fs::read_to_string(self.kinds_path()) {
            Ok(text) => Kinds::with_declared(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring the kinds file");
                Kinds::builtin()
            }),
            Err(_) => Kinds::builtin(),
        }
    }

    /// Keeps the kinds the relay declared (TOML).
    pub fn write_kinds(&self, toml: &str) -> Result<(), DeviceError> {
        write_private(&self.kinds_path(), toml.as_bytes())
            .map_err(|e| self.err(format!("cannot write kinds.toml: {e}")))
    }

    /// The queue of sharing and deletion requests not yet answered by a relay.
    pub fn outbox_path(&self) -> PathBuf {
        self.path.join("outbox.json")
    }

    fn info_path(&self) -> PathBuf {
        self.path.join("device.json")
    }

    fn err(&self, what: impl std::fmt::Display) -> DeviceError {
        DeviceError::DataDir {
            path: self.path.clone(),
            message: what.to_string(),
        }
    }

    /// Creates the directory and the device key if missing, makes the directory and its files
    /// private (see the module docs), and returns the key. A name, when given, becomes the
    /// user the device acts for; a device that already acts for another user refuses it.
    pub fn init(&self, name: Option<&str>) -> Result<DeviceKey, DeviceError> {
        create_private_dir(&self.path).map_err(|e| self.err(format!("cannot create it: {e}")))?;
        self.make_private()?;
        let key = match self.read_key()? {
            Some(k) => k,
            None => {
                let key = DeviceKey::generate()?;
                write_private(&self.key_path(), key.to_pem().as_bytes())
                    .map_err(|e| self.err(format!("cannot write the device key: {e}")))?;
                key
            }
        };
        if let Some(name) = name {
            // A device acts for one user, for good: its actors are bound to that user.
            self.claim_user(name).map_err(|e| match e {
                ClaimError::OtherUser(current) => {
                    DeviceError::Refused(format!("this device acts for {current}, not {name}"))
                }
                ClaimError::Write(w) => self.err(w),
            })?;
        }
        Ok(key)
    }

    /// The device key, if the directory has one.
    pub fn read_key(&self) -> Result<Option<DeviceKey>, DeviceError> {
        match fs::read_to_string(self.key_path()) {
            Ok(text) => Ok(Some(DeviceKey::from_pem(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(format!("cannot read the device key: {e}"))),
        }
    }

    /// Sets mode 0700 on the directory and `rejected/`, and 0600 on the files this device
    /// keeps in them, where they exist.
    fn make_private(&self) -> Result<(), DeviceError> {
        let fail = |path: &Path, e: std::io::Error| {
            self.err(format!("cannot make {} private: {e}", path.display()))
        };
        set_mode(&self.path, 0o700).map_err(|e| fail(&self.path, e))?;
        for file in [
            self.store_path(),
            self.key_path(),
            self.info_path(),
            self.outbox_path(),
        ] {
            set_mode_if_present(&file, 0o600).map_err(|e| fail(&file, e))?;
        }
        let rejected = self.rejected_path();
        match fs::read_dir(&rejected) {
            Ok(entries) => {
                set_mode(&rejected, 0o700).map_err(|e| fail(&rejected, e))?;
                for entry in entries {
                    let path = entry.map_err(|e| fail(&rejected, e))?.path();
                    if path.is_file() {
                        set_mode_if_present(&path, 0o600).map_err(|e| fail(&path, e))?;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(&rejected, e)),
        }
        Ok(())
    }

    /// Sets mode 0600 on the store file, which the store creates with the default mode.
    pub(crate) fn make_store_private(&self) -> Result<(), DeviceError> {
        let path = self.store_path();
        set_mode_if_present(&path, 0o600)
            .map_err(|e| self.err(format!("cannot make {} private: {e}", path.display())))
    }

    /// The user this device acts for (`weft init --name`, or the user of the first token it
    /// synced with), if known.
    pub fn name(&self) -> Option<String> {
        let text = fs::read(self.info_path()).ok()?;
        serde_json::from_slice::<Info>(&text).ok()?.name
    }

    /// The relay authenticated this device as `user`: it becomes the device's user if it has
    /// none. `Err(current)` when the device already acts for another user.
    pub fn claim_user(&self, user: &str) -> Result<(), ClaimError> {
        match self.name() {
            Some(current) if current == user => Ok(()),
            Some(current) => Err(ClaimError::OtherUser(current)),
            None => {
                let info = Info {
                    name: Some(user.to_owned()),
                };
                let text = serde_json::to_vec_pretty(&info)
                    .map_err(|e| ClaimError::Write(e.to_string()))?;
                write_private(&self.info_path(), &text)
                    .map_err(|e| ClaimError::Write(format!("cannot write device.json: {e}")))
            }
        }
    }
}

/// Creates `path` and its missing parents with mode 0700, and sets 0700 on `path` if it
/// already existed.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)?;
    set_mode(path, 0o700)
}

/// Sets the Unix permission bits of `path` (nothing elsewhere).
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

fn set_mode_if_present(path: &Path, mode: u32) -> std::io::Result<()> {
    match set_mode(path, mode) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes `bytes` to `path` atomically, readable by the owner only (mode 0600): a temporary
/// file of its own in the same directory, fsynced, renamed over `path`, then the directory
/// fsynced. Each write has a unique temporary name, so writers of different files (or of one
/// file) never write into each other's temporary file.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // tempfile creates the file with mode 0600 on Unix; set it anyway, whatever that default.
    let mut tmp = tempfile::Builder::new()
        .prefix(".weft-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    set_mode(tmp.path(), 0o600)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_keeps_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("d"));
        let a = dir.init(Some("laptop")).unwrap();
        let b = dir.init(None).unwrap();
        assert_eq!(a.device_id(), b.device_id());
        assert_eq!(dir.name().as_deref(), Some("laptop"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.key_path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
    }

    #[test]
    fn two_writers_of_different_files_never_swap_contents() {
        use std::sync::{Arc, Barrier};
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        // `device.pem` and `device.json` once shared the temporary name `device.tmp`.
        let (pem, json) = (dir.key_path(), dir.info_path());
        let barrier = Arc::new(Barrier::new(2));
        let writer = |path: PathBuf, tag: &'static str| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    barrier.wait();
                    write_private(&path, format!("{tag} {i}").as_bytes()).unwrap();
                    barrier.wait();
                    let text = fs::read_to_string(&path).unwrap();
                    assert_eq!(text, format!("{tag} {i}"), "{}", path.display());
                }
            })
        };
        let a = writer(pem.clone(), "key");
        let b = writer(json.clone(), "info");
        a.join().unwrap();
        b.join().unwrap();
        // No temporary file is left behind.
        let mut names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["device.json", "device.pem"]);
    }

    #[cfg(unix)]
    #[test]
    fn init_makes_an_existing_directory_and_its_files_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let open_up = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m));
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("d"));
        dir.init(Some("laptop")).unwrap();
        // Someone loosens everything: the store, the queue and a rejected version too.
        fs::write(dir.store_path(), b"").unwrap();
        fs::write(dir.outbox_path(), b"[]").unwrap();
        fs::create_dir(dir.rejected_path()).unwrap();
        let rejected = dir.rejected_path().join("doc.automerge");
        fs::write(&rejected, b"").unwrap();
        let files = [
            dir.store_path(),
            dir.key_path(),
            dir.info_path(),
            dir.outbox_path(),
            rejected,
        ];
        for file in &files {
            open_up(file, 0o644).unwrap();
        }
        open_up(&dir.rejected_path(), 0o755).unwrap();
        open_up(dir.path(), 0o755).unwrap();

        dir.init(None).unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.rejected_path()), 0o700);
        for file in &files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
    }

    #[test]
    fn a_damaged_key_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        fs::write(dir.key_path(), "not a key").unwrap();
        assert!(matches!(dir.init(None), Err(DeviceError::Key(_))));
    }
}

/// Why a device could not take on a user.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// It acts for another user.
    #[error("this device acts for {0}")]
    OtherUser(String),
    /// Recording the user failed.
    #[error("{0}")]
    Write(String),
}

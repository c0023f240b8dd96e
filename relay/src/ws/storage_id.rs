//! The relay's automerge-repo storage id: the name clients keep the relay's sync state and
//! remote heads under (`peerMetadata.storageId`). It must outlive restarts, or every client
//! would start over against a relay it believes new, so it is kept in the data directory
//! ([`STORAGE_ID_FILE`]), created on first use.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The storage id's file in the relay's data directory.
pub const STORAGE_ID_FILE: &str = "ws-storage-id";

/// Longest storage id read back from the file (ours are 36 characters).
const MAX_LEN: usize = 128;

/// Why the storage id could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum StorageIdError {
    /// Reading or writing the file failed.
    #[error("cannot read or write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file holds something that is not a storage id.
    #[error("{} does not hold a storage id (1 to {MAX_LEN} printable ASCII characters)", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
    },
}

/// The storage id kept in `data_dir`, created (a random UUID, as automerge-repo's own) when
/// the file does not exist yet.
pub fn load_or_create_storage_id(data_dir: &Path) -> Result<String, StorageIdError> {
    let path = data_dir.join(STORAGE_ID_FILE);
    let io_err = |source| StorageIdError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            let valid =
                !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic());
            if valid {
                Ok(id.to_owned())
            } else {
                Err(StorageIdError::Invalid { path })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = random_uuid();
            // Written to a temporary file and renamed, so a crash leaves no half-written id.
            let tmp = data_dir.join(format!("{STORAGE_ID_FILE}.tmp"));
            let mut file = std::fs::File::create(&tmp).map_err(io_err)?;
            file.write_all(format!("{id}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io_err)?;
            std::fs::rename(&tmp, &path).map_err(io_err)?;
            Ok(id)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// A random (version 4) UUID in its usual text form.
fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_id_is_created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_storage_id(dir.path()).unwrap();
        assert_eq!(first.len(), 36);
        assert_eq!(load_or_create_storage_id(dir.path()).unwrap(), first);
        std::fs::write(dir.path().join(STORAGE_ID_FILE), "bad id\n").unwrap();
        assert!(matches!(
            load_or_create_storage_id(dir.path()),
            Err(StorageIdError::Invalid { .. })
        ));
    }
}

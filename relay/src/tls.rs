//! The relay's TLS identity: its certificate chain and private key.
//!
//! Production relays load PEM files (`--cert`, `--key`); `--dev` generates a self-signed
//! certificate for `localhost`, `127.0.0.1` and `::1` once into `DATA_DIR/tls/` and reuses it.
//! Keys are checked against certificates with rustls's `ring` provider, the one quinn 0.11
//! uses by default, so anything loaded here is usable by the QUIC server.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::secret::{sync_dir, warn_if_readable_by_others};

/// The names a `--dev` certificate is valid for.
pub const DEV_SUBJECT_ALT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const DEV_TLS_DIR: &str = "tls";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// PEM files larger than this are refused unread.
const MAX_PEM_FILE_LEN: u64 = 1024 * 1024;

/// A certificate chain (leaf first) and the leaf's private key. `Debug` never shows the key.
pub struct TlsIdentity {
    /// The certificate chain, the relay's own certificate first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The private key of the first certificate.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certificates", &self.cert_chain.len())
            .field("key", &"redacted")
            .finish()
    }
}

/// Why a certificate or key could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file is missing or unreadable.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not PEM or holds no certificate.
    #[error("{} contains no PEM certificate", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The file is not PEM or holds no private key.
    #[error("{} contains no PEM private key", path.display())]
    NoPrivateKey {
        /// The key file.
        path: PathBuf,
    },
    /// The file is larger than any sensible PEM file.
    #[error("{} is larger than {MAX_PEM_FILE_LEN} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file looks like PEM but a section is broken.
    #[error("{} is not valid PEM", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The PEM parser's error.
        source: rustls::pki_types::pem::Error,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error("the private key in {} is not usable", path.display())]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// rustls's error.
        source: rustls::Error,
    },
    /// The key does not belong to the first certificate.
    #[error(
        "the private key in {} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The first certificate cannot be parsed.
    #[error("the certificate in {} cannot be parsed", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// rustls's error.
        source: rustls::Error,
    },
    /// `DATA_DIR/tls` holds one of the two files but not the other.
    #[error(
        "{} holds only one of cert.pem and key.pem; remove the directory to regenerate both",
        dir.display()
    )]
    Incomplete {
        /// The `tls` directory.
        dir: PathBuf,
    },
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed certificate")]
    Generate {
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// Writing the generated files failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// The system's trust roots (for Postgres over TLS and an `https` push hook); `Err` when none
/// could be read, with what went wrong.
pub(crate) fn system_roots() -> Result<rustls::RootCertStore, String> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err(format!("{:?}", loaded.errors));
    }
    if !loaded.errors.is_empty() {
        tracing::warn!(errors = ?loaded.errors, "parts of the system trust store are unreadable");
    }
    Ok(roots)
}

/// Where `--dev` keeps its certificate and key: `DATA_DIR/tls/cert.pem` and `DATA_DIR/tls/key.pem`.
pub fn dev_cert_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join(DEV_TLS_DIR);
    (dir.join(CERT_FILE), dir.join(KEY_FILE))
}

/// Loads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1),
/// checking that the key belongs to the leaf. Warns when group or others may read the key file.
pub fn load_cert_and_key(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
    let cert_pem = read_pem_file(cert)?;
    let cert_chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| {
            pem_error(cert, source, || TlsError::NoCertificate {
                path: cert.into(),
            })
        })?;
    if cert_chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.into() });
    }

    let key_pem = read_pem_file(key)?;
    if let Ok(file) = File::open(key) {
        warn_if_readable_by_others(&file, key, "TLS private key");
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|source| pem_error(key, source, || TlsError::NoPrivateKey { path: key.into() }))?;

    let identity = TlsIdentity {
        cert_chain,
        key: key_der,
    };
    check_key_matches(&identity, cert, key)?;
    Ok(identity)
}

/// Returns the `--dev` identity in `DATA_DIR/tls/`, generating a self-signed certificate for
/// [`DEV_SUBJECT_ALT_NAMES`] first if neither file exists.
///
/// The pair is written into a temporary directory (key mode 0600) that is then renamed to
/// `tls`, so a crash or a second relay starting at once never leaves a key without its
/// certificate. Existing files are loaded with [`load_cert_and_key`] and never replaced.
pub fn ensure_dev_cert(data_dir: &Path) -> Result<TlsIdentity, TlsError> {
    let dir = data_dir.join(DEV_TLS_DIR);
    let (cert, key) = dev_cert_paths(data_dir);
    match (cert.exists(), key.exists()) {
        (true, true) => return load_cert_and_key(&cert, &key),
        (false, false) => {}
        _ => return Err(TlsError::Incomplete { dir }),
    }

    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Write { path, source }
    };
    fs::create_dir_all(data_dir).map_err(write_err(data_dir))?;
    let names: Vec<String> = DEV_SUBJECT_ALT_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|source| TlsError::Generate { source })?;

    let staging = tempfile::Builder::new()
        .prefix(".tls.")
        .tempdir_in(data_dir)
        .map_err(write_err(data_dir))?;
    // The directory holds the private key: the relay's alone (the umask decides otherwise).
    #[cfg(unix)]
    fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(write_err(staging.path()))?;
    write_new_file(
        &staging.path().join(KEY_FILE),
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new_file(
        &staging.path().join(CERT_FILE),
        generated.cert.pem().as_bytes(),
        0o644,
    )?;
    sync_dir(staging.path()).map_err(write_err(staging.path()))?;

    // An empty `tls` directory (e.g. made by hand) would be replaced by the rename; a full one
    // means another relay won the race, and its files are used instead.
    let _ = fs::remove_dir(&dir);
    match fs::rename(staging.path(), &dir) {
        Ok(()) => {
            // The staging directory is now `tls`; don't let its guard delete it.
            let _kept = staging.keep();
            sync_dir(data_dir).map_err(write_err(data_dir))?;
        }
        Err(_) if cert.exists() && key.exists() => {}
        Err(source) => return Err(TlsError::Write { path: dir, source }),
    }
    load_cert_and_key(&cert, &key)
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(read_err)?
        .take(MAX_PEM_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE_LEN {
        return Err(TlsError::TooLarge { path: path.into() });
    }
    Ok(bytes)
}

fn pem_error(
    path: &Path,
    source: rustls::pki_types::pem::Error,
    none_found: impl FnOnce() -> TlsError,
) -> TlsError {
    match source {
        rustls::pki_types::pem::Error::NoItemsFound => none_found(),
        source => TlsError::Pem {
            path: path.into(),
            source,
        },
    }
}

fn check_key_matches(identity: &TlsIdentity, cert: &Path, key: &Path) -> Result<(), TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    match CertifiedKey::from_der(
        identity.cert_chain.clone(),
        identity.key.clone_key(),
        &provider,
    ) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.into(),
                key: key.into(),
            })
        }
        Err(source @ rustls::Error::InvalidCertificate(_)) => Err(TlsError::BadCertificate {
            path: cert.into(),
            source,
        }),
        Err(source) => Err(TlsError::UnusableKey {
            path: key.into(),
            source,
        }),
    }
}

/// Writes a new file with Unix permission `mode` (ignored elsewhere).
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options.open(path).map_err(write_err)?;
    // The umask may have narrowed `mode`; set it exactly.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(write_err)?;
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_dev_certificate_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = ensure_dev_cert(&data_dir).unwrap();
        let (cert, key) = dev_cert_paths(&data_dir);
        let (cert_pem, key_pem) = (fs::read(&cert).unwrap(), fs::read(&key).unwrap());
        assert!(cert_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        assert_eq!(mode(&key), 0o600);

        let second = ensure_dev_cert(&data_dir).unwrap();
        assert_eq!(first.cert_chain, second.cert_chain);
        assert_eq!(first.key.secret_der(), second.key.secret_der());
        assert_eq!(fs::read(&cert).unwrap(), cert_pem);
        assert_eq!(fs::read(&key).unwrap(), key_pem);
        // Only `tls` remains: the staging directory was renamed, not copied.
        let entries: Vec<_> = fs::read_dir(&data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("tls")]);
    }

    #[test]
    fn the_dev_certificate_names_localhost_and_both_loopbacks() {
        let dir = tempfile::tempdir().unwrap();
        let identity = ensure_dev_cert(dir.path()).unwrap();
        let der = identity.cert_chain[0].as_ref();
        assert!(contains(der, b"localhost"));
        assert!(contains(der, &[127, 0, 0, 1]));
        let mut v6_loopback = [0u8; 16];
        v6_loopback[15] = 1;
        assert!(contains(der, &v6_loopback));
    }

    #[test]
    fn a_half_present_dev_identity_is_an_error_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _key) = dev_cert_paths(dir.path());
        fs::create_dir_all(cert.parent().unwrap()).unwrap();
        fs::write(&cert, b"mine").unwrap();
        let err = ensure_dev_cert(dir.path()).unwrap_err();
        assert!(matches!(err, TlsError::Incomplete { .. }), "{err:?}");
        assert_eq!(fs::read(&cert).unwrap(), b"mine");
    }

    #[test]
    fn production_files_load_and_a_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        ensure_dev_cert(&a).unwrap();
        ensure_dev_cert(&b).unwrap();
        let (cert_a, key_a) = dev_cert_paths(&a);
        let (_, key_b) = dev_cert_paths(&b);
        assert!(load_cert_and_key(&cert_a, &key_a).is_ok());
        let err = load_cert_and_key(&cert_a, &key_b).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn missing_and_non_pem_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_cert(dir.path()).unwrap();
        let (cert, key) = dev_cert_paths(dir.path());
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, b"this is not PEM at all\n").unwrap();

        let err = load_cert_and_key(&missing, &key).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.pem"));

        let err = load_cert_and_key(&junk, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(err.to_string().contains("junk.pem"));

        let err = load_cert_and_key(&cert, &junk).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");

        // A certificate file where the key should be holds no private key.
        let err = load_cert_and_key(&cert, &cert).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
}

//! A device's long-lived identity: an ECDSA P-256 key pair and a self-signed certificate.

use std::fmt;

use base64::Engine as _;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::{provider, DEVICE_SERVER_NAME};
use crate::DeviceId;

/// Why a device key could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Generating the key pair or its certificate failed (no OS randomness, ...).
    #[error("cannot generate a device key")]
    Generate {
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The text holds a broken PEM section.
    #[error("the device key is not valid PEM")]
    Pem {
        /// The PEM parser's error.
        #[source]
        source: pem::Error,
    },
    /// The text holds no `CERTIFICATE` section.
    #[error("the device key file holds no certificate")]
    NoCertificate,
    /// The text holds no private key section.
    #[error("the device key file holds no private key")]
    NoPrivateKey,
    /// The certificate cannot be parsed.
    #[error("the device certificate cannot be parsed")]
    BadCertificate {
        /// The parser's error.
        #[source]
        source: webpki::Error,
    },
    /// The private key is of a kind rustls cannot sign with.
    #[error("the device private key is not usable")]
    UnusableKey {
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate.
    #[error("the device private key does not match its certificate")]
    KeyMismatch,
}

/// A device's key pair and self-signed certificate. Its [`DeviceId`] is the blake3 fingerprint
/// of the certificate's SubjectPublicKeyInfo, so any peer can check it against the key the TLS
/// handshake proved.
///
/// `Debug` never shows the private key. Persisting the key ([`DeviceKey::to_pem`]) is the
/// caller's business; the text holds the private key, so write it with mode 0600.
pub struct DeviceKey {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    id: DeviceId,
}

impl DeviceKey {
    /// A new ECDSA P-256 key pair (from the OS's randomness) with a self-signed certificate
    /// that never expires (rcgen's 1975..4096 validity) and is usable for client and server
    /// authentication.
    pub fn generate() -> Result<Self, KeyError> {
        let generate = |source| KeyError::Generate { source };
        let key_pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let mut params =
            rcgen::CertificateParams::new(vec![DEVICE_SERVER_NAME.to_owned()]).map_err(generate)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "weft device");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key_pair).map_err(generate)?;
        let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
        Self::from_der(cert.der().clone(), key.into())
    }

    /// A key from its certificate and private key (PKCS#8, SEC1 or PKCS#1 DER), checking that
    /// the key belongs to the certificate.
    pub fn from_der(
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, KeyError> {
        match CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), &provider()) {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(KeyError::KeyMismatch)
            }
            Err(source) => return Err(KeyError::UnusableKey { source }),
        }
        let id = cert_device_id(&cert).map_err(|source| KeyError::BadCertificate { source })?;
        Ok(DeviceKey { cert, key, id })
    }

    /// Loads what [`DeviceKey::to_pem`] wrote: a private key and a certificate in PEM, in
    /// either order.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let pem_err = |source| match source {
            pem::Error::NoItemsFound => None,
            source => Some(KeyError::Pem { source }),
        };
        let cert = match CertificateDer::from_pem_slice(text.as_bytes()) {
            Ok(cert) => cert,
            Err(e) => return Err(pem_err(e).unwrap_or(KeyError::NoCertificate)),
        };
        let key = match PrivateKeyDer::from_pem_slice(text.as_bytes()) {
            Ok(key) => key,
            Err(e) => return Err(pem_err(e).unwrap_or(KeyError::NoPrivateKey)),
        };
        Self::from_der(cert, key)
    }

    /// The private key and the certificate as PEM text, for the caller to store.
    pub fn to_pem(&self) -> String {
        let key_label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        let mut out = String::new();
        pem_block(&mut out, key_label, self.key.secret_der());
        pem_block(&mut out, "CERTIFICATE", &self.cert);
        out
    }

    /// This device's id: the fingerprint of its certificate's public key.
    pub fn device_id(&self) -> DeviceId {
        self.id
    }

    /// The self-signed certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate as a one-element chain, for [`server_config`](super::server_config).
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    /// A copy of the private key.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl Clone for DeviceKey {
    fn clone(&self) -> Self {
        DeviceKey {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            id: self.id,
        }
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("id", &self.id)
            .field("key", &"redacted")
            .finish()
    }
}

/// The device id of whoever holds the key of `cert`: blake3 of its SubjectPublicKeyInfo DER.
pub(super) fn cert_device_id(cert: &CertificateDer<'_>) -> Result<DeviceId, webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(cert)?;
    Ok(DeviceId::from_public_key(
        cert.subject_public_key_info().as_ref(),
    ))
}

fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 output is ASCII, so splitting at any byte index is a char boundary.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData;

    use super::*;

    #[test]
    fn a_stored_key_loads_back_with_the_same_id() {
        let key = DeviceKey::generate().unwrap();
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        assert!(pem.contains("-----BEGIN CERTIFICATE-----\n"));

        let loaded = DeviceKey::from_pem(&pem).unwrap();
        assert_eq!(loaded.device_id(), key.device_id());
        assert_eq!(loaded.certificate(), key.certificate());
        assert_eq!(
            loaded.private_key().secret_der(),
            key.private_key().secret_der()
        );
        assert_eq!(loaded.to_pem(), pem);
        assert!(!format!("{loaded:?}").contains(&pem[30..60]));
    }

    #[test]
    fn two_devices_have_different_ids() {
        let a = DeviceKey::generate().unwrap();
        let b = DeviceKey::generate().unwrap();
        assert_ne!(a.device_id(), b.device_id());
    }

    #[test]
    fn the_id_is_the_fingerprint_of_the_public_key() {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der()).into();
        let device = DeviceKey::from_der(cert.der().clone(), key).unwrap();
        assert_eq!(
            device.device_id(),
            DeviceId::from_public_key(&key_pair.subject_public_key_info())
        );
    }

    #[test]
    fn a_key_with_a_foreign_certificate_is_refused() {
        let a = DeviceKey::generate().unwrap();
        let b = DeviceKey::generate().unwrap();
        let err = DeviceKey::from_der(a.certificate().clone(), b.private_key()).unwrap_err();
        assert!(matches!(err, KeyError::KeyMismatch), "{err:?}");

        let mixed = format!(
            "{}{}",
            b.to_pem().split("-----BEGIN CERTIFICATE").next().unwrap(),
            &a.to_pem()[a.to_pem().find("-----BEGIN CERTIFICATE").unwrap()..]
        );
        let err = DeviceKey::from_pem(&mixed).unwrap_err();
        assert!(matches!(err, KeyError::KeyMismatch), "{err:?}");
    }

    #[test]
    fn incomplete_or_broken_pem_is_named() {
        let pem = DeviceKey::generate().unwrap().to_pem();
        let cert_at = pem.find("-----BEGIN CERTIFICATE").unwrap();
        let err = DeviceKey::from_pem(&pem[..cert_at]).unwrap_err();
        assert!(matches!(err, KeyError::NoCertificate), "{err:?}");
        let err = DeviceKey::from_pem(&pem[cert_at..]).unwrap_err();
        assert!(matches!(err, KeyError::NoPrivateKey), "{err:?}");
        let err = DeviceKey::from_pem("not pem").unwrap_err();
        assert!(matches!(err, KeyError::NoCertificate), "{err:?}");
        let broken = pem.replacen("-----END CERTIFICATE-----", "", 1);
        assert!(DeviceKey::from_pem(&broken).is_err());
    }
}

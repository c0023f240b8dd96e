//! TLS 1.3 configuration for weft's QUIC endpoints: who is trusted, and how the device id is
//! learned from the handshake.
//!
//! Every certificate check here is followed by rustls's own check of the handshake signature
//! (`verify_tls13_signature` with ring's algorithms), so accepting a certificate means the peer
//! proved it holds that certificate's private key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::key::{cert_device_id, DeviceKey};
use super::{provider, transport_config, ALPN};
use crate::DeviceId;

/// Which client certificates a server accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Any valid self-signed device certificate (the relay: the token says who the user is,
    /// the certificate says which device).
    RequireDeviceCert,
    /// Only these devices (a peer-to-peer listener's `--allow` list).
    Allow(Vec<DeviceId>),
}

/// Which server certificates a client accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTrust {
    /// Exactly these certificates (`--relay-cert`): the server's end-entity certificate must be
    /// byte-for-byte one of them. The server name is not checked and neither is the validity
    /// period; like an SSH host key, a pin is replaced, not expired.
    PinnedCert(Vec<CertificateDer<'static>>),
    /// The operating system's trust roots, with the usual name and validity checks.
    SystemRoots,
    /// A peer device: a valid self-signed certificate whose public key has this fingerprint.
    PinnedDevice(DeviceId),
}

/// Why a QUIC endpoint configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// rustls refused the certificate, the key or a setting.
    #[error("invalid TLS configuration")]
    Tls {
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The system trust store holds no usable certificate.
    #[error("no usable trust roots in the system certificate store")]
    NoSystemRoots {
        /// Why the store (or parts of it) could not be read, if anything failed.
        errors: Vec<rustls_native_certs::Error>,
    },
    /// The server certificate verifier could not be built.
    #[error("cannot build the server certificate verifier")]
    Verifier {
        /// rustls's error.
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    /// The TLS configuration lacks the cipher suite QUIC's initial packets need.
    #[error("the TLS configuration cannot be used for QUIC")]
    Quic {
        /// quinn's error.
        #[source]
        source: quinn::crypto::rustls::NoInitialCipherSuite,
    },
}

impl From<rustls::Error> for ConfigError {
    fn from(source: rustls::Error) -> Self {
        ConfigError::Tls { source }
    }
}

impl From<quinn::crypto::rustls::NoInitialCipherSuite> for ConfigError {
    fn from(source: quinn::crypto::rustls::NoInitialCipherSuite) -> Self {
        ConfigError::Quic { source }
    }
}

/// The configuration of a QUIC server (the relay, or a peer-to-peer listener with its
/// [`DeviceKey::cert_chain`] and [`DeviceKey::private_key`]): TLS 1.3 only, ALPN [`ALPN`] only,
/// client certificates required and checked per `auth`, [`transport_config`] settings.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    auth: ClientAuth,
) -> Result<quinn::ServerConfig, ConfigError> {
    let provider = provider();
    let verifier = Arc::new(DeviceClientVerifier {
        allowed: match auth {
            ClientAuth::RequireDeviceCert => None,
            ClientAuth::Allow(ids) => Some(ids),
        },
        algs: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// The configuration of a QUIC client presenting `device`'s certificate and trusting servers
/// per `trust`: TLS 1.3 only, ALPN [`ALPN`] only, [`transport_config`] settings.
///
/// [`ServerTrust::SystemRoots`] reads the system certificate store on every call.
pub fn client_config(
    device: &DeviceKey,
    trust: ServerTrust,
) -> Result<quinn::ClientConfig, ConfigError> {
    let tls = client_tls(device, trust)?;
    quic_client_config(tls)
}

/// The rustls half of [`client_config`] (tests alter its ALPN).
pub(super) fn client_tls(
    device: &DeviceKey,
    trust: ServerTrust,
) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        ServerTrust::PinnedCert(certs) => Arc::new(PinnedCertVerifier { certs, algs }),
        ServerTrust::PinnedDevice(id) => Arc::new(DeviceServerVerifier { id, algs }),
        ServerTrust::SystemRoots => {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(ConfigError::NoSystemRoots {
                    errors: loaded.errors,
                });
            }
            if !loaded.errors.is_empty() {
                tracing::warn!(errors = ?loaded.errors, "parts of the system trust store are unreadable");
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|source| ConfigError::Verifier { source })?
        }
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(device.cert_chain(), device.private_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tls)
}

pub(super) fn quic_client_config(
    tls: rustls::ClientConfig,
) -> Result<quinn::ClientConfig, ConfigError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// The device id of the other end of `connection`, from the certificate it presented: always
/// `Some` on a server built by [`server_config`] and on a client that pinned a device.
pub fn peer_device_id(connection: &quinn::Connection) -> Option<DeviceId> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    cert_device_id(certs.first()?).ok()
}

/// Checks a device certificate: self-signed, within its validity period, usable for `usage`.
/// Returns the device id it proves once the handshake signature is verified.
fn verify_device_cert(
    cert: &CertificateDer<'_>,
    now: UnixTime,
    usage: webpki::KeyUsage,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<DeviceId, rustls::Error> {
    let anchor = webpki::anchor_from_trusted_cert(cert).map_err(pki_error)?;
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(pki_error)?;
    parsed
        .verify_for_usage(algs.all, &[anchor], &[], now, usage, None, None)
        .map_err(pki_error)?;
    cert_device_id(cert).map_err(pki_error)
}

fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let error = match error {
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        // A certificate that is not self-signed has no issuer a device check knows.
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(error)
}

/// A device that is not the one expected: rustls answers with an `access_denied` alert.
fn not_allowed() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// The handshake-signature half of every verifier here: rustls's own checks with ring's
/// algorithms (`self.algs`), identical for client and server verifiers.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

#[derive(Debug)]
struct DeviceClientVerifier {
    allowed: Option<Vec<DeviceId>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeviceClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = verify_device_cert(end_entity, now, webpki::KeyUsage::client_auth(), &self.algs)
            .inspect_err(|err| tracing::debug!(%err, "refused a client certificate"))?;
        match &self.allowed {
            Some(allowed) if !allowed.contains(&id) => {
                tracing::debug!(device = %id, "refused a device that is not allowed");
                Err(not_allowed())
            }
            _ => Ok(ClientCertVerified::assertion()),
        }
    }

    handshake_signatures!();
}

#[derive(Debug)]
struct DeviceServerVerifier {
    id: DeviceId,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for DeviceServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = verify_device_cert(end_entity, now, webpki::KeyUsage::server_auth(), &self.algs)?;
        if id != self.id {
            tracing::debug!(expected = %self.id, presented = %id, "the peer's device key is not the pinned one");
            return Err(not_allowed());
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

#[derive(Debug)]
struct PinnedCertVerifier {
    certs: Vec<CertificateDer<'static>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::debug!("the server's certificate is not the pinned one");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }

    handshake_signatures!();
}

#[cfg(test)]
mod tests;

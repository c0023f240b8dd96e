//! TLS to Postgres: the `sslmode` of the `--postgres` URL, carried out with rustls (ring).
//!
//! | `sslmode`          | encrypted                | server certificate checked            |
//! |--------------------|--------------------------|---------------------------------------|
//! | `disable`          | never                    | -                                     |
//! | `prefer` (default) | when the server offers   | no                                    |
//! | `require`          | always                   | no (libpq: encryption only)           |
//! | `verify-ca`        | always                   | chain to a trusted root               |
//! | `verify-full`      | always                   | chain, and the host name in the URL   |
//!
//! Trusted roots are the PEM certificates of `--postgres-ca` when given, else the system's
//! (rustls-native-certs). As with libpq's `sslrootcert`, `require` with an explicit
//! `--postgres-ca` checks the chain as `verify-ca` does: an operator who names a CA means it.
//! An unverified mode still checks that the server holds the key of the certificate it sent.
//!
//! tokio-postgres parses `disable`, `prefer` and `require` but refuses the verify modes, so
//! `sslmode` is taken out of the URL here (either URL form), the rest is parsed by
//! tokio-postgres, and the verify modes become its `require` plus a verifying rustls
//! configuration. The TLS stream is `tokio-postgres-rustls`'s, which also gives SCRAM
//! authentication its channel binding (`tls-server-end-point`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::CheckpointError;

/// PEM files larger than this are refused unread.
const MAX_CA_FILE_LEN: u64 = 4 * 1024 * 1024;

/// The `sslmode`s understood (libpq's, less `allow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, CheckpointError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(CheckpointError::BadSslMode {
                    value: value.chars().take(32).collect(),
                })
            }
        })
    }
}

/// Where and how to connect: the parsed URL and the TLS connector its `sslmode` asks for.
#[derive(Clone)]
pub(crate) struct PgTarget {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
    pub(crate) mode: SslMode,
}

impl PgTarget {
    /// Parses `url` (URL or key=value form) and builds its TLS configuration, reading `ca`
    /// (PEM) or the system's roots when the mode verifies certificates.
    pub(crate) fn new(url: &str, ca: Option<&Path>) -> Result<PgTarget, CheckpointError> {
        let (rest, mode) = take_sslmode(url);
        let mut mode = match mode {
            Some(value) => SslMode::parse(&value)?,
            None => SslMode::Prefer,
        };
        if mode == SslMode::Require && ca.is_some() {
            mode = SslMode::VerifyCa;
        }
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|source| CheckpointError::BadUrl { source })?;
        config.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        if ca.is_some() && matches!(mode, SslMode::Disable | SslMode::Prefer) {
            tracing::warn!(
                ?mode,
                "--postgres-ca is used only with sslmode=require, verify-ca or verify-full"
            );
        }
        let tls = MakeRustlsConnect::new(client_config(mode, ca)?);
        Ok(PgTarget { config, tls, mode })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    mode: SslMode,
    ca: Option<&Path>,
) -> Result<rustls::ClientConfig, CheckpointError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(EncryptOnly {
            provider: provider.clone(),
        }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = match ca {
                Some(path) => read_roots(path)?,
                None => system_roots()?,
            };
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| CheckpointError::Tls {
                        reason: e.to_string(),
                    })?;
            if mode == SslMode::VerifyCa {
                Arc::new(ChainOnly { inner: webpki })
            } else {
                webpki
            }
        }
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckpointError::Tls {
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What Postgres 17 expects of a client that speaks ALPN; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// The certificates of a PEM file, as trust roots.
fn read_roots(path: &Path) -> Result<RootCertStore, CheckpointError> {
    let bad = |reason: String| CheckpointError::BadCa {
        path: path.to_owned(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > MAX_CA_FILE_LEN {
        return Err(bad("larger than 4 MiB".into()));
    }
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, CheckpointError> {
    crate::tls::system_roots().map_err(|errors| CheckpointError::Tls {
        reason: format!(
            "no system trust roots to verify Postgres with (pass --postgres-ca): {errors}"
        ),
    })
}

/// `verify-ca`: webpki's verification less the host name check.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // webpki checks the name only once the chain is valid, so this error means the
            // chain passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer` and `require`: any certificate, as libpq accepts; the handshake signature is
/// still checked, so the server holds the key of the certificate it sent.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `url` without its `sslmode` parameter(s), and the last one's value. Understands the URL
/// form (`postgres://...?sslmode=...`) and the key=value form (`host=... sslmode=...`, values
/// optionally single-quoted); anything it cannot read is returned unchanged, for
/// tokio-postgres to report.
pub(crate) fn take_sslmode(url: &str) -> (String, Option<String>) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), None);
        };
        let mut mode = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.split_once('=') {
                Some(("sslmode", value)) => {
                    mode = Some(
                        percent_encoding::percent_decode_str(value)
                            .decode_utf8_lossy()
                            .into_owned(),
                    );
                    false
                }
                _ => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, mode);
    }
    let Some(pairs) = key_value_pairs(url) else {
        return (url.to_owned(), None);
    };
    let mut rest = String::with_capacity(url.len());
    let mut mode = None;
    let mut from = 0;
    for pair in pairs.into_iter().filter(|p| p.key == "sslmode") {
        rest.push_str(&url[from..pair.start]);
        from = pair.end;
        mode = Some(pair.value);
    }
    rest.push_str(&url[from..]);
    (rest, mode)
}

struct Pair {
    key: String,
    value: String,
    /// The byte range of `key = value` in the input.
    start: usize,
    end: usize,
}

/// The `key = value` pairs of a libpq key=value connection string, or `None` if it is not one.
fn key_value_pairs(s: &str) -> Option<Vec<Pair>> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut pairs = Vec::new();
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i == bytes.len() {
            return Some(pairs);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s.get(start..i)?.to_owned();
        i = skip_ws(i);
        if bytes.get(i) != Some(&b'=') || key.is_empty() {
            return None;
        }
        i = skip_ws(i + 1);
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i)? {
                    b'\'' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        value.push(*bytes.get(i + 1)?);
                        i += 2;
                    }
                    b => {
                        value.push(*b);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&b) = bytes.get(i) {
                if b.is_ascii_whitespace() {
                    break;
                }
                if b == b'\\' {
                    value.push(*bytes.get(i + 1)?);
                    i += 2;
                } else {
                    value.push(b);
                    i += 1;
                }
            }
        }
        pairs.push(Pair {
            key,
            value: String::from_utf8(value).ok()?,
            start,
            end: i,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_a_url() {
        let (rest, mode) =
            take_sslmode("postgres://u@db:5432/app?connect_timeout=5&sslmode=verify-full&x=1");
        assert_eq!(rest, "postgres://u@db:5432/app?connect_timeout=5&x=1");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        let (rest, mode) = take_sslmode("postgresql://db/app?sslmode=verify%2Dca");
        assert_eq!(rest, "postgresql://db/app");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        let (rest, mode) = take_sslmode("postgres://db/app");
        assert_eq!((rest.as_str(), mode), ("postgres://db/app", None));
    }

    #[test]
    fn sslmode_is_taken_out_of_a_key_value_string() {
        let (rest, mode) = take_sslmode("host=db sslmode = 'verify-full' user='a b'");
        assert_eq!(rest, "host=db  user='a b'");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert!(rest.parse::<tokio_postgres::Config>().is_ok());
        let (rest, mode) = take_sslmode("sslmode=require host=db");
        assert_eq!(
            (rest.as_str(), mode.as_deref()),
            (" host=db", Some("require"))
        );
        // Not readable: left for tokio-postgres to refuse.
        let (rest, mode) = take_sslmode("host=db sslmode='verify-full");
        assert_eq!(
            (rest.as_str(), mode),
            ("host=db sslmode='verify-full", None)
        );
    }

    #[test]
    fn every_mode_maps_onto_what_tokio_postgres_knows() {
        let mode = |url: &str| {
            let target = PgTarget::new(url, None).unwrap();
            (target.mode, target.config.get_ssl_mode())
        };
        assert_eq!(
            mode("postgres://db/app"),
            (SslMode::Prefer, PgSslMode::Prefer)
        );
        assert_eq!(
            mode("postgres://db/app?sslmode=disable"),
            (SslMode::Disable, PgSslMode::Disable)
        );
        assert_eq!(
            mode("host=db sslmode=require"),
            (SslMode::Require, PgSslMode::Require)
        );
        assert!(matches!(
            PgTarget::new("postgres://db/app?sslmode=allow", None),
            Err(CheckpointError::BadSslMode { .. })
        ));
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let url = "postgres://db/app?sslmode=verify-full";
        let err = PgTarget::new(url, Some(&missing)).err().unwrap();
        assert!(
            matches!(&err, CheckpointError::BadCa { path, .. } if *path == missing),
            "{err:?}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = PgTarget::new(url, Some(&empty)).err().unwrap();
        assert!(err.to_string().contains("empty.pem"), "{err}");
    }
}

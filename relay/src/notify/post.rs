//! One POST to the push hook's receiver over HTTP/1.1 (hyper's client connection), on a
//! connection kept alive between events and opened again when the receiver closed it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// The whole exchange (connecting included) gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a receiver's answer read (and thrown away).
const MAX_ANSWER: usize = 64 * 1024;

/// `--notify-url` cannot be used (each variant holds the URL as given).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum NotifyUrlError {
    /// Not a URL, or one with parts the hook does not support.
    #[error("--notify-url {url:?} is not a URL: {reason}")]
    Invalid { url: String, reason: String },
    /// Neither `http` nor `https`.
    #[error("--notify-url {url:?}: only http:// and https:// are supported")]
    Scheme { url: String },
    /// `https`, and the system's trust store is empty or unreadable.
    #[error("--notify-url {url:?}: no system trust roots to verify https with")]
    NoRoots { url: String },
}

/// Where events go.
pub(super) struct Target {
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// Path and query.
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, NotifyUrlError> {
        let invalid = |reason: String| NotifyUrlError::Invalid {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(NotifyUrlError::Scheme {
                    url: url.to_string(),
                })
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("no host".into()))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported".into()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let tls = if https {
            let roots = crate::tls::system_roots().map_err(|_| NotifyUrlError::NoRoots {
                url: url.to_string(),
            })?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(host.clone()).map_err(|e| invalid(e.to_string()))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Target {
            host,
            port,
            authority: authority.to_string(),
            path,
            tls,
        })
    }
}

/// A kept-alive connection to the receiver: the request side, and the task driving it (ended
/// when this is dropped).
pub(super) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a POST did not deliver.
#[derive(Debug, thiserror::Error)]
pub(super) enum PostError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the receiver answered {0}")]
    Status(u16),
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
}

impl PostError {
    /// Whether trying again may succeed: the receiver is down or overloaded, not refusing.
    pub(super) fn retryable(&self) -> bool {
        match self {
            PostError::Status(s) => *s >= 500 || *s == 408 || *s == 429,
            _ => true,
        }
    }
}

/// POSTs `body` signed `sig` on `conn` (opened first when there is none or it closed). On any
/// failure the connection is dropped.
pub(super) async fn post(
    conn: &mut Option<Conn>,
    t: &Target,
    body: Bytes,
    sig: &str,
) -> Result<(), PostError> {
    let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange(conn, t, body, sig))
        .await
        .unwrap_or(Err(PostError::Timeout));
    if result.is_err() {
        *conn = None;
    }
    result
}

async fn exchange(
    conn: &mut Option<Conn>,
    t: &Target,
    body: Bytes,
    sig: &str,
) -> Result<(), PostError> {
    if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
        *conn = None;
        *conn = Some(connect(t).await?);
    }
    let Some(c) = conn.as_mut() else {
        unreachable!("set just above")
    };
    c.sender.ready().await?;
    let request = Request::post(t.path.as_str())
        .header(HOST, t.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("weft-relay/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-weft-signature", sig)
        .body(Full::new(body));
    // Invariant: the path came from a parsed URI and the headers are ASCII.
    let request = request.expect("a well-formed request");
    let answer = c.sender.send_request(request).await?;
    let status = answer.status();
    // Read to the end, so the connection can carry the next event.
    if Limited::new(answer.into_body(), MAX_ANSWER)
        .collect()
        .await
        .is_err()
    {
        *conn = None;
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(PostError::Status(status.as_u16()))
    }
}

async fn connect(t: &Target) -> Result<Conn, PostError> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(PostError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let (sender, task) = match &t.tls {
        None => {
            let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
            (
                sender,
                tokio::spawn(async move {
                    let _ = connection.await;
                }),
            )
        }
        Some((connector, name)) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(PostError::Connect)?;
            let (sender, connection) = http1::handshake(TokioIo::new(tls)).await?;
            (
                sender,
                tokio::spawn(async move {
                    let _ = connection.await;
                }),
            )
        }
    };
    Ok(Conn { sender, task })
}

//! What the relay serves to web apps on its `--http` address, beside `/healthz`, `/metrics` and
//! `/ws-ticket`:
//!
//! - `GET /kinds` (with a WebSocket endpoint): the kinds the relay enforces as JSON (`kinds.rs`), for a bearer
//!   token the relay accepts (`Authorization: Bearer JWT`); 401 otherwise.
//! - With `--web`, the demo chat (`relay/web/`, built from `peer/web/demo/`): `/` (the page),
//!   `/app.js`, `/style.css`, `/sw.js` (keeps the page's files for offline reloads),
//!   `/automerge.wasm`, embedded in the binary, and `/config.json`,
//!   which tells the page the WebSocket port. The page takes its token from the URL fragment
//!   (`#token=JWT`), which browsers never send, and trades it for a ticket at `/ws-ticket`.

mod kinds;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use weft_schema::rules::Kinds;

use crate::Verifier;

/// The embedded demo: path, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "/sw.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/sw.js"),
    ),
    (
        "/automerge.wasm",
        "application/wasm",
        include_bytes!("../../web/automerge.wasm"),
    ),
];

/// The page may load only its own scripts and styles, run WebAssembly, and open WebSockets.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'self'; script-src 'self' \
     'wasm-unsafe-eval'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     frame-ancestors 'none'\r\nReferrer-Policy: no-referrer\r\nX-Content-Type-Options: nosniff\r\n\
     Cache-Control: no-cache\r\n";

/// The web routes' configuration.
#[derive(Clone)]
pub struct Web {
    /// The kinds the relay enforces; `/kinds` is served when a verifier is set too.
    pub kinds: Arc<Kinds>,
    /// Checks the bearer of `/kinds` (the relay's verifier; `None` without `--ws`).
    pub verifier: Option<Verifier>,
    /// Serve the demo (`--web`), connecting to this WebSocket address.
    pub demo_ws: Option<SocketAddr>,
}

/// A response: status line, content type, extra headers (each ending in CRLF), body.
pub(crate) struct Response {
    status: &'static str,
    ctype: &'static str,
    headers: &'static str,
    body: Cow<'static, [u8]>,
}

impl Response {
    fn json(status: &'static str, body: String) -> Response {
        Response {
            status,
            ctype: "application/json",
            headers: "Cache-Control: no-store\r\n",
            body: Cow::Owned(body.into_bytes()),
        }
    }

    /// Writes the response and closes the connection.
    pub(crate) async fn send(self, sock: &mut tokio::net::TcpStream) -> std::io::Result<()> {
        let head = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.ctype,
            self.body.len(),
            self.headers
        );
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(&self.body).await?;
        sock.shutdown().await
    }
}

/// The answer to a `GET` of one of the web routes, or `None` for another route.
pub(crate) fn answer(web: &Web, method: &[u8], path: &[u8], head: &[u8]) -> Option<Response> {
    if method != b"GET" {
        return None;
    }
    // The query string plays no part (and a fragment never reaches the server).
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    if path == b"/kinds" {
        let verifier = web.verifier.as_ref()?;
        let allowed =
            bearer(head).is_some_and(|t| verifier.verify(t, weft_core::clock::unix_secs()).is_ok());
        return Some(if allowed {
            Response::json("200 OK", kinds::kinds_json(&web.kinds).to_string())
        } else {
            Response::json(
                "401 Unauthorized",
                serde_json::json!({"error": "the token was refused"}).to_string(),
            )
        });
    }
    let ws = web.demo_ws?;
    if path == b"/config.json" {
        let body = serde_json::json!({"ws_port": ws.port()}).to_string();
        return Some(Response::json("200 OK", body));
    }
    let (_, ctype, bytes) = ASSETS
        .iter()
        .find(|(p, _, _)| p.as_bytes() == path || (*p == "/" && path == b"/index.html"))?;
    Some(Response {
        status: "200 OK",
        ctype,
        headers: PAGE_HEADERS,
        body: Cow::Borrowed(bytes),
    })
}

/// The bearer token of a request head's `Authorization` header.
fn bearer(head: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(demo: bool) -> Web {
        let secret = crate::JwtSecret::new(b"an example secret of at least 32 bytes".to_vec())
            .expect("a long enough secret");
        Web {
            kinds: Arc::new(Kinds::builtin()),
            verifier: Some(Verifier::new(&secret)),
            demo_ws: demo.then(|| "127.0.0.1:8080".parse().expect("an address")),
        }
    }

    #[test]
    fn kinds_need_a_good_bearer() {
        let w = web(false);
        let r = answer(&w, b"GET", b"/kinds", b"GET /kinds HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.status, "401 Unauthorized");
        let head = b"GET /kinds HTTP/1.1\r\nAuthorization: Bearer not.a.token\r\n\r\n";
        assert_eq!(
            answer(&w, b"GET", b"/kinds", head).unwrap().status,
            "401 Unauthorized"
        );
        assert!(answer(&w, b"POST", b"/kinds", head).is_none());
    }

    #[test]
    fn the_demo_is_served_only_with_web() {
        assert!(answer(&web(false), b"GET", b"/", b"").is_none());
        let w = web(true);
        let page = answer(&w, b"GET", b"/?x=1", b"").unwrap();
        assert_eq!(page.status, "200 OK");
        assert!(String::from_utf8_lossy(&page.body).contains("app.js"));
        let config = answer(&w, b"GET", b"/config.json", b"").unwrap();
        assert_eq!(&*config.body, br#"{"ws_port":8080}"#);
        let wasm = answer(&w, b"GET", b"/automerge.wasm", b"").unwrap();
        assert_eq!(&wasm.body[..4], b"\0asm");
        assert!(answer(&w, b"GET", b"/nope", b"").is_none());
    }
}

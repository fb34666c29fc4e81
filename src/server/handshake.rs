//! The server side of the WebSocket opening handshake: the checks gorilla's
//! `Upgrader` makes (upgrade headers, version, origin, subprotocol) on a
//! request that `http` has already parsed, and the 101 response.
//!
//! The accept key and header validation are tungstenite's
//! (`handshake::server::create_response`); this module adds the policy.
//! It never touches a socket except to write the finished response, in
//! one write.

use std::io::Write;

use tungstenite::handshake::server::create_response;
use tungstenite::http::{HeaderValue, Request, Response, StatusCode, Uri, header};

use crate::http::{Rejection, has_token, header_tokens};

/// The upgrade policy, taken from [`Config`](crate::Config).
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    pub allowed_origins: Vec<String>,
    pub subprotocols: Vec<String>,
}

/// Checks an upgrade request and builds the 101 response, or says which
/// status to answer with instead.
pub(crate) fn accept(request: &Request<()>, policy: &Policy) -> Result<Response<()>, Rejection> {
    if !is_upgrade(request) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "this path needs a WebSocket upgrade",
        ));
    }
    if request.method() != tungstenite::http::Method::GET {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade must use GET",
        ));
    }
    let version = request.headers().get("sec-websocket-version");
    if version.map(|v| v.as_bytes()) != Some(b"13") {
        return Err(Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported",
        )
        .with_header("Sec-WebSocket-Version", "13"));
    }
    check_origin(request, &policy.allowed_origins)?;
    let mut response = create_response(request).map_err(|e| {
        Rejection::new(StatusCode::BAD_REQUEST, format!("bad upgrade request: {e}"))
    })?;
    if let Some(chosen) = choose_subprotocol(request, &policy.subprotocols) {
        // Names came from the operator and matched a client token, so they are valid header text.
        if let Ok(value) = HeaderValue::from_str(chosen) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    Ok(response)
}

/// gorilla's default rule: a browser's `Origin` must name the host it is
/// talking to, unless the operator allowed that origin (or `*`). Requests
/// without `Origin` come from non-browser clients and pass.
pub(crate) fn check_origin(request: &Request<()>, allowed: &[String]) -> Result<(), Rejection> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let forbidden = |why: &str| Err(Rejection::new(StatusCode::FORBIDDEN, why.to_string()));
    let Ok(origin) = origin.to_str() else {
        return forbidden("Origin header is not text");
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    {
        return Ok(());
    }
    let origin_host = origin
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()));
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => forbidden("cross-origin request not allowed (see --allowed-origin)"),
    }
}

/// The first of the server's subprotocols that the client offers.
fn choose_subprotocol<'a>(request: &Request<()>, ours: &'a [String]) -> Option<&'a str> {
    let offered = header_tokens(request, "sec-websocket-protocol");
    ours.iter()
        .map(String::as_str)
        .find(|p| offered.contains(p))
}

/// True when the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(request: &Request<()>) -> bool {
    has_token(request.headers(), "upgrade", "websocket")
}

/// Writes the 101 response with one system call: written straight to the
/// socket, tungstenite's formatter makes one write per header line (19
/// segments with `TCP_NODELAY`, and a client's first read may see a piece
/// of the status line).
pub(crate) fn write_response(
    mut out: impl Write,
    response: &Response<()>,
) -> tungstenite::Result<()> {
    let mut head = Vec::with_capacity(256);
    tungstenite::handshake::server::write_response(&mut head, response)?;
    out.write_all(&head)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .uri("/ws")
            .header("Host", "chat.example:8080")
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        for (n, v) in extra {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn accepts_and_derives_key() {
        let r = accept(&request(&[]), &Policy::default()).unwrap();
        assert_eq!(r.status(), 101);
        assert_eq!(
            r.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn origin_rules() {
        let p = Policy::default();
        assert!(accept(&request(&[("Origin", "http://chat.example:8080")]), &p).is_ok());
        assert_eq!(
            accept(&request(&[("Origin", "http://evil.example")]), &p)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            accept(&request(&[("Origin", "null")]), &p)
                .unwrap_err()
                .status,
            403
        );
        let allow = Policy {
            allowed_origins: vec!["http://evil.example".into()],
            ..Policy::default()
        };
        assert!(accept(&request(&[("Origin", "http://evil.example")]), &allow).is_ok());
        let any = Policy {
            allowed_origins: vec!["*".into()],
            ..Policy::default()
        };
        assert!(accept(&request(&[("Origin", "http://x.test")]), &any).is_ok());
    }

    #[test]
    fn subprotocol_is_servers_first_choice() {
        let p = Policy {
            subprotocols: vec!["b".into(), "a".into()],
            ..Policy::default()
        };
        let r = accept(&request(&[("Sec-WebSocket-Protocol", "a, b")]), &p).unwrap();
        assert_eq!(r.headers()["sec-websocket-protocol"], "b");
        let r = accept(&request(&[("Sec-WebSocket-Protocol", "c")]), &p).unwrap();
        assert!(r.headers().get("sec-websocket-protocol").is_none());
    }
}

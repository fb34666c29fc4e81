//! Every route and status of the HTTP front, over loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn page_is_served_with_type_and_length() {
    let server = start(config());
    let r = get(server.local_addr(), "/", "");
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("Content-Type: text/html; charset=utf-8"), "{r}");
    let page = include_str!("../static/index.html");
    assert!(
        r.contains(&format!("Content-Length: {}\r\n", page.len())),
        "{r}"
    );
    assert!(r.ends_with(page));
    // The room is in the query or fragment: still the page.
    assert_eq!(status(&get(server.local_addr(), "/?room=ops", "")), 200);
}

#[test]
fn head_has_headers_but_no_body() {
    let server = start(config());
    let addr = server.local_addr();
    let r = http(
        addr,
        format!("HEAD / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status(&r), 200);
    let len = include_str!("../static/index.html").len();
    assert!(r.contains(&format!("Content-Length: {len}\r\n")));
    assert!(r.ends_with("\r\n\r\n"), "HEAD must not carry a body: {r:?}");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = start(config());
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let last = format!("GET /nope HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(format!("{req}{req}{last}").as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert_eq!(out.matches("HTTP/1.1 404 Not Found").count(), 1, "{out}");
}

#[test]
fn unknown_path_is_404_and_other_methods_405() {
    let server = start(config());
    let addr = server.local_addr();
    assert_eq!(status(&get(addr, "/nope.html", "")), 404);
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = http(
            addr,
            format!("{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        assert_eq!(status(&r), 405, "{method}: {r}");
        assert!(r.contains("Allow: GET, HEAD\r\n"), "{r}");
    }
}

#[test]
fn websocket_paths_need_an_upgrade() {
    let server = start(config());
    let addr = server.local_addr();
    for path in ["/ws", "/ws/room1", "/echo"] {
        assert_eq!(status(&get(addr, path, "")), 400, "{path}");
    }
}

#[test]
fn room_names_are_checked() {
    let server = start(config());
    let addr = server.local_addr();
    let long = format!("/ws/{}", "a".repeat(65));
    for path in [
        "/ws/",
        "/ws/a%20b",
        "/ws/a/b",
        "/ws/caf%C3%A9",
        long.as_str(),
    ] {
        let r = http(addr, upgrade_head(addr, path).as_bytes());
        assert_eq!(status(&r), 400, "{path}: {r}");
    }
    let ok = format!("/ws/{}", &"Az09_.-".repeat(10)[..64]);
    let mut client = ws(addr, &ok);
    close(&mut client);
}

#[test]
fn unsupported_version_is_426() {
    let server = start(config());
    let addr = server.local_addr();
    let head =
        upgrade_head(addr, "/ws").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let r = http(addr, head.as_bytes());
    assert_eq!(status(&r), 426, "{r}");
    assert!(r.contains("Sec-WebSocket-Version: 13\r\n"), "{r}");
}

#[test]
fn bad_key_is_400() {
    let server = start(config());
    let addr = server.local_addr();
    let head = upgrade_head(addr, "/echo");
    let start = head.find("Sec-WebSocket-Key: ").unwrap() + 19;
    let bad = format!("{}short{}", &head[..start], &head[start + 24..]);
    assert_eq!(status(&http(addr, bad.as_bytes())), 400);
}

#[test]
fn cross_origin_is_403_unless_allowed() {
    let server = start(config());
    let addr = server.local_addr();
    let err = try_ws(addr, "/ws", &[("Origin", "http://evil.example")]).unwrap_err();
    assert!(
        matches!(err, tungstenite::Error::Http(ref r) if r.status() == 403),
        "{err}"
    );
    // Same origin and no origin both pass.
    let own = format!("http://{addr}");
    close(&mut try_ws(addr, "/ws", &[("Origin", own.as_str())]).unwrap());
    close(&mut ws(addr, "/ws"));

    let allowing = start(config().allowed_origins(["http://evil.example"]));
    close(
        &mut try_ws(
            allowing.local_addr(),
            "/ws",
            &[("Origin", "http://evil.example")],
        )
        .unwrap(),
    );
    let err = try_ws(
        allowing.local_addr(),
        "/ws",
        &[("Origin", "http://other.example")],
    )
    .unwrap_err();
    assert!(matches!(err, tungstenite::Error::Http(ref r) if r.status() == 403));

    let any = start(config().allowed_origins(["*"]));
    close(
        &mut try_ws(
            any.local_addr(),
            "/ws",
            &[("Origin", "http://other.example")],
        )
        .unwrap(),
    );
}

#[test]
fn subprotocol_is_negotiated() {
    let server = start(config().subprotocols(["chat.v2", "chat.v1"]));
    let addr = server.local_addr();
    let mut head = upgrade_head(addr, "/ws");
    head.insert_str(
        head.len() - 2,
        "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n",
    );
    let r = handshake(addr, &head);
    assert_eq!(status(&r), 101);
    assert!(r.contains("sec-websocket-protocol: chat.v2\r\n"), "{r}");
    let mut other = upgrade_head(addr, "/ws");
    other.insert_str(other.len() - 2, "Sec-WebSocket-Protocol: mqtt\r\n");
    let r = handshake(addr, &other);
    assert_eq!(status(&r), 101);
    assert!(
        !r.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{r}"
    );
    // Never an extension: there is no permessage-deflate.
    let mut deflate = upgrade_head(addr, "/echo");
    deflate.insert_str(
        deflate.len() - 2,
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    );
    assert!(
        !handshake(addr, &deflate)
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions")
    );
}

#[test]
fn oversized_head_is_431() {
    let server = start(config());
    let addr = server.local_addr();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(status(&http(addr, big.as_bytes())), 431);
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        status(&http(
            addr,
            format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()
        )),
        431
    );
}

#[test]
fn garbage_is_400() {
    let server = start(config());
    assert_eq!(
        status(&http(
            server.local_addr(),
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"
        )),
        400
    );
    assert_eq!(
        status(&http(server.local_addr(), b"GET nothing HTTP/1.1\r\n\r\n")),
        400
    );
}

#[test]
fn head_deadline_closes_silent_and_partial_connections() {
    let server = start(config().head_timeout(Duration::from_millis(300)));
    let addr = server.local_addr();
    let began = Instant::now();
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut partial = TcpStream::connect(addr).unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    for s in [&silent, &partial] {
        s.set_read_timeout(Some(STEP)).unwrap();
    }
    // Meanwhile a normal client is served at once.
    assert_eq!(status(&get(addr, "/", "")), 200);
    let mut out = Vec::new();
    assert_eq!(
        silent.read_to_end(&mut out).unwrap(),
        0,
        "a silent connection is just closed"
    );
    let mut out = String::new();
    partial.read_to_string(&mut out).unwrap();
    assert_eq!(status(&out), 408, "{out}");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn static_dir_serves_disk_files_and_nothing_outside() {
    let dir = std::env::temp_dir().join(format!("wshub-static-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("index.html"), "<p>disk</p>").unwrap();
    std::fs::write(dir.join("sub/app.js"), "let x = 1;").unwrap();
    std::fs::write(
        dir.join("..")
            .join(format!("wshub-secret-{}", std::process::id())),
        "secret",
    )
    .unwrap();
    let server = start(config().static_dir(dir.clone()));
    let addr = server.local_addr();
    let r = get(addr, "/", "");
    assert!(r.ends_with("<p>disk</p>"), "{r}");
    let r = get(addr, "/sub/app.js", "");
    assert!(
        r.contains("Content-Type: text/javascript; charset=utf-8")
            || r.contains("Content-Type: application/javascript; charset=utf-8"),
        "{r}"
    );
    for path in [
        format!("/../wshub-secret-{}", std::process::id()),
        format!("/%2e%2e/wshub-secret-{}", std::process::id()),
        format!("/sub/..%2f..%2fwshub-secret-{}", std::process::id()),
    ] {
        let r = http(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert!(matches!(status(&r), 400 | 404), "{path}: {r}");
        assert!(!r.contains("secret"), "{path} escaped the root: {r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn max_clients_gives_503_with_retry_after() {
    let server = start(config().max_clients(2));
    let addr = server.local_addr();
    let mut a = ws(addr, "/ws");
    let mut b = ws(addr, "/echo");
    let r = http(addr, upgrade_head(addr, "/ws").as_bytes());
    assert_eq!(status(&r), 503, "{r}");
    assert!(r.contains("Retry-After: "), "{r}");
    // Plain pages are not WebSocket clients and are still served.
    assert_eq!(status(&get(addr, "/", "")), 200);
    close(&mut a);
    // The slot frees once the connection's threads are done.
    eventually("a free slot", || server.handle().client_count() < 2);
    let mut c = ws(addr, "/ws");
    close(&mut b);
    close(&mut c);
}

#[test]
fn page_assets_and_limits_are_served() {
    let server = start(config().max_message_bytes(12345));
    let addr = server.local_addr();
    for (path, kind) in [
        ("/chat.js", "javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/echo.html", "text/html; charset=utf-8"),
    ] {
        let r = get(addr, path, "");
        assert_eq!(status(&r), 200, "{path}");
        assert!(r.contains(kind), "{path}: {r}");
    }
    let r = get(addr, "/limits.json", "");
    assert!(r.ends_with("{\"maxMessageBytes\":12345}"), "{r}");
}

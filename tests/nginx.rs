//! The deployment of deploy/nginx.conf, for real: Debian's `nginx` on
//! loopback (its own prefix directory, free ports, a certificate made by
//! `openssl` for this run) terminating TLS in front of two `wshub`
//! instances that share rooms through a `redis-server` of the test's own.
//! Over `wss://` and `https://` (rustls, trusting only this run's CA):
//! chat crosses the two instances, echo works, the page loads, the origin
//! check still refuses a foreign origin, and `/metrics` is refused to a
//! client that is not on 127.0.0.1. Without nginx, openssl or redis-server
//! on PATH the test skips and `make test` says so, except under CI, where
//! that fails it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::redis::Redis;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tungstenite::Message;
use tungstenite::stream::MaybeTlsStream;

type Wss = tungstenite::WebSocket<MaybeTlsStream<TcpStream>>;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// deploy/nginx.conf with this run's ports, name and certificate, inside
/// a minimal nginx.conf whose every path is under `dir`.
fn nginx_conf(dir: &Path, upstream: [SocketAddr; 2], http: u16, https: u16) -> PathBuf {
    let site = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
        .expect("deploy/nginx.conf");
    let mut site = site;
    let mut replace = |from: &str, to: &str| {
        assert!(site.contains(from), "deploy/nginx.conf has no {from:?}");
        site = site.replace(from, to);
    };
    replace(
        "server 127.0.0.1:8081;",
        &format!("server {};", upstream[0]),
    );
    replace(
        "server 127.0.0.1:8082;",
        &format!("server {};", upstream[1]),
    );
    replace("listen 80;", &format!("listen 127.0.0.1:{http};"));
    replace("listen [::]:80;", "");
    replace("listen 443 ssl;", &format!("listen 127.0.0.1:{https} ssl;"));
    replace("listen [::]:443 ssl;", "");
    replace("chat.example.com", "localhost");
    let d = dir.display();
    replace(
        "/etc/letsencrypt/live/localhost/fullchain.pem",
        &format!("{d}/server.pem"),
    );
    replace(
        "/etc/letsencrypt/live/localhost/privkey.pem",
        &format!("{d}/server.key"),
    );
    std::fs::write(dir.join("wshub.conf"), site).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/body;\n\
         proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
         uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
         include {d}/wshub.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// A TLS client configuration that trusts only this run's CA.
fn tls(dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(dir.join("ca.pem")).expect("ca.pem");
    roots.add(ca).expect("the CA is a valid root");
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TCP connection to 127.0.0.1:`port` from the source address `from`.
fn connect_from(from: &str, port: u16) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let socket =
        rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("a socket");
    let source: SocketAddr = format!("{from}:0").parse().unwrap();
    rustix::net::bind(&socket, &source).expect("bind the source address");
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    rustix::net::connect(&socket, &target).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream
}

/// `GET path` over HTTPS on `stream`; the whole response.
fn https_get(config: &Arc<rustls::ClientConfig>, stream: TcpStream, path: &str) -> String {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("a TLS client");
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let port = tls.sock.peer_addr().unwrap().port();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("write the request");
    let mut response = Vec::new();
    // nginx ends with close_notify; a bare EOF after the body also ends it.
    if let Err(e) = tls.read_to_end(&mut response) {
        assert!(!response.is_empty(), "no response: {e}");
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn wss(
    config: &Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
    origin: &str,
) -> Result<Wss, tungstenite::Error> {
    let stream = connect_from("127.0.0.1", port);
    stream.set_write_timeout(Some(STEP)).unwrap();
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "wss://localhost:{port}{path}"
    ))
    .unwrap();
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    let connector = tungstenite::Connector::Rustls(config.clone());
    tungstenite::client_tls_with_config(request, stream, None, Some(connector))
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("handshake interrupted"),
        })
}

fn wss_next(ws: &mut Wss) -> Message {
    loop {
        if let m @ (Message::Text(_) | Message::Binary(_)) = ws.read().expect("a message") {
            return m;
        }
    }
}

#[test]
fn chat_echo_page_origin_and_metrics_work_through_nginx_with_tls() {
    // Each asked (no short cut), so that a skip names every program missing.
    let programs = [
        have("nginx", "-v", "nginx"),
        have("openssl", "version", "openssl"),
        have("redis-server", "--version", "redis-server"),
    ];
    if programs.contains(&false) {
        return;
    }
    let Some(redis) = Redis::start() else { return };
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    common::tls::certs(&dir, "");

    let instances: Vec<Served> = (0..2)
        .map(|_| serve_process(&["--redis", &redis.url()], &[]))
        .collect();
    let upstream = [instances[0].addr, instances[1].addr];
    for served in &instances {
        eventually("the instance's bridge is up", || {
            get(served.addr, "/healthz", "").contains("\"connected\"")
        });
    }
    let (http_port, https_port) = (free_port(), free_port());
    let conf = nginx_conf(&dir, upstream, http_port, https_port);
    let nginx = Proc(
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts"),
    );
    eventually("nginx listens", || {
        TcpStream::connect(("127.0.0.1", https_port)).is_ok()
            || std::fs::read_to_string(dir.join("error.log"))
                .is_ok_and(|log| log.contains("[emerg]"))
    });
    let error_log = || std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    assert!(!error_log().contains("[emerg]"), "{}", error_log());
    let config = tls(&dir);

    // The page over https://, and http:// redirecting to it.
    let page = https_get(&config, connect_from("127.0.0.1", https_port), "/");
    assert_eq!(status(&page), 200, "{page}");
    assert!(page.contains("<title>wshub chat</title>"), "{page}");
    let plain = get(format!("127.0.0.1:{http_port}").parse().unwrap(), "/", "");
    assert_eq!(status(&plain), 301, "{plain}");
    assert!(plain.contains("Location: https://127.0.0.1/"), "{plain}");

    // Chat over wss://, across whichever instances nginx picked.
    let origin = format!("https://localhost:{https_port}");
    let mut a = wss(&config, https_port, "/ws/tls", &origin).expect("wss to /ws/tls");
    let mut b = wss(&config, https_port, "/ws/tls", &origin).expect("wss to /ws/tls");
    let local = |addr: SocketAddr| scrape(addr).get("wshub_clients{endpoint=ws}") as usize;
    eventually("both clients are in", || {
        local(upstream[0]) + local(upstream[1]) == 2
    });
    let used = upstream.iter().filter(|a| local(**a) > 0).count();
    redis.wait_subscribers("tls", used);
    a.send(Message::text("over TLS")).unwrap();
    assert_eq!(wss_next(&mut b), Message::text("over TLS"));
    b.send(Message::text("and back")).unwrap();
    assert_eq!(wss_next(&mut a), Message::text("and back"));

    // Echo over wss://.
    let mut echo = wss(&config, https_port, "/echo", &origin).expect("wss to /echo");
    echo.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(wss_next(&mut echo), Message::binary(vec![1u8, 2, 3]));

    // The origin check holds behind the proxy.
    match wss(&config, https_port, "/ws/tls", "https://evil.example") {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("a foreign origin was let in"),
    }

    // /metrics: from 127.0.0.1 yes, from another address no.
    let metrics = https_get(&config, connect_from("127.0.0.1", https_port), "/metrics");
    assert_eq!(status(&metrics), 200, "{metrics}");
    assert!(metrics.contains("wshub_build_info{version="), "{metrics}");
    let outside = https_get(&config, connect_from("127.0.0.2", https_port), "/metrics");
    assert_eq!(status(&outside), 403, "{outside}");
    // Everything else is open to that address.
    let open = https_get(&config, connect_from("127.0.0.2", https_port), "/healthz");
    assert_eq!(status(&open), 200, "{open}");

    for ws in [&mut a, &mut b, &mut echo] {
        let _ = ws.close(None);
    }
    drop(nginx);
    drop(instances);
    let _ = std::fs::remove_dir_all(&dir);
}

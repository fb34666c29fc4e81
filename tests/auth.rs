//! Access control: HS256 tokens (minted here with `jsonwebtoken`, as any
//! issuer would), their three carriers, expiry while connected, the
//! per-client rate limit, the per-IP connection limit, and a host
//! program's own decision.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{EncodingKey, Header};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use wshub::Server;
use wshub::auth::{Access, Authorizer, Secret};

const SECRET: &[u8] = b"a secret of the test's own, 32 bytes";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with `secret`, for `rooms` (`None`: every room),
/// expiring at `exp` (seconds since the epoch).
fn token_with(secret: &[u8], rooms: Option<&[&str]>, exp: u64) -> String {
    let mut claims = serde_json::json!({ "sub": "alice", "exp": exp });
    if let Some(rooms) = rooms {
        claims["rooms"] = serde_json::json!(rooms);
    }
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .expect("a token")
}

fn token(rooms: Option<&[&str]>) -> String {
    token_with(SECRET, rooms, now() + 3600)
}

fn secured() -> Server {
    start(config().auth_secret(Secret::new(SECRET)))
}

/// The status of a refused upgrade, and its body's reason.
fn refused(result: Result<Ws, tungstenite::Error>) -> (u16, String) {
    match result {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[test]
fn no_token_is_401_with_a_reason() {
    let server = secured();
    let (status, reason) = refused(try_ws(server.local_addr(), "/ws/ops", &[]));
    assert_eq!(status, 401);
    assert!(reason.contains("token is required"), "{reason}");
    let head = handshake(
        server.local_addr(),
        &upgrade_head(server.local_addr(), "/ws"),
    );
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
}

#[test]
fn a_token_signed_with_another_secret_is_401() {
    let server = secured();
    let forged = token_with(b"somebody else's secret", None, now() + 3600);
    let (status, reason) = refused(try_ws(
        server.local_addr(),
        &format!("/ws/ops?token={forged}"),
        &[],
    ));
    assert_eq!(status, 401);
    assert!(reason.contains("signature"), "{reason}");
}

#[test]
fn an_expired_or_malformed_token_is_401() {
    let server = secured();
    let expired = token_with(SECRET, None, now() - 10);
    let (status, reason) = refused(try_ws(
        server.local_addr(),
        &format!("/ws/ops?token={expired}"),
        &[],
    ));
    assert_eq!(status, 401);
    assert!(reason.ends_with(": token expired\n"), "{reason}");
    let (status, reason) = refused(try_ws(server.local_addr(), "/ws/ops?token=not.a.jwt", &[]));
    assert_eq!(status, 401);
    assert!(reason.contains("malformed"), "{reason}");
}

#[test]
fn a_room_outside_the_tokens_rooms_is_403_and_a_pattern_match_is_let_in() {
    let server = secured();
    let addr = server.local_addr();
    let t = token(Some(&["ops", "team-*"]));
    let (status, reason) = refused(try_ws(addr, &format!("/ws/finance?token={t}"), &[]));
    assert_eq!(status, 403);
    assert!(reason.contains("finance"), "{reason}");
    // The lobby is not granted either.
    assert_eq!(refused(try_ws(addr, &format!("/ws?token={t}"), &[])).0, 403);
    let events = server.events();
    let mut a = ws(addr, &format!("/ws/team-red?token={t}"));
    let mut b = ws(addr, &format!("/ws/team-red?token={t}"));
    joined(&events, 2);
    text(&mut a, "allowed");
    assert_eq!(next(&mut b), Message::text("allowed"));
}

#[test]
fn each_carrier_works_query_header_and_subprotocol() {
    let server = start(
        config()
            .auth_secret(Secret::new(SECRET))
            .subprotocols(["chat"]),
    );
    let addr = server.local_addr();
    let t = token(None);
    let mut by_query = ws(addr, &format!("/ws/c?token={t}"));
    let bearer = format!("Bearer {t}");
    let mut by_header = try_ws(addr, "/ws/c", &[("Authorization", &bearer)]).expect("Bearer");
    let offer = format!("chat, bearer.{t}");
    let by_protocol = try_ws(addr, "/ws/c", &[("Sec-WebSocket-Protocol", &offer)]);
    let mut by_protocol = by_protocol.expect("a bearer.<token> subprotocol");
    // The answer names the real subprotocol, never the token.
    let raw = handshake(
        addr,
        &upgrade_head(addr, "/ws/c").replace(
            "\r\n\r\n",
            &format!("\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"),
        ),
    );
    assert!(raw.starts_with("HTTP/1.1 101"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("sec-websocket-protocol: chat\r\n"),
        "{raw}"
    );
    assert!(!raw.contains(&t), "the token was echoed: {raw}");
    text(&mut by_query, "one");
    assert_eq!(next(&mut by_header), Message::text("one"));
    assert_eq!(next(&mut by_protocol), Message::text("one"));
}

#[test]
fn a_connection_is_closed_with_1008_when_its_token_expires() {
    let server = secured();
    let exp = now() + 2;
    let t = token_with(SECRET, None, exp);
    let mut client = ws(server.local_addr(), &format!("/ws/e?token={t}"));
    // Until the expiry the connection serves: the server's answer to a
    // ping, then its Close, both arrive through reads bounded by STEP.
    let frame = loop {
        match client.read() {
            Ok(Message::Close(frame)) => break frame.expect("a close code"),
            Ok(_) => {}
            Err(e) => panic!("no Close before the connection ended: {e}"),
        }
    };
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(frame.reason.as_str(), "token expired");
    assert!(now() >= exp, "closed before exp ({exp}, now {})", now());
}

#[test]
fn the_token_is_never_logged() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let secret_file = dir.join(format!("secret-{}", std::process::id()));
    std::fs::write(&secret_file, [SECRET, b"\n"].concat()).unwrap();
    let served = serve_process(
        &[
            "--auth-secret-file",
            secret_file.to_str().unwrap(),
            "--log-level",
            "trace",
        ],
        &[],
    );
    let addr = served.addr;
    let good = token(Some(&["ops"]));
    let forged = token_with(b"another secret", None, now() + 3600);
    let mut client = ws(addr, &format!("/ws/ops?token={good}"));
    close(&mut client);
    assert_eq!(
        refused(try_ws(addr, &format!("/ws/other?token={good}"), &[])).0,
        403
    );
    assert_eq!(
        refused(try_ws(addr, &format!("/ws/ops?token={forged}"), &[])).0,
        401
    );
    let bearer = format!("Bearer {forged}");
    assert_eq!(
        refused(try_ws(addr, "/ws/ops", &[("Authorization", &bearer)])).0,
        401
    );
    // A file path with a token in its query.
    assert_eq!(
        status(&get(addr, &format!("/nothing?token={good}"), "")),
        404
    );
    let mut process = served.process;
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &process.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = process.wait();
    let log: Vec<String> = served.log.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("401")),
        "the refusals are logged: {log:?}"
    );
    for line in served.head.iter().chain(&log) {
        for secret in [&good, &forged] {
            // Any long piece of it (a signature, a payload).
            for piece in secret.split('.') {
                assert!(!line.contains(piece), "a token in the log: {line}");
            }
        }
    }
    let _ = std::fs::remove_file(secret_file);
}

#[test]
fn a_flooding_client_is_closed_with_1008_while_a_polite_one_loses_nothing() {
    let server = start(config().max_messages_per_second(20).message_burst(20));
    let addr = server.local_addr();
    let events = server.events();
    let (mut flooder, mut polite, mut reader) =
        (ws(addr, "/ws/r"), ws(addr, "/ws/r"), ws(addr, "/ws/r"));
    joined(&events, 3);
    // The polite client speaks during the flood.
    let mut flooding = true;
    for i in 0..200 {
        if flooding && flooder.send(Message::text(format!("flood {i}"))).is_err() {
            flooding = false;
        }
        if i % 40 == 0 {
            text(&mut polite, &format!("polite {}", i / 40));
        }
    }
    assert_eq!(close_code(&mut flooder), Some(CloseCode::Policy));
    let mut got = Vec::new();
    while got.len() < 5 {
        if let Message::Text(t) = next(&mut reader)
            && t.starts_with("polite")
        {
            got.push(t.to_string());
        }
    }
    assert_eq!(
        got,
        (0..5).map(|i| format!("polite {i}")).collect::<Vec<_>>()
    );
    eventually("the flooder's session has ended", || {
        scrape(addr).get("wshub_clients{endpoint=ws}") == 2.0
    });
    assert_eq!(scrape(addr).get("wshub_rate_limited_total"), 1.0);
}

#[test]
fn past_the_per_ip_limit_upgrades_get_503() {
    let server = start(config().max_connections_per_ip(2));
    let addr = server.local_addr();
    let mut first = ws(addr, "/ws/ip");
    let _second = ws(addr, "/echo");
    let refusal = http(addr, upgrade_head(addr, "/ws/ip").as_bytes());
    assert_eq!(status(&refusal), 503, "{refusal}");
    assert!(
        refusal.contains("at the limit of 2 connections from this address"),
        "{refusal}"
    );
    close(&mut first);
    // The slot comes back once the first connection is gone.
    eventually("a slot is free again", || {
        try_ws(addr, "/ws/ip", &[]).is_ok()
    });
}

#[test]
fn a_host_program_callback_decides_instead_of_tokens() {
    let server = start(config().authorizer(Authorizer::new(|req| {
        let session = req
            .request
            .headers()
            .get("Cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match (req.room, session) {
            (_, "") => Access::refuse(401, "log in first"),
            (Some("secret"), _) => Access::refuse(403, "not for you"),
            _ if req.peer.ip().is_loopback() => Access::allow(),
            _ => Access::refuse(403, "not from there"),
        }
    })));
    let addr = server.local_addr();
    let cookie = [("Cookie", "session=1")];
    let (status, reason) = refused(try_ws(addr, "/ws/secret", &cookie));
    assert_eq!(status, 403);
    assert!(reason.ends_with(": not for you\n"), "{reason}");
    assert_eq!(refused(try_ws(addr, "/ws/open", &[])).0, 401);
    let mut ok = try_ws(addr, "/ws/open", &cookie).expect("allowed");
    close(&mut ok);
}

#[test]
fn protect_admin_requires_a_token_for_rooms_and_metrics() {
    let server = start(
        config()
            .auth_secret(Secret::new(SECRET))
            .protect_admin(true),
    );
    let addr = server.local_addr();
    assert_eq!(status(&get(addr, "/metrics", "")), 401);
    assert_eq!(status(&get(addr, "/rooms", "")), 401);
    let t = token(Some(&["ops"]));
    let auth = format!("Authorization: Bearer {t}\r\n");
    assert_eq!(status(&get(addr, "/metrics", &auth)), 200);
    assert_eq!(status(&get(addr, "/rooms", &auth)), 200);
    assert_eq!(status(&get(addr, "/rooms/finance", &auth)), 403);
    // The page and health stay open.
    assert_eq!(status(&get(addr, "/healthz", "")), 200);
    assert_eq!(status(&get(addr, "/", "")), 200);
}

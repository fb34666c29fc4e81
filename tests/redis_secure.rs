//! The Redis bridge against a production-style Redis: a password
//! (`--requirepass`), an ACL user, and TLS (`rediss://` with a CA made by
//! `openssl` for the run). Each runs `wshub serve` processes at trace
//! level: chat crosses with the right credentials; a wrong password or an
//! untrusted certificate is one clear line and retries; no password ever
//! appears in a log line or in `/healthz`. Without `redis-server` (or
//! `openssl`) the tests skip and `make test` says so, except under CI.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use common::redis::{Redis, Setup};
use common::*;
use tungstenite::Message;

const ADMIN_PASSWORD: &str = "admin-S3cret-pw";
const USER_PASSWORD: &str = "user-Pa55word-x";
const WRONG_PASSWORD: &str = "wrong-Guess-123";

/// `wshub serve --log-level trace` with these extra arguments.
fn instance(args: &[&str]) -> Served {
    let mut all = vec!["--log-level", "trace"];
    all.extend_from_slice(args);
    serve_process(&all, &[("NO_COLOR", "1")])
}

/// Unless a line of `seen` satisfies `want`, reads `log` until one does
/// (bounded by [`STEP`]); every line read is kept in `seen`.
fn wait_line(
    log: &Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    want: impl Fn(&str) -> bool,
) {
    if seen.iter().any(|l| want(l)) {
        return;
    }
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line {what}; saw:\n{}", seen.join("\n")));
        let hit = want(&line);
        seen.push(line);
        if hit {
            return;
        }
    }
}

/// Everything else the log says within a short while.
fn drain(log: &Receiver<String>, seen: &mut Vec<String>) {
    while let Ok(line) = log.recv_timeout(std::time::Duration::from_millis(300)) {
        seen.push(line);
    }
}

/// Asserts that no line of `lines` (nor `/healthz` of `addr`) holds any
/// of the passwords.
fn no_password(lines: &[String], addr: SocketAddr) {
    let health = get(addr, "/healthz", "");
    for secret in [ADMIN_PASSWORD, USER_PASSWORD, WRONG_PASSWORD] {
        for line in lines {
            assert!(!line.contains(secret), "a password in the log: {line}");
        }
        assert!(!health.contains(secret), "a password in /healthz: {health}");
    }
}

/// Two instances at `url` (with `extra` arguments) carry a room's chat
/// both ways; their logs are returned.
fn chat_crosses(redis: &Redis, url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--redis", url];
    args.extend_from_slice(extra);
    let (a, b) = (instance(&args), instance(&args));
    let mut seen = Vec::new();
    for served in [&a, &b] {
        let mut mine = served.head.clone();
        for what in ["publisher", "subscriber"] {
            wait_line(&served.log, &mut mine, "of the bridge connected", |l| {
                l.contains(&format!("{what} connected"))
            });
        }
        seen.extend(mine);
    }
    let (mut a1, mut b1) = (ws(a.addr, "/ws/secure"), ws(b.addr, "/ws/secure"));
    redis.wait_subscribers("secure", 2);
    text(&mut a1, "from A");
    assert_eq!(next(&mut b1), Message::text("from A"));
    text(&mut b1, "from B");
    assert_eq!(next(&mut a1), Message::text("from B"));
    close(&mut a1);
    close(&mut b1);
    drain(&a.log, &mut seen);
    drain(&b.log, &mut seen);
    no_password(&seen, a.addr);
    seen
}

/// An instance at `url` that Redis refuses: one warning line saying why,
/// then retries (debug lines), and never a password.
fn refused_and_retried(url: &str, extra: &[&str], why: &[&str]) {
    let mut args = vec!["--redis", url];
    args.extend_from_slice(extra);
    let served = instance(&args);
    let mut seen = served.head.clone();
    wait_line(&served.log, &mut seen, "retrying", |l| {
        l.contains("still cannot reach Redis")
    });
    drain(&served.log, &mut seen);
    let warnings: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("publisher cannot reach Redis"))
        .collect();
    assert_eq!(warnings.len(), 1, "{seen:#?}");
    assert!(
        why.iter().any(|w| warnings[0].contains(w)),
        "the warning does not say why ({why:?}): {}",
        warnings[0]
    );
    let health = get(served.addr, "/healthz", "");
    assert!(health.contains(r#""redis":"disconnected""#), "{health}");
    no_password(&seen, served.addr);
}

/// A Redis that requires `ADMIN_PASSWORD` (and its CLI, which gives it).
fn with_password() -> Setup {
    Setup {
        args: vec!["--requirepass".into(), ADMIN_PASSWORD.into()],
        cli_auth: vec![
            "-a".into(),
            ADMIN_PASSWORD.into(),
            "--no-auth-warning".into(),
        ],
        ..Setup::default()
    }
}

#[test]
fn a_password_protected_redis_carries_chat_and_a_wrong_password_is_logged_once_masked() {
    let Some(redis) = Redis::start_with(with_password()) else {
        return;
    };
    let log = chat_crosses(&redis, &redis.url_as("", ADMIN_PASSWORD), &[]);
    assert!(
        log.iter().any(|l| l.contains(":***@")),
        "the URL is shown masked: {log:#?}"
    );
    refused_and_retried(
        &redis.url_as("", WRONG_PASSWORD),
        &[],
        &["WRONGPASS", "invalid", "uthentication"],
    );
}

#[test]
fn an_acl_user_carries_chat_and_a_wrong_one_is_refused_and_retried() {
    let Some(redis) = Redis::start_with(with_password()) else {
        return;
    };
    // A user allowed wshub's keys and channels, and nothing else.
    let acl = format!(">{USER_PASSWORD}");
    let ok = redis.cli(&[
        "ACL", "SETUSER", "wshub", "on", &acl, "~wshub:*", "&wshub:*", "+@all",
    ]);
    assert_eq!(ok, ["OK"]);
    chat_crosses(&redis, &redis.url_as("wshub", USER_PASSWORD), &[]);
    refused_and_retried(
        &redis.url_as("wshub", WRONG_PASSWORD),
        &[],
        &["WRONGPASS", "invalid", "uthentication"],
    );
}

/// A directory of this test's own under Cargo's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

#[test]
fn rediss_with_the_private_ca_carries_chat_and_an_unknown_ca_is_refused_and_retried() {
    if !have("openssl", "version", "openssl") {
        return;
    }
    let dir = scratch("redis-tls");
    let certs = common::tls::certs(&dir, "");
    let other = common::tls::certs(&dir, "other-");
    let setup = Setup {
        args: vec!["--requirepass".into(), ADMIN_PASSWORD.into()],
        cli_auth: vec![
            "-a".into(),
            ADMIN_PASSWORD.into(),
            "--no-auth-warning".into(),
        ],
        tls: Some(certs.clone()),
    };
    let Some(redis) = Redis::start_with(setup) else {
        return;
    };
    let url = redis.url_as("", ADMIN_PASSWORD);
    assert!(url.starts_with("rediss://"), "{url}");
    let ca = certs.ca.display().to_string();
    chat_crosses(&redis, &url, &["--redis-ca-file", &ca]);
    // Signed by a CA this instance was not told to trust.
    let other_ca = other.ca.display().to_string();
    refused_and_retried(
        &url,
        &["--redis-ca-file", &other_ca],
        &["certificate", "UnknownIssuer"],
    );
}

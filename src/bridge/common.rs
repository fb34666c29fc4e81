//! What both Redis threads share: how the Redis server is reached (its
//! URL with TLS and credentials, and the URL as logs may show it),
//! connections with bounded reads and writes, the retry timer, how a
//! connection's state is logged, stream entry ids and replies.
//!
//! Invariant: no password leaves this module — logs and errors show
//! [`masked`] URLs, and the `redis` crate's errors name no password.
//!
//! May touch: the CA file it is given (read once, at start).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use redis::Value;

/// How long the subscriber blocks in a read before it looks at room
/// changes and shutdown.
pub(super) const POLL: Duration = Duration::from_millis(100);
/// Bound on connecting to Redis (TCP, TLS and the handshake's commands).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on one command's answer (and on writing it): a Redis that
/// accepts and then says nothing costs an attempt this long, no more.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff: doubles from the first to the cap, on a timer of
/// its own (nothing else postpones an attempt). Once Redis is reachable
/// again, each connection is back within the cap plus one attempt.
pub(super) const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// A stream entry id, `ms-seq`, in Redis's order.
pub(super) type EntryId = (u64, u64);

pub(super) fn parse_id(s: &str) -> Option<EntryId> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// `url` with its password (and any `password=` parameter) replaced by
/// `***`: the form logs, errors and answers may show.
pub(crate) fn masked(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.contains("pass") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    let sep = if scheme.is_empty() { "" } else { "://" };
    format!("{scheme}{sep}{authority}{tail}")
}

const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// The Redis client for `url` (`redis://` or `rediss://`, with any
/// credentials), trusting the CA in `ca_file` (PEM) for `rediss://` when
/// one is given and the system's roots otherwise. Errors show the URL
/// masked.
pub(crate) fn open(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, String> {
    let shown = masked(url);
    let Some(ca_file) = ca_file else {
        return redis::Client::open(url).map_err(|e| format!("--redis {shown}: {e}"));
    };
    if !url.starts_with("rediss://") {
        return Err(format!(
            "--redis-ca-file is for rediss:// URLs, and --redis is {shown}"
        ));
    }
    let pem = std::fs::read(ca_file)
        .map_err(|e| format!("--redis-ca-file {}: {e}", ca_file.display()))?;
    if !pem
        .windows(CERTIFICATE.len())
        .any(|w| w == CERTIFICATE.as_bytes())
    {
        return Err(format!(
            "--redis-ca-file {}: no PEM certificate in it",
            ca_file.display()
        ));
    }
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(url, certs).map_err(|e| format!("--redis {shown}: {e}"))
}

/// A connection with every read and write bounded by
/// [`COMMAND_TIMEOUT`], so that no Redis can hold a bridge thread longer.
pub(super) fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let c = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    c.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    c.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(c)
}

/// When a connection that is down tries again: a deadline that doubles
/// from [`BACKOFF_FIRST`] to [`BACKOFF_CAP`] after each failure, and that
/// only a failure moves — whatever arrives meanwhile.
#[derive(Debug)]
pub(super) struct Retry {
    at: Instant,
    backoff: Duration,
}

impl Retry {
    /// Due at once.
    pub(super) fn now() -> Retry {
        Retry {
            at: Instant::now(),
            backoff: BACKOFF_FIRST,
        }
    }

    /// When the next attempt is due.
    pub(super) fn at(&self) -> Instant {
        self.at
    }

    /// An attempt failed: the next one is due a backoff from now.
    pub(super) fn failed(&mut self) {
        self.at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
    }

    /// Connected: a later loss retries quickly again.
    pub(super) fn succeeded(&mut self) {
        self.backoff = BACKOFF_FIRST;
    }
}

/// Logs a change of a connection's state, once per change (a failed
/// attempt while already down is logged at debug level only; the
/// threads log their first failed attempt themselves, so that a wrong
/// password or an untrusted certificate is one clear line at start).
pub(super) fn set_up(flag: &AtomicBool, up: bool, what: &str, detail: &str) {
    let was = flag.swap(up, Ordering::AcqRel);
    match (was, up) {
        (false, true) => info!("redis bridge: {what} connected{detail}"),
        (true, false) => warn!("redis bridge: {what} lost Redis: {detail}; retrying"),
        (false, false) => debug!("redis bridge: {what} still cannot reach Redis: {detail}"),
        (true, true) => {}
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `(id, envelope)` pairs of an XRANGE or XREVRANGE reply.
pub(super) fn stream_entries(reply: &Value) -> Vec<(EntryId, Vec<u8>)> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let [id, Value::Array(fields)] = &parts[..] else {
            continue;
        };
        let id = match id {
            Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(parse_id),
            Value::SimpleString(s) => parse_id(s),
            _ => None,
        };
        let envelope = fields.chunks(2).find_map(|kv| match kv {
            [Value::BulkString(k), Value::BulkString(v)] if k == b"m" => Some(v.clone()),
            _ => None,
        });
        if let (Some(id), Some(envelope)) = (id, envelope) {
            out.push((id, envelope));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn masked_urls_show_no_password() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@h:1/2", "redis://:***@h:1/2"),
            ("rediss://user:p@ss:w@h:1", "rediss://user:***@h:1"),
            ("redis://user@h:1", "redis://user@h:1"),
            (
                "redis://h:1/0?password=x&db=1",
                "redis://h:1/0?password=***&db=1",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(masked(url), shown, "{url}");
        }
    }
}

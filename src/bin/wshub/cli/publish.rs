//! `wshub publish`: one message into a room through a server's API
//! (`POST /api/rooms/{room}/messages`, see `serve --api-key-file`), over
//! plain HTTP with ureq.
//!
//! stdout carries only the server's JSON answer (on 200); anything else
//! goes to stderr. Exit codes: 0 when the server answered 200; 1 for any
//! other answer (its status and error printed), or when the request could
//! not be made (unreadable key or stdin, bad URL, nobody listening).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Flags of `wshub publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080 (plain HTTP).
    #[arg(long)]
    pub url: String,
    /// The room to publish into.
    #[arg(long)]
    pub room: String,
    /// A file holding the API key (the file `serve --api-key-file` reads).
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// Send a binary message (application/octet-stream) instead of text.
    #[arg(long)]
    pub binary: bool,
    /// The message; `-` or none: read it from stdin, whole and unchanged.
    pub message: Option<String>,
}

/// Characters kept as they are in the room's path segment (room names
/// are letters, digits, `_`, `.` and `-`; anything else is escaped, and
/// the server says what is wrong with it).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-');

pub(super) fn run(args: &PublishArgs) -> ExitCode {
    match publish(args) {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("wshub publish: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the message; the server's answer on 200, else why not.
fn publish(args: &PublishArgs) -> Result<String, String> {
    let key = match &args.api_key_file {
        Some(path) => {
            let secret = super::read_secret(path)?;
            let key = String::from_utf8(secret.bytes().to_vec())
                .map_err(|_| format!("{}: the key is not UTF-8", path.display()))?;
            Some(key)
        }
        None => None,
    };
    let body = match args.message.as_deref() {
        Some("-") | None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| format!("reading stdin: {e}"))?;
            body
        }
        Some(message) => message.as_bytes().to_vec(),
    };
    let url = format!(
        "{}/api/rooms/{}/messages",
        args.url.trim_end_matches('/'),
        utf8_percent_encode(&args.room, SEGMENT)
    );
    let content_type = if args.binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.post(&url).content_type(content_type);
    if let Some(key) = &key {
        request = request.header("X-API-Key", key);
    }
    let mut response = request.send(&body[..]).map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let answer = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap_or_default();
    if status.as_u16() == 200 {
        return Ok(answer.trim_end().to_string());
    }
    // The server's own words when it gave them (`{"error": …}`).
    let why = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| answer.trim().to_string());
    let reason = status.canonical_reason().unwrap_or("");
    Err(format!("{} {reason}: {why}", status.as_u16()))
}

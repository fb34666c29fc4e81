//! `wshub client`: a command-line WebSocket client on the library's own
//! [`Connection`] (the same reader/writer threads as the server).
//!
//! Threads: the connection's two, one reading stdin, one waiting for
//! signals; this one selects over what they deliver. stdout carries only
//! received text, one message per line, so the output can be piped; all
//! diagnostics go to stderr.
//!
//! Exit codes: 0 after our own close or the server's 1000/1001; 1 when the
//! connection cannot be made (refused, DNS, HTTP status, bad URL, unreadable
//! file); 3 when the server closes with another code or the connection drops.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, never, select, tick};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::ClientArgs;
use wshub::Ending;
use wshub::ws::{CloseCode, Message};
use wshub::{ConnectOptions, Connection};

use crate::file_frame;

const FAILED: u8 = 1;
const ABNORMAL_CLOSE: u8 = 3;

pub(super) fn run(args: &ClientArgs) -> ExitCode {
    super::logging::init(args.log_level, super::LogFormat::Text);
    match session(args) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("wshub client: {message}");
            ExitCode::from(FAILED)
        }
    }
}

fn session(args: &ClientArgs) -> Result<u8, String> {
    if let Some(dir) = &args.save_dir
        && !dir.is_dir()
    {
        return Err(format!("--save-dir {}: not a directory", dir.display()));
    }
    let file = match &args.send_file {
        Some(path) => Some(read_file(path)?),
        None => None,
    };
    let options = connect_options(args);
    let conn = Arc::new(Connection::connect(&room_url(args), &options).map_err(|e| e.to_string())?);
    // Installed only now (until connected, Ctrl-C simply ends the process)
    // and before "connected" is printed, which scripts may wait for.
    let signals = signal_channel()?;
    match conn.subprotocol() {
        Some(p) => eprintln!("connected to {} (subprotocol {p})", args.url),
        None => eprintln!("connected to {}", args.url),
    }
    if let Some((name, contents)) = file {
        let frame = file_frame::encode(&name, &contents);
        conn.send(Message::binary(frame))
            .map_err(|e| e.to_string())?;
        eprintln!("sending file {name:?} ({} bytes)", contents.len());
    }
    if let Some(code) = exchange(args, &conn, &signals) {
        return Ok(code);
    }
    // Our close: queued messages go first, then Close 1000; the server's
    // answer is awaited for up to a second once ours is out.
    conn.close(CloseCode::Normal, "");
    let deadline = Instant::now() + options.write_timeout + Duration::from_secs(1);
    while let Ok(message) = conn.incoming().recv_deadline(deadline) {
        match message {
            Message::Close(_) => break,
            message => show(message, args.save_dir.as_deref()),
        }
    }
    let _ = conn.wait(Duration::from_millis(100));
    Ok(0)
}

/// The options the flags ask for, a --token as a bearer header.
fn connect_options(args: &ClientArgs) -> ConnectOptions {
    let mut headers = args.headers.clone();
    if let Some(token) = &args.token {
        headers.push(("Authorization".into(), format!("Bearer {token}")));
    }
    ConnectOptions {
        origin: args.origin.clone(),
        subprotocols: args.subprotocols.clone(),
        headers,
        compression: args.compression,
        max_message_bytes: usize::try_from(args.max_message_bytes.as_u64()).unwrap_or(usize::MAX),
        ..ConnectOptions::default()
    }
}

/// --url, with `history=K` added to its query for --history.
fn room_url(args: &ClientArgs) -> String {
    match &args.history {
        Some(k) => {
            let sep = if args.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}history={k}", args.url)
        }
        None => args.url.clone(),
    }
}

/// Shows what comes and sends stdin's lines and the --every text until
/// stdin ends or a signal comes (None: we close), or the server ends the
/// session (its exit code).
fn exchange(args: &ClientArgs, conn: &Arc<Connection>, signals: &Receiver<()>) -> Option<u8> {
    let stdin_done = if args.no_stdin {
        never()
    } else {
        read_stdin(conn.clone())
    };
    let ticker = args.every.map_or_else(never, |d| tick(d.into()));
    let every_text = args.text.clone().unwrap_or_default();
    loop {
        select! {
            recv(conn.incoming()) -> message => match message {
                Ok(Message::Close(_)) | Err(_) => return Some(server_closed(conn)),
                Ok(message) => show(message, args.save_dir.as_deref()),
            },
            recv(stdin_done) -> _ => return None,
            recv(signals) -> _ => return None,
            recv(ticker) -> _ => {
                if conn.send(Message::text(every_text.as_str())).is_err() {
                    return Some(server_closed(conn));
                }
            }
        }
    }
}

fn read_file(path: &Path) -> Result<(String, Vec<u8>), String> {
    let contents =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    Ok((name, contents))
}

/// Disconnects when stdin ends; sends each line as a text message.
fn read_stdin(conn: Arc<Connection>) -> Receiver<()> {
    let (done_tx, done_rx) = bounded::<()>(0);
    std::thread::spawn(move || {
        let _done = done_tx;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if conn.send(Message::text(line)).is_err() {
                break;
            }
        }
    });
    done_rx
}

/// Delivers one message per SIGINT/SIGTERM; a second one exits at once.
fn signal_channel() -> Result<Receiver<()>, String> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("signals: {e}"))?;
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        for (seen, _) in signals.forever().enumerate() {
            if seen > 0 {
                std::process::exit(130);
            }
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

fn show(message: Message, save_dir: Option<&Path>) {
    match message {
        Message::Text(text) => {
            let mut out = std::io::stdout().lock();
            // A closed stdout (e.g. `| head`) is not worth dying over mid-session.
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        }
        Message::Binary(data) => match (file_frame::decode(&data), save_dir) {
            (Ok((name, contents)), Some(dir)) => match file_frame::save(dir, name, contents) {
                Ok(path) => eprintln!("saved {} ({} bytes)", path.display(), contents.len()),
                Err(e) => eprintln!("cannot save {name:?}: {e}"),
            },
            (Ok((name, contents)), None) => {
                eprintln!(
                    "binary message: {} bytes, file {name:?} ({} bytes)",
                    data.len(),
                    contents.len()
                )
            }
            (Err(why), _) => eprintln!("binary message: {} bytes ({why})", data.len()),
        },
        _ => {}
    }
}

/// Reports how the server ended the session; the exit code.
fn server_closed(conn: &Connection) -> u8 {
    match conn.wait(Duration::from_secs(2)) {
        Some(Ending::PeerClosed(Some(frame))) => {
            let code = u16::from(frame.code);
            eprintln!(
                "server closed the connection: {code} {}",
                frame.reason.as_str()
            );
            if matches!(frame.code, CloseCode::Normal | CloseCode::Away) {
                0
            } else {
                ABNORMAL_CLOSE
            }
        }
        Some(Ending::PeerClosed(None)) => {
            eprintln!("server closed the connection without a status code");
            ABNORMAL_CLOSE
        }
        Some(Ending::WeClosed(code, reason)) => {
            eprintln!("connection closed: {} {reason}", u16::from(code));
            ABNORMAL_CLOSE
        }
        Some(Ending::Dropped(why)) => {
            eprintln!("connection lost: {why}");
            ABNORMAL_CLOSE
        }
        _ => {
            eprintln!("connection ended");
            ABNORMAL_CLOSE
        }
    }
}

//! A moderation bot in the host program, through the message hook: it
//! drops messages containing a banned word (and tells the sender why),
//! answers `/who` with the room's members, and relays everything else.
//!
//! `cargo run --example moderator` runs a short demonstration against
//! itself and checks what it prints (`make test` runs it so);
//! `cargo run --example moderator -- serve 127.0.0.1:8080` keeps a server
//! with the bot running for the chat page.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wshub::hook::{Incoming, Verdict};
use wshub::ws::Message;
use wshub::{Config, ConnectOptions, Connection, Handle, Server};

/// The word the bot does not let through.
const BANNED: &str = "spoiler";

/// What the bot decides for one message. `handle` answers `/who`.
fn moderate(handle: &OnceLock<Handle>, m: &Incoming<'_>) -> Verdict {
    let Ok(text) = m.message.to_text() else {
        return Verdict::Relay;
    };
    if text.trim() == "/who" {
        let names = match handle.get().map(|h| h.members(m.room)) {
            Some(Ok(members)) => members.into_iter().map(|m| m.name).collect::<Vec<_>>(),
            _ => return Verdict::Answer(Message::text("bot: cannot tell right now")),
        };
        return Verdict::Answer(Message::text(format!("bot: here are {}", names.join(", "))));
    }
    if text.to_lowercase().contains(BANNED) {
        return Verdict::Answer(Message::text(format!(
            "bot: not relayed, no {BANNED}s here"
        )));
    }
    Verdict::Relay
}

fn start(addr: &str) -> Result<Server, wshub::Error> {
    let handle: Arc<OnceLock<Handle>> = Arc::new(OnceLock::new());
    let bot = handle.clone();
    let config = Config::default()
        .addr(addr.parse().expect("an address such as 127.0.0.1:8080"))
        .message_hook(move |m: &Incoming<'_>| moderate(&bot, m));
    let server = Server::start(config)?;
    let _ = handle.set(server.handle());
    Ok(server)
}

fn main() -> Result<(), wshub::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let addr = args.get(1).map_or("127.0.0.1:8080", String::as_str);
        let server = start(addr)?;
        println!("moderated chat on http://{}/", server.local_addr());
        server.run();
        return Ok(());
    }
    let server = start("127.0.0.1:0")?;
    let base = format!("ws://{}/ws/club", server.local_addr());
    let options = ConnectOptions::default();
    let ana = Connection::connect(&format!("{base}?name=ana"), &options)?;
    let ben = Connection::connect(&format!("{base}?name=ben"), &options)?;
    let wait = Duration::from_secs(5);
    let heard = |who: &Connection| -> Result<String, wshub::Error> {
        match who.recv_timeout(wait)? {
            Some(Message::Text(text)) => Ok(text.to_string()),
            other => panic!("expected a text message, got {other:?}"),
        }
    };

    ana.send(Message::text("the butler did it, spoiler!"))?;
    let answer = heard(&ana)?;
    println!("ana was told: {answer}");
    assert_eq!(answer, "bot: not relayed, no spoilers here");

    ana.send(Message::text("/who"))?;
    let answer = heard(&ana)?;
    println!("ana was told: {answer}");
    assert_eq!(answer, "bot: here are ana, ben");

    ana.send(Message::text("hello ben"))?;
    let got = heard(&ben)?;
    println!("ben received: {got}");
    // The dropped message never reached ben: the first thing he hears is this.
    assert_eq!(got, "hello ben");

    server.shutdown();
    Ok(())
}

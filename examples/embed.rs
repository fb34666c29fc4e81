//! Embedding wshub in an ordinary threaded program.
//!
//! Starts a hub on a free loopback port, watches its events on a thread of
//! our own, connects two clients with the library's own thread-safe
//! `Connection`, lets the host program speak into the room, and shuts
//! everything down. Run it with `cargo run --example embed`.

use std::sync::Arc;
use std::time::Duration;

use wshub::ws::{CloseCode, Message};
use wshub::{Config, ConnectOptions, Connection, Event, Server};

fn main() -> Result<(), wshub::Error> {
    let server = Server::start(Config::default().addr("127.0.0.1:0".parse().expect("address")))?;
    let addr = server.local_addr();
    println!("hub listening on {addr}");

    // The host program sees who comes and goes, and what they say.
    let events = server.events();
    let watcher = std::thread::spawn(move || {
        let mut said = 0;
        for event in events.iter() {
            match event {
                Event::Joined {
                    client, room, peer, ..
                } => {
                    println!("event: {client} joined {room:?} from {peer}")
                }
                Event::Message {
                    client, message, ..
                } => {
                    println!("event: {client} said {message}");
                    said += 1;
                }
                Event::Left { client, room } => println!("event: {client} left {room:?}"),
                // Events may grow: a host program ignores what it does not know.
                _ => {}
            }
        }
        said
    });

    let url = format!("ws://{addr}/ws/demo");
    let alice = Arc::new(Connection::connect(&url, &ConnectOptions::default())?);
    let bob = Connection::connect(&url, &ConnectOptions::default())?;

    // Connections are thread-safe: Alice sends from another thread.
    let sender = {
        let alice = alice.clone();
        std::thread::spawn(move || alice.send(Message::text("hi Bob, from another thread")))
    };
    sender.join().expect("sender thread")?;
    let got = bob
        .recv_timeout(Duration::from_secs(5))?
        .expect("Bob hears Alice");
    println!("bob received: {got}");
    assert_eq!(got, Message::text("hi Bob, from another thread"));

    // The host program broadcasts into the room; both clients get it.
    server.broadcast("demo", Message::text("the host says hello"))?;
    for (name, conn) in [("alice", &*alice), ("bob", &bob)] {
        let got = conn
            .recv_timeout(Duration::from_secs(5))?
            .expect("broadcast arrives");
        println!("{name} received: {got}");
        assert_eq!(got, Message::text("the host says hello"));
    }

    // Closing is idempotent.
    bob.close(CloseCode::Normal, "bye");
    bob.close(CloseCode::Normal, "bye again");
    println!(
        "bob's connection ended: {:?}",
        bob.wait(Duration::from_secs(2))
    );

    server.shutdown(); // Alice gets 1001; every server thread is joined.
    match alice.recv_timeout(Duration::from_secs(2))? {
        Some(Message::Close(Some(frame))) => println!("alice was closed with {}", frame.code),
        other => println!("alice saw {other:?}"),
    }
    let said = watcher.join().expect("watcher");
    assert_eq!(said, 1, "one client message went through the hub");
    Ok(())
}

//! A delivery to a client that keeps up is written by the hub: the client
//! needs no writer thread, so none is started or woken. One test in its own binary: it reads
//! this process's threads by name, which another server in the same
//! process would share.

mod common;

use common::*;
use tungstenite::Message;
use wshub::Event;

/// Context switches of this process's thread named `name` so far.
#[cfg(target_os = "linux")]
fn switches_of_thread(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let field = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        return Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?);
    }
    None
}

#[cfg(target_os = "linux")]
#[test]
fn a_delivery_to_a_client_that_keeps_up_does_not_wake_its_writer() {
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let mut a = ws(addr, "/ws/quiet");
    joined(&events, 1);
    let mut b = ws(addr, "/ws/quiet");
    let b_id = loop {
        if let Event::Joined { client, .. } = events.recv_timeout(STEP).expect("b joins") {
            break client;
        }
    };
    let writer = format!("wshub-{}-write", b_id.get());
    // b's session is running once a hears from it (the hub registers a
    // client before its 101 is written, and a delivery in between is
    // queued, for a writer).
    b.send(Message::text("b is here")).unwrap();
    assert_eq!(next(&mut a), Message::text("b is here"));
    const N: u64 = 200;
    for i in 0..N {
        a.send(Message::text(format!("m{i}"))).unwrap();
        assert_eq!(next(&mut b), Message::text(format!("m{i}")));
    }
    // Written by the hub each time: b never needed a writer thread, so
    // none was started (and none was woken).
    assert_eq!(
        switches_of_thread(&writer),
        None,
        "b got a writer thread although it kept up"
    );
    close(&mut a);
    close(&mut b);
}

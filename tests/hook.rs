//! The host's message hook: each of its five verdicts, a hook that blocks
//! (only its own client waits), and a hook that panics (only its own
//! client is closed, with 1011).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::unbounded;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use wshub::auth::{Secret, mint_token};
use wshub::hook::{Incoming, Verdict};

/// What the hook saw: room, text, subject.
type Seen = (String, String, Option<String>);

const SECRET: &[u8] = b"a secret for the hook tests, 32+ bytes";

#[test]
fn the_hooks_five_verdicts_relay_replace_drop_answer_and_close() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let server = start(config().auth_secret(Secret::new(SECRET)).message_hook(
        move |m: &Incoming<'_>| {
            let text = m.message.to_text().unwrap_or("").to_string();
            let sub = m.sub.map(str::to_string);
            log.lock()
                .unwrap()
                .push((m.room.to_string(), text.clone(), sub));
            match text.as_str() {
                "replace me" => Verdict::Replace(Message::text("replaced")),
                "drop me" => Verdict::Drop,
                "answer me" => Verdict::Answer(Message::text("for your eyes only")),
                "close me" => Verdict::Close(CloseCode::Library(4000), "bye now".into()),
                _ => Verdict::Relay,
            }
        },
    ));
    let addr = server.local_addr();
    let secret = Secret::new(SECRET);
    let token = |sub: &str| mint_token(&secret, sub, None, Duration::from_secs(600)).unwrap();
    let events = server.events();
    let mut ana = ws(addr, &format!("/ws/den?token={}", token("ana")));
    let mut ben = ws(addr, &format!("/ws/den?token={}", token("ben")));
    joined(&events, 2);

    for text in ["as is", "replace me", "drop me", "answer me", "last"] {
        ana.send(Message::text(text)).unwrap();
    }
    // Ben hears what was relayed, in order, and nothing else.
    assert_eq!(next(&mut ben), Message::text("as is"));
    assert_eq!(next(&mut ben), Message::text("replaced"));
    assert_eq!(next(&mut ben), Message::text("last"));
    // Ana alone hears the answer.
    assert_eq!(next(&mut ana), Message::text("for your eyes only"));

    ana.send(Message::text("close me")).unwrap();
    match next(&mut ana) {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Library(4000));
            assert_eq!(frame.reason.as_str(), "bye now");
        }
        other => panic!("expected the hook's Close, got {other:?}"),
    }
    // Ben goes on, and never heard any of ana's held-back messages.
    ben.send(Message::text("still here")).unwrap();
    let mut carl = ws(addr, &format!("/ws/den?token={}", token("carl")));
    joined(&events, 1);
    ben.send(Message::text("hi carl")).unwrap();
    assert_eq!(next(&mut carl), Message::text("hi carl"));

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], ("den".into(), "as is".into(), Some("ana".into())));
    assert!(
        seen.iter()
            .any(|(_, t, sub)| t == "still here" && sub.as_deref() == Some("ben"))
    );
}

#[test]
fn a_hook_that_blocks_holds_up_only_its_own_client() {
    let (entered_tx, entered) = unbounded();
    let returned = Arc::new(AtomicBool::new(false));
    let done = returned.clone();
    let server = start(config().message_hook(move |m: &Incoming<'_>| {
        if m.message.to_text().ok() == Some("slow") {
            let _ = entered_tx.send(());
            std::thread::sleep(Duration::from_secs(1));
            done.store(true, Ordering::SeqCst);
        }
        Verdict::Relay
    }));
    let [mut slow, mut talker, mut listener] =
        clients(&server, "/ws/one", 3).try_into().expect("three");

    slow.send(Message::text("slow")).unwrap();
    entered.recv_timeout(STEP).expect("the hook is called");
    let started = Instant::now();
    for i in 0..20 {
        talker.send(Message::text(format!("quick {i}"))).unwrap();
    }
    for i in 0..20 {
        assert_eq!(next(&mut listener), Message::text(format!("quick {i}")));
    }
    assert!(
        !returned.load(Ordering::SeqCst),
        "other clients' chat crossed only after the hook returned ({:?})",
        started.elapsed()
    );
    // And the slow message itself still arrives, after the hook.
    assert_eq!(next(&mut listener), Message::text("slow"));
}

#[test]
fn a_hook_that_panics_closes_only_its_client_with_1011() {
    let server = start(config().message_hook(|m: &Incoming<'_>| {
        if m.message.to_text().ok() == Some("boom") {
            panic!("the hook fails on purpose");
        }
        Verdict::Relay
    }));
    let [mut victim, mut other, mut listener] =
        clients(&server, "/ws/p", 3).try_into().expect("three");

    victim.send(Message::text("boom")).unwrap();
    assert_eq!(close_code(&mut victim), Some(CloseCode::Error));
    other.send(Message::text("after the panic")).unwrap();
    assert_eq!(next(&mut listener), Message::text("after the panic"));
    // The panicking client is gone from the room; the others remain.
    eventually("the victim leaves", || server.handle().client_count() == 2);
}

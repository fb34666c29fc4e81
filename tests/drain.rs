//! Health and graceful drain: `/healthz` is 200 while the server accepts;
//! once shutdown begins it is 503 at once, new upgrades get 503, and the
//! clients already connected keep chatting until the drain timeout, then
//! get 1001.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn healthz_is_200_while_accepting() {
    let server = start(config());
    let response = get(server.local_addr(), "/healthz", "");
    assert_eq!(status(&response), 200);
    let v = json_body(&response);
    assert_eq!(v["status"], "ok");
    assert!(v["redis"].is_null(), "no bridge, no redis field value: {v}");
}

#[test]
fn a_drain_turns_healthz_503_refuses_upgrades_and_then_closes_with_1001() {
    const DRAIN: Duration = Duration::from_millis(1500);
    let server = start(config().drain_timeout(DRAIN));
    let addr = server.local_addr();
    let events = server.events();
    let (mut a, mut b) = (ws(addr, "/ws/d"), ws(addr, "/ws/d"));
    joined(&events, 2);
    let handle = server.handle();
    let running = std::thread::spawn(move || server.run());
    let asked = Instant::now();
    handle.shutdown();
    eventually("healthz says 503", || {
        status(&get(addr, "/healthz", "")) == 503
    });
    assert_eq!(json_body(&get(addr, "/healthz", ""))["status"], "draining");
    let refused = handshake(addr, &upgrade_head(addr, "/ws/d"));
    assert_eq!(status(&refused), 503, "{refused}");
    assert!(refused.contains("Retry-After"), "{refused}");
    // Those already in keep chatting during the drain.
    text(&mut a, "still here");
    assert_eq!(next(&mut b), Message::text("still here"));
    // Then everyone gets 1001, not before the drain timeout.
    assert_eq!(close_code(&mut a), Some(CloseCode::Away));
    assert!(
        asked.elapsed() >= DRAIN,
        "closed after {:?}",
        asked.elapsed()
    );
    assert_eq!(close_code(&mut b), Some(CloseCode::Away));
    running.join().expect("run returns after the drain");
}

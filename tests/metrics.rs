//! `GET /metrics`: the whole exposition parses with a real, independent
//! Prometheus text-format parser (the `openmetrics-parser` crate, through
//! `common::parse`), which refuses malformed input, and its values move as
//! traffic flows.

mod common;

use std::time::Duration;

use common::*;
use tungstenite::Message;

/// The parser is a real check: a good exposition parses, and each kind of
/// malformed one is refused.
#[test]
fn the_parser_refuses_a_malformed_exposition() {
    let good = "# HELP wshub_x_total Things.\n# TYPE wshub_x_total counter\n\
                wshub_x_total{a=\"b\"} 1\nwshub_x_total{a=\"c\"} 2\n\
                # HELP wshub_y Now.\n# TYPE wshub_y gauge\nwshub_y 3.5\n";
    let parsed = try_parse(good).expect("a good exposition parses");
    assert_eq!(parsed.get("wshub_x_total{a=b}"), 1.0);
    assert_eq!(parsed.get("wshub_x_total{a=c}"), 2.0);
    assert_eq!(parsed.get("wshub_y"), 3.5);
    assert_eq!(parsed.types["wshub_x"], "counter");
    assert_eq!(parsed.types["wshub_y"], "gauge");
    // Each alone, and after the good lines (a family of its own, so that
    // only its own fault can be what is refused).
    for (what, bad) in [
        ("an unclosed label set", "wshub_z{a=\"b\" 1\n"),
        ("a value that is no number", "wshub_z not_a_number\n"),
        ("an unquoted label value", "wshub_z{a=b} 1\n"),
        ("no value", "wshub_z\n"),
        ("a bad metric name", "wshub-z 1\n"),
        ("an unknown type", "# TYPE wshub_z thermometer\nwshub_z 1\n"),
        (
            "a negative counter",
            "# TYPE wshub_z_total counter\nwshub_z_total -1\n",
        ),
        (
            "a sample twice",
            "# TYPE wshub_z gauge\nwshub_z{a=\"b\"} 1\nwshub_z{a=\"b\"} 2\n",
        ),
        (
            "a family split in two",
            "# TYPE wshub_z gauge\nwshub_z 1\n# TYPE wshub_w gauge\nwshub_w 1\n\
             # TYPE wshub_z gauge\nwshub_z 2\n",
        ),
    ] {
        assert!(try_parse(bad).is_err(), "{what} was accepted: {bad:?}");
        assert!(
            try_parse(&format!("{good}{bad}")).is_err(),
            "{what} after good lines was accepted: {bad:?}"
        );
    }
}

#[test]
fn metrics_parse_and_count_clients_messages_refusals_and_closes() {
    let server = start(config());
    let addr = server.local_addr();
    let events = server.events();

    let before = scrape(addr);
    for (family, kind) in [
        ("wshub_build_info", "gauge"),
        ("wshub_clients", "gauge"),
        ("wshub_messages_received", "counter"),
        ("wshub_messages_delivered", "counter"),
        ("wshub_closes", "counter"),
        ("wshub_handshakes_refused", "counter"),
        ("wshub_process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(before.types.get(family).map(String::as_str), Some(kind));
    }
    assert_eq!(
        before.get(&format!(
            "wshub_build_info{{version={}}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert_eq!(before.get("wshub_clients{endpoint=ws}"), 0.0);
    assert!(before.get("wshub_process_threads") >= 3.0);
    assert!(before.get("wshub_process_open_fds") >= 3.0);
    assert!(before.get("wshub_process_resident_memory_bytes") > 1e6);
    // No bridge, no Redis series.
    assert!(!before.samples.keys().any(|k| k.starts_with("wshub_redis")));

    let (mut a, mut b, mut c) = (ws(addr, "/ws/m"), ws(addr, "/ws/m"), ws(addr, "/ws/m"));
    joined(&events, 3);
    let mut echo = ws(addr, "/echo");
    let during = scrape(addr);
    assert_eq!(during.get("wshub_clients{endpoint=ws}"), 3.0);
    assert_eq!(during.get("wshub_clients{endpoint=echo}"), 1.0);
    assert_eq!(during.get("wshub_rooms"), 1.0);
    assert_eq!(during.get("wshub_upgrades_total"), 4.0);

    let messages: Vec<String> = (0..5).map(|i| format!("hello {i}")).collect();
    for m in &messages {
        text(&mut a, m);
    }
    for ws in [&mut b, &mut c] {
        for m in &messages {
            assert_eq!(next(ws), Message::text(m.as_str()));
        }
    }
    text(&mut echo, "ping?");
    assert_eq!(next(&mut echo), Message::text("ping?"));
    let payload: usize = messages.iter().map(String::len).sum();
    // A small server frame is its payload and a 2-byte header.
    let frames = payload + 2 * messages.len();
    eventually("the lanes have counted their bursts", || {
        scrape(addr).get("wshub_messages_delivered_total") == 11.0
    });
    let after = scrape(addr);
    assert_eq!(after.get("wshub_messages_received_total"), 6.0);
    assert_eq!(
        after.get("wshub_received_bytes_total"),
        (payload + "ping?".len()) as f64
    );
    assert_eq!(
        after.get("wshub_delivered_bytes_total"),
        (2 * frames + "ping?".len() + 2) as f64
    );
    assert_eq!(after.get("wshub_history_messages"), 5.0);
    assert_eq!(after.get("wshub_history_bytes"), frames as f64);
    assert_eq!(after.get("wshub_deliveries_refused_total"), 0.0);

    // Refusals, by status: a handshake from a foreign origin, a missing file.
    let foreign = try_ws(addr, "/ws/m", &[("Origin", "http://evil.example")]);
    assert!(foreign.is_err());
    assert_eq!(status(&get(addr, "/no-such-file", "")), 404);
    // Closes, by code and side.
    close(&mut a);
    drop(echo);
    eventually("the closes are counted", || {
        let s = scrape(addr);
        s.get("wshub_closes_total{by=peer,code=1000}") == 1.0
            && s.get("wshub_closes_total{by=peer,code=1006}") == 1.0
    });
    let end = scrape(addr);
    assert_eq!(end.get("wshub_handshakes_refused_total{status=403}"), 1.0);
    assert_eq!(end.get("wshub_http_refused_total{status=403}"), 1.0);
    assert_eq!(end.get("wshub_http_refused_total{status=404}"), 1.0);
    assert_eq!(end.get("wshub_handshakes_refused_total{status=404}"), 0.0);
    assert_eq!(end.get("wshub_clients{endpoint=ws}"), 2.0);
    assert_eq!(end.get("wshub_clients{endpoint=echo}"), 0.0);
    assert_eq!(end.get("wshub_closes_total{by=server,code=1000}"), 0.0);
}

#[test]
fn a_silent_client_counts_as_a_ping_timeout() {
    let server = start(
        config()
            .ping_interval(Duration::from_millis(200))
            .pong_timeout(Duration::from_millis(600)),
    );
    let addr = server.local_addr();
    // Upgraded, then never reads nor answers a ping.
    let _silent = raw_ws(addr, "/ws/quiet");
    eventually("the ping timeout is counted", || {
        scrape(addr).get("wshub_ping_timeouts_total") == 1.0
    });
    let s = scrape(addr);
    assert_eq!(s.get("wshub_closes_total{by=server,code=1001}"), 1.0);
    assert_eq!(s.get("wshub_clients{endpoint=ws}"), 0.0);
}

#[test]
fn a_full_queue_counts_refused_deliveries_and_the_eviction() {
    let server = start(config().send_queue(4).send_queue_bytes(1 << 20));
    let addr = server.local_addr();
    let events = server.events();
    // `stuck` never reads: its socket buffers fill, then its queue.
    let _stuck = raw_ws(addr, "/ws/full");
    let mut sender = ws(addr, "/ws/full");
    joined(&events, 2);
    let big = "x".repeat(64 << 10);
    eventually("the stuck client is evicted", || {
        for _ in 0..16 {
            text(&mut sender, &big);
        }
        // Read without the parser here: this loop runs many times.
        get(addr, "/metrics", "").contains("\nwshub_evicted_queue_full_total 1\n")
    });
    assert!(scrape(addr).get("wshub_deliveries_refused_total") >= 1.0);
}

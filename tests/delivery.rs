//! The delivery path: what the socket does not take at once goes to the
//! client's writer, which sends it first (see also tests/wakeups.rs).

mod common;

use common::*;
use tungstenite::Message;

#[test]
fn messages_cut_by_a_full_socket_arrive_whole_and_in_order() {
    let server = start(config().send_queue(4096));
    let events = server.events();
    let addr = server.local_addr();
    let mut a = ws(addr, "/ws/full");
    let mut b = ws(addr, "/ws/full");
    joined(&events, 2);
    // 40 KiB messages are written by the hub while b's socket has room;
    // b reads nothing until a has sent them all, so its socket fills up
    // mid-message and the rest of that message goes to b's writer.
    const N: usize = 300;
    const SIZE: usize = 40 << 10;
    let body = |i: usize| -> Vec<u8> {
        (0..SIZE)
            .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
            .collect()
    };
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            a.send(Message::binary(body(i))).unwrap();
        }
        a
    });
    let mut a = sender.join().expect("a sent everything");
    for i in 0..N {
        match next(&mut b) {
            Message::Binary(got) => assert!(got[..] == body(i)[..], "message {i} differs"),
            other => panic!("message {i}: expected binary, got {other:?}"),
        }
    }
    close(&mut a);
    close(&mut b);
}

//! The connection threads' stacks (`--thread-stack-bytes`) hold the
//! deepest paths with room to spare: a server given half the default (in
//! an optimized build, what ships; a debug build's frames are several
//! times larger, and it gets the default) runs them — a token checked in
//! the upgrade, a 16 MiB message sent compressed in fragments and inflated
//! by its reader, the same message written to a receiver by the writer
//! thread it then needs — and delivers the message whole. An overflow
//! would abort this test's whole process.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::deflate::{client_frame, deflate, raw_offering};
use common::*;
use jsonwebtoken::{EncodingKey, Header};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use wshub::auth::Secret;
use wshub::defaults;

const SECRET: &[u8] = b"a secret of the test's own, 32 bytes";
const BIG: usize = 16 << 20;
const FRAGMENTS: usize = 16;
const STACK: usize = if cfg!(debug_assertions) {
    defaults::THREAD_STACK_BYTES
} else {
    defaults::THREAD_STACK_BYTES / 2
};

fn token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let claims = serde_json::json!({ "sub": "deep", "exp": now.as_secs() + 3600 });
    let key = EncodingKey::from_secret(SECRET).unwrap();
    jsonwebtoken::encode(&Header::default(), &claims, &key).expect("a token")
}

/// 16 MiB of varied JSON lines (ASCII), so that inflating does real work.
fn big_text() -> String {
    let mut text = String::with_capacity(BIG + 64);
    let mut i = 0u64;
    while text.len() < BIG {
        let n = i.wrapping_mul(2_654_435_761) % 1_000_003;
        text.push_str(&format!(
            "{{\"seq\":{i},\"from\":\"user-{}\",\"v\":{n}}}\n",
            i % 97
        ));
        i += 1;
    }
    text.truncate(BIG);
    text
}

#[test]
fn the_deepest_paths_run_on_half_the_default_stack_in_an_optimized_build() {
    let server = start(
        config()
            .thread_stack_bytes(STACK)
            .compression(true)
            .auth_secret(Secret::new(SECRET))
            .max_message_bytes(BIG),
    );
    let addr = server.local_addr();
    let events = server.events();
    let path = format!("/ws/deep?token={}", token());
    let (_, mut sender) = raw_offering(addr, &path, "permessage-deflate");
    let mut receiver = ws(addr, &path);
    joined(&events, 2);

    let text = big_text();
    let deflated = deflate(text.as_bytes());
    let piece = deflated.len().div_ceil(FRAGMENTS);
    for (i, chunk) in deflated.chunks(piece).enumerate() {
        let (first, last) = (i == 0, (i + 1) * piece >= deflated.len());
        let opcode = if first { Data::Text } else { Data::Continue };
        let frame = client_frame(OpCode::Data(opcode), first, last, chunk.to_vec());
        sender.send(frame).expect("a fragment sent");
    }
    match next(&mut receiver) {
        Message::Text(got) => {
            assert_eq!(got.len(), BIG);
            assert!(got.as_str() == text, "the message arrives unchanged");
        }
        other => panic!("expected the 16 MiB text, got {other:?}"),
    }
    // Neither connection was lost on the way.
    assert_eq!(server.handle().client_count(), 2);
}

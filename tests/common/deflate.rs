//! A raw permessage-deflate client for the tests: the upgrade with an
//! extension offer, frames built and compressed by hand (flate2), so that
//! every bit on the wire is the test's own.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use flate2::{Compress, Compression, FlushCompress};
use tungstenite::handshake::client::generate_key;
use tungstenite::protocol::frame::coding::OpCode;
use tungstenite::protocol::frame::{Frame, FrameHeader, FrameSocket};

use super::STEP;

/// A raw client that offered `offer`; the response head and the socket.
pub fn raw_offering(addr: SocketAddr, path: &str, offer: &str) -> (String, FrameSocket<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\
         Sec-WebSocket-Extensions: {offer}\r\n\r\n",
        generate_key()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (head, FrameSocket::new(s))
}

/// Raw deflate with a sync flush, the tail removed (RFC 7692 §7.2.1).
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    // Room for the worst case, so that one call completes the flush.
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 128);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, data.len());
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame with RSV1 as given.
pub fn client_frame(opcode: OpCode, rsv1: bool, fin: bool, payload: Vec<u8>) -> Frame {
    let header = FrameHeader {
        is_final: fin,
        rsv1,
        opcode,
        mask: Some([7, 1, 9, 3]),
        ..FrameHeader::default()
    };
    Frame::from_payload(header, payload.into())
}

/// The next data frame the server sends (pings skipped).
pub fn next_data(socket: &mut FrameSocket<TcpStream>) -> Frame {
    loop {
        let frame = socket
            .read(None)
            .expect("a frame")
            .expect("the connection stays open");
        if let OpCode::Data(_) = frame.header().opcode {
            return frame;
        }
    }
}

//! [`Frame`]: one complete WebSocket frame, header and payload, encoded
//! once. A server frame is unmasked, so one broadcast frame serves every
//! receiver, and cloning it is a reference-count bump on the payload. A
//! frame may carry its charge against the memory budget (released with
//! its last clone) and, with compression on, its deflated form, made at
//! most once by the first writer to a compressing receiver.
//!
//! May touch: nothing (values only; the deflated form is made on the
//! caller's thread).

use std::io::{self, IoSlice};
use std::sync::{Arc, OnceLock};

use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame as TFrame, FrameHeader};
use tungstenite::protocol::{Message, Role};

use crate::deflate::{self, Agreement};
use crate::memory::{Charge, Memory};

/// A complete WebSocket frame ready for the wire.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    head: [u8; 14],
    head_len: u8,
    close: bool,
    body: Bytes,
    /// Counts the frame against the server's memory budget while any
    /// queue holds it (see `memory`); shared by every clone.
    charge: Option<Arc<Charge>>,
    /// With compression on: the same message deflated, made once by the
    /// first writer to a compressing receiver and shared by every clone.
    deflated: Option<Arc<Deflated>>,
}

/// A message's deflated frame, made at most once.
pub(crate) struct Deflated {
    frame: OnceLock<Option<Frame>>,
    level: u32,
    counts: Arc<deflate::Counts>,
}

impl std::fmt::Debug for Deflated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflated")
            .field("frame", &self.frame)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl Frame {
    /// Encodes a frame for `role`. Server frames share `payload`; client
    /// frames are masked, which costs one copy.
    pub(crate) fn encode(role: Role, opcode: OpCode, payload: Bytes) -> Frame {
        Frame::encode_with(role, opcode, false, payload)
    }

    /// [`encode`](Self::encode), with RSV1 as given (a message deflated
    /// by the sender).
    pub(super) fn encode_with(role: Role, opcode: OpCode, rsv1: bool, payload: Bytes) -> Frame {
        let close = opcode == OpCode::Control(Control::Close);
        let header = FrameHeader {
            opcode,
            rsv1,
            ..FrameHeader::default()
        };
        let mut frame = TFrame::from_payload(header, payload);
        if role == Role::Client {
            frame.header_mut().mask = Some(crate::random::mask());
            let mut out = Vec::with_capacity(frame.len());
            // Formatting into a Vec cannot fail.
            let _ = frame.format(&mut out);
            return Frame {
                head: [0; 14],
                head_len: 0,
                close,
                body: Bytes::from(out),
                charge: None,
                deflated: None,
            };
        }
        let mut head = [0u8; 14];
        let mut cursor = io::Cursor::new(&mut head[..]);
        let len = frame.payload().len() as u64;
        // A header is at most 10 bytes unmasked: writing into 14 cannot fail.
        let _ = frame.header().format(len, &mut cursor);
        let head_len = cursor.position() as u8;
        Frame {
            head,
            head_len,
            close,
            body: frame.into_payload(),
            charge: None,
            deflated: None,
        }
    }

    /// Bytes already encoded (the unwritten rest of a partial write): they
    /// go out as they are.
    pub(crate) fn raw(bytes: Bytes) -> Frame {
        Frame {
            head: [0; 14],
            head_len: 0,
            close: false,
            body: bytes,
            charge: None,
            deflated: None,
        }
    }

    /// A server data frame whose deflated form is made when a compressing
    /// receiver first needs it, at `level`.
    pub(crate) fn make_deflatable(&mut self, level: u32, counts: &Arc<deflate::Counts>) {
        if self.head_len > 0 && !self.close && self.head[1] & 0x80 == 0 {
            self.deflated = Some(Arc::new(Deflated {
                frame: OnceLock::new(),
                level,
                counts: counts.clone(),
            }));
        }
    }

    /// The frame to write to a receiver that agreed to `agreement`: the
    /// deflated form when there is one and it may be used, else this.
    pub(crate) fn for_receiver(&self, agreement: Option<Agreement>) -> &Frame {
        let (Some(agreement), Some(deflated)) = (agreement, &self.deflated) else {
            return self;
        };
        if !agreement.may_compress(self.body.len()) {
            return self;
        }
        let made = deflated.frame.get_or_init(|| {
            let compressed = deflate::compress(&self.body, deflated.level)?;
            deflated.counts.deflated(self.body.len(), compressed.len());
            let opcode = OpCode::from(self.head[0] & 0x0f);
            Some(Frame::encode_compressed(
                Role::Server,
                opcode,
                Bytes::from(compressed),
            ))
        });
        made.as_ref().unwrap_or(self)
    }

    /// Makes the deflated form now, if this frame may have one: for a
    /// burst that several lanes deliver at once, so that none of them
    /// waits for another to finish compressing it.
    pub(crate) fn prepare_deflated(&self) {
        let any = Agreement {
            send_window_bits: 15,
            peer_takes_over: false,
        };
        let _ = self.for_receiver(Some(any));
    }

    /// A frame with RSV1 set, for a message deflated by the sender
    /// (masked for a client, as `encode` does).
    pub(crate) fn encode_compressed(role: Role, opcode: OpCode, payload: Bytes) -> Frame {
        Frame::encode_with(role, opcode, true, payload)
    }

    /// The same frame, not counted against the memory budget (for copies
    /// kept outside any queue, such as a room's history).
    pub(crate) fn uncharged(&self) -> Frame {
        Frame {
            charge: None,
            ..self.clone()
        }
    }

    /// Counts this frame against `memory` until its last clone is gone.
    pub(crate) fn charged(mut self, memory: &Arc<Memory>) -> Frame {
        self.charge = Some(Charge::new(memory, self.len()));
        self
    }

    /// Encodes a text or binary message; other kinds are refused.
    pub(crate) fn data(role: Role, message: &Message) -> Option<Frame> {
        match message {
            Message::Text(t) => Some(Frame::encode(
                role,
                OpCode::Data(Data::Text),
                t.clone().into(),
            )),
            Message::Binary(b) => Some(Frame::encode(role, OpCode::Data(Data::Binary), b.clone())),
            _ => None,
        }
    }

    /// Encodes a Close frame (code and reason, or empty).
    pub(crate) fn close(role: Role, close: Option<&CloseFrame>) -> Frame {
        let mut payload = Vec::new();
        if let Some(c) = close {
            payload.extend_from_slice(&u16::from(c.code).to_be_bytes());
            // Control payloads are capped at 125 bytes; cut the reason on a char boundary.
            let mut reason: &str = &c.reason;
            while reason.len() > 123 {
                let mut end = 123;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason = &reason[..end];
            }
            payload.extend_from_slice(reason.as_bytes());
        }
        Frame::encode(role, OpCode::Control(Control::Close), Bytes::from(payload))
    }

    /// Encodes an empty Ping.
    pub(crate) fn ping(role: Role) -> Frame {
        Frame::encode(role, OpCode::Control(Control::Ping), Bytes::new())
    }

    /// True for the bytes [`Frame::raw`] made.
    pub(crate) fn is_raw(&self) -> bool {
        self.head_len == 0 && !self.close
    }

    /// True for a Close frame: nothing may follow it on the wire.
    pub(crate) fn is_close(&self) -> bool {
        self.close
    }

    /// The payload (for tests that look at what was queued).
    #[cfg(test)]
    pub(crate) fn payload(&self) -> &[u8] {
        &self.body
    }

    /// Bytes on the wire.
    pub(crate) fn len(&self) -> usize {
        self.head_len as usize + self.body.len()
    }

    pub(super) fn slices(&self) -> [IoSlice<'_>; 2] {
        [
            IoSlice::new(&self.head[..self.head_len as usize]),
            IoSlice::new(&self.body),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::CloseCode;

    fn wire_bytes(f: &Frame) -> Vec<u8> {
        f.slices().iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn server_frames_match_rfc_examples() {
        // RFC 6455 5.7: unmasked "Hello".
        let f = Frame::encode(
            Role::Server,
            OpCode::Data(Data::Text),
            Bytes::from_static(b"Hello"),
        );
        assert_eq!(wire_bytes(&f), b"\x81\x05Hello");
        // 256 bytes binary uses the 16-bit length form.
        let f = Frame::encode(
            Role::Server,
            OpCode::Data(Data::Binary),
            Bytes::from(vec![0u8; 256]),
        );
        assert_eq!(&wire_bytes(&f)[..4], b"\x82\x7e\x01\x00");
        assert_eq!(f.len(), 260);
    }

    #[test]
    fn close_reason_is_capped_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let cf = CloseFrame {
            code: CloseCode::Normal,
            reason: reason.into(),
        };
        let f = Frame::close(Role::Server, Some(&cf));
        let bytes = wire_bytes(&f);
        assert!(bytes.len() - 2 <= 125);
        assert!(std::str::from_utf8(&bytes[4..]).is_ok());
    }

    #[test]
    fn client_frames_are_masked() {
        let f = Frame::encode(
            Role::Client,
            OpCode::Data(Data::Text),
            Bytes::from_static(b"Hello"),
        );
        let b = wire_bytes(&f);
        assert_eq!(b[0], 0x81);
        assert_eq!(b[1], 0x85);
        let mask = &b[2..6];
        let unmasked: Vec<u8> = b[6..]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ mask[i % 4])
            .collect();
        assert_eq!(unmasked, b"Hello");
    }
}

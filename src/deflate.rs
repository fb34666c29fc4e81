//! permessage-deflate (RFC 7692), beside tungstenite rather than inside it.
//!
//! tungstenite 0.30 has no deflate support and its reader refuses any
//! frame with RSV1 set; so this module does the extension around it:
//! * negotiation ([`negotiate`] on the server, [`offer`] and [`accept`]
//!   on the dialling side): the server always answers
//!   `server_no_context_takeover` — every message is compressed on its
//!   own, so a broadcast is compressed **once** and the same bytes go to
//!   every compressing receiver — and by default `client_no_context_takeover`
//!   (no inflate window kept per idle connection);
//! * the write side ([`compress`]): raw deflate with a sync flush, the
//!   trailing `00 00 ff ff` removed, on a compressor kept per thread;
//! * the read side ([`Inflater`]): a layer below tungstenite's context
//!   that parses the peer's frames, inflates RSV1 messages (fragmented or
//!   not) into plain frames for the context, passes everything else
//!   through unchanged, and refuses what RFC 7692 forbids.
//!
//! Invariants: nothing is inflated past the message limit (a
//! decompression bomb stops there, with 1009); at most [`OUTPUT_MAX`]
//! inflated bytes wait for the context at a time; a window smaller than
//! the compressor's (a peer's `*_max_window_bits` below 15) is honoured by
//! compressing only messages no longer than that window.
//!
//! May touch: the bytes it is given, the calling thread's compressor
//! ([`compress`]), and the [`Counts`] an [`Inflater`] was given
//! ([`Inflater::counted`]), where it adds each message it inflates (the
//! other counts are added by their callers); nothing else.

use std::cell::RefCell;
use std::io;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tungstenite::http::{HeaderMap, header};
use tungstenite::protocol::Role;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::memory::Refusal;

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// What a sync flush ends with; removed on sending, put back to inflate.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Inflated bytes at most waiting for the context.
pub(crate) const OUTPUT_MAX: usize = 64 << 10;

/// Inflated bytes per emitted frame at most.
const CHUNK: usize = 16 << 10;

/// The largest window (bits) of flate2's deflate.
const MAX_WINDOW_BITS: u8 = 15;

/// What both sides agreed on, as seen from this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreement {
    /// The window (bits) our compressor may use: we compress only messages
    /// no longer than `1 << bits` when it is below 15.
    pub send_window_bits: u8,
    /// Whether the peer keeps its compression context between messages
    /// (then our inflater must keep its window too).
    pub peer_takes_over: bool,
}

impl Agreement {
    /// Whether a message of `len` bytes may be sent compressed.
    pub(crate) fn may_compress(&self, len: usize) -> bool {
        self.send_window_bits >= MAX_WINDOW_BITS || len <= 1 << self.send_window_bits
    }
}

/// One `name[=value]` parameter of an offer.
fn params(offer: &str) -> (&str, Vec<(&str, Option<&str>)>) {
    let mut parts = offer.split(';').map(str::trim);
    let name = parts.next().unwrap_or("");
    let params = parts
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        })
        .collect();
    (name, params)
}

fn window_bits(value: Option<&str>) -> Option<u8> {
    let bits: u8 = value?.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// Every extension offer of `headers`, in order.
fn offers(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The server's answer to a client's offers (RFC 7692 §7): the first
/// `permessage-deflate` offer whose parameters are all known and valid,
/// as the agreement and the `Sec-WebSocket-Extensions` value to send;
/// `None` to go on uncompressed. `client_takeover` allows the client to
/// keep its context (better ratios, a window kept per connection here).
pub(crate) fn negotiate(headers: &HeaderMap, client_takeover: bool) -> Option<(Agreement, String)> {
    'offers: for offer in offers(headers) {
        let (name, params) = params(offer);
        if name != NAME {
            continue;
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut server_bits = None;
        let mut client_no_takeover = false;
        for (key, value) in params {
            if seen.contains(&key) {
                continue 'offers;
            }
            seen.push(key);
            match (key, value) {
                ("server_no_context_takeover", None) => {}
                ("client_no_context_takeover", None) => client_no_takeover = true,
                ("server_max_window_bits", v) => match window_bits(v) {
                    Some(bits) => server_bits = Some(bits),
                    None => continue 'offers,
                },
                // We inflate with the largest window: any the client uses fits.
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", v) if window_bits(v).is_some() => {}
                _ => continue 'offers,
            }
        }
        let no_client_takeover = client_no_takeover || !client_takeover;
        let mut answer = format!("{NAME}; server_no_context_takeover");
        if no_client_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = server_bits {
            answer.push_str(&format!("; server_max_window_bits={bits}"));
        }
        let agreement = Agreement {
            send_window_bits: server_bits.unwrap_or(MAX_WINDOW_BITS),
            peer_takes_over: !no_client_takeover,
        };
        return Some((agreement, answer));
    }
    None
}

/// What the dialling side offers.
pub(crate) fn offer() -> &'static str {
    "permessage-deflate; client_max_window_bits"
}

/// The dialling side's reading of the server's answer: `Ok(None)` when it
/// declined, an error for an answer we did not offer (RFC 7692 §5: the
/// client then fails the connection).
pub(crate) fn accept(headers: &HeaderMap) -> Result<Option<Agreement>, String> {
    let mut answers = offers(headers).filter(|a| !a.is_empty());
    let Some(answer) = answers.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Err(format!(
            "bad Sec-WebSocket-Extensions answer {answer:?}: {why}"
        ))
    };
    if answers.next().is_some() {
        return bad("more than one extension");
    }
    let (name, params) = params(answer);
    if name != NAME {
        return bad("an extension we did not offer");
    }
    let mut agreement = Agreement {
        send_window_bits: MAX_WINDOW_BITS,
        peer_takes_over: true,
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in params {
        if seen.contains(&key) {
            return bad("a repeated parameter");
        }
        seen.push(key);
        match (key, value) {
            ("server_no_context_takeover", None) => agreement.peer_takes_over = false,
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", v) if window_bits(v).is_some() => {}
            ("client_max_window_bits", v) => match window_bits(v) {
                Some(bits) => agreement.send_window_bits = bits,
                None => return bad("a bad client_max_window_bits"),
            },
            _ => return bad("an unknown or malformed parameter"),
        }
    }
    Ok(Some(agreement))
}

thread_local! {
    /// One compressor per thread that compresses (lanes, writers, the
    /// echo readers), reset between messages: a deflate state is hundreds
    /// of KiB, too much to make per message.
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// `payload` deflated on its own (no context from earlier messages), the
/// sync flush's `00 00 ff ff` removed; `None` when that is not smaller.
pub(crate) fn compress(payload: &[u8], level: u32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match cell.as_mut() {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            _ => {
                &mut cell
                    .insert((level, Compress::new(Compression::new(level), false)))
                    .1
            }
        };
        // Room for the worst case (stored blocks, the flush's marker) in
        // one call: a sync flush resumed across calls with a full buffer
        // is where deflate implementations differ, so it is never done.
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 8 + 128);
        let status = compressor
            .compress_vec(payload, &mut out, FlushCompress::Sync)
            .ok()?;
        let complete = compressor.total_in() as usize == payload.len()
            && out.len() < out.capacity()
            && out.ends_with(&TAIL);
        if status != Status::Ok || !complete {
            // Sent plain instead: always correct.
            return None;
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        (out.len() < payload.len()).then_some(out)
    })
}

/// Where the inflater is in the peer's byte stream.
#[derive(Debug)]
enum At {
    Header,
    /// Inside a frame's payload.
    Payload(Payload),
    /// Bytes that did not parse as a frame: handed on as they are, for
    /// tungstenite to refuse.
    Garbage,
}

/// The frame whose payload the inflater is in: bytes left, whether they
/// are deflated, whether the frame is final, its mask and how far into it
/// we are.
#[derive(Debug, Clone, Copy)]
struct Payload {
    left: u64,
    deflated: bool,
    fin: bool,
    mask: Option<[u8; 4]>,
    offset: usize,
}

/// What compression did on one server, counted where it happens and
/// read by the metrics: connections that agreed, messages deflated for
/// sending (once per broadcast) and compressed messages received, with
/// their payload bytes uncompressed and compressed.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) negotiated: AtomicU64,
    pub(crate) deflated: AtomicU64,
    pub(crate) deflated_plain: AtomicU64,
    pub(crate) deflated_compressed: AtomicU64,
    pub(crate) inflated: AtomicU64,
    pub(crate) inflated_plain: AtomicU64,
    pub(crate) inflated_compressed: AtomicU64,
}

impl Counts {
    /// A connection agreed to permessage-deflate.
    pub(crate) fn negotiated(&self) {
        self.negotiated.fetch_add(1, Ordering::Relaxed);
    }

    /// A message deflated for sending: `plain` payload bytes became `compressed`.
    pub(crate) fn deflated(&self, plain: usize, compressed: usize) {
        self.deflated.fetch_add(1, Ordering::Relaxed);
        self.deflated_plain
            .fetch_add(plain as u64, Ordering::Relaxed);
        self.deflated_compressed
            .fetch_add(compressed as u64, Ordering::Relaxed);
    }

    /// A compressed message received: `compressed` bytes inflated to `plain`.
    pub(crate) fn inflated(&self, compressed: usize, plain: usize) {
        self.inflated.fetch_add(1, Ordering::Relaxed);
        self.inflated_compressed
            .fetch_add(compressed as u64, Ordering::Relaxed);
        self.inflated_plain
            .fetch_add(plain as u64, Ordering::Relaxed);
    }
}

/// The read side of the extension: fed the peer's raw bytes, it yields
/// the frames tungstenite's context should see.
pub(crate) struct Inflater {
    /// The role of the side reading: a server reads masked client frames.
    role: Role,
    /// Largest inflated message.
    limit: usize,
    agreement: Agreement,
    input: Vec<u8>,
    /// Where unread input starts.
    pos: usize,
    output: Vec<u8>,
    /// Where unread output starts.
    out_pos: usize,
    at: At,
    /// Deflated bytes of the current message, unmasked, not inflated yet.
    pending: Vec<u8>,
    /// The message's last frame has been read (its tail is in `pending`).
    finishing: bool,
    /// Inflating a message now, and how many bytes it came to so far.
    message: Option<usize>,
    /// Whether that message is text (a corrupt one is then 1007, else 1002).
    text: bool,
    inflate: Option<Box<Decompress>>,
    chunk: Vec<u8>,
    /// The last `work` stopped for want of input.
    stalled: bool,
    /// Compressed bytes of the message being inflated.
    received: usize,
    counts: Option<Arc<Counts>>,
    /// What is pending is an unfinished deflate block: more payload first.
    partial: bool,
}

/// How far inflating what is pending got.
enum Inflated {
    /// Enough output waits: stop for now.
    OutputFull,
    /// All of it is in.
    Drained,
    /// What is left is an unfinished block.
    NeedMore,
}

impl Inflater {
    /// An inflater for the side of `role`, refusing messages that inflate
    /// past `limit` bytes.
    pub(crate) fn new(role: Role, limit: usize, agreement: Agreement) -> Inflater {
        Inflater {
            role,
            limit,
            agreement,
            input: Vec::new(),
            pos: 0,
            output: Vec::new(),
            out_pos: 0,
            at: At::Header,
            pending: Vec::new(),
            finishing: false,
            message: None,
            text: false,
            inflate: None,
            chunk: Vec::new(),
            stalled: true,
            partial: false,
            received: 0,
            counts: None,
        }
    }

    /// Counts every inflated message in `counts`.
    pub(crate) fn counted(mut self, counts: Arc<Counts>) -> Inflater {
        self.counts = Some(counts);
        self
    }

    /// Bytes that came with the handshake: worked through on the first read.
    pub(crate) fn preload(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.stalled = false;
    }

    /// Copies out frames ready for the context; 0 when none are.
    pub(crate) fn read_out(&mut self, buf: &mut [u8]) -> usize {
        let ready = &self.output[self.out_pos..];
        let n = ready.len().min(buf.len());
        buf[..n].copy_from_slice(&ready[..n]);
        self.out_pos += n;
        if self.out_pos == self.output.len() {
            self.output.clear();
            self.out_pos = 0;
        }
        n
    }

    /// Takes bytes read from the peer and works through them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.input.extend_from_slice(bytes);
        self.stalled = false;
        self.work()
    }

    /// Works through what is buffered until output is waiting or more
    /// input is needed. (Call when `read_out` gives 0, before reading.)
    pub(crate) fn work(&mut self) -> io::Result<()> {
        let result = self.step();
        if self.pos > 0 && (self.pos == self.input.len() || self.pos >= 4096) {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        result.map_err(io::Error::other)
    }

    /// Whether what is buffered can be worked through further without
    /// reading more (the last `work` stopped because output was waiting).
    pub(crate) fn has_work(&self) -> bool {
        !self.stalled
    }

    fn waiting(&self) -> usize {
        self.output.len() - self.out_pos
    }

    /// Runs the state machine until output is waiting or more input is
    /// needed: inflating what is pending comes first (unless it is an
    /// unfinished block), then a move in the byte stream from where it is.
    fn step(&mut self) -> Result<(), Refusal> {
        self.stalled = false;
        loop {
            if self.waiting() >= OUTPUT_MAX {
                return Ok(());
            }
            let flow = if (!self.pending.is_empty() || self.finishing) && !self.partial {
                self.step_pending()?
            } else {
                match self.at {
                    At::Garbage => self.step_garbage(),
                    At::Header => self.step_header()?,
                    At::Payload(payload) => self.step_payload(payload),
                }
            };
            if flow.is_break() {
                return Ok(());
            }
        }
    }

    /// Inflates what is pending; ends the message once its tail is in and
    /// inflated. Breaks when enough output waits.
    fn step_pending(&mut self) -> Result<ControlFlow<()>, Refusal> {
        match self.inflate_pending()? {
            Inflated::OutputFull => return Ok(ControlFlow::Break(())),
            Inflated::NeedMore if !self.finishing => self.partial = true,
            // With the tail in, nothing more can come.
            Inflated::NeedMore | Inflated::Drained => {
                if self.finishing {
                    self.end_message();
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// [`At::Garbage`]: hands on all the input as it is. Breaks.
    fn step_garbage(&mut self) -> ControlFlow<()> {
        self.output.extend_from_slice(&self.input[self.pos..]);
        self.pos = self.input.len();
        ControlFlow::Break(())
    }

    /// [`At::Header`]: parses the next frame header and begins its frame;
    /// what does not parse makes the rest garbage. Breaks (stalled) while
    /// the header is incomplete.
    fn step_header(&mut self) -> Result<ControlFlow<()>, Refusal> {
        let mut cursor = io::Cursor::new(&self.input[self.pos..]);
        match FrameHeader::parse(&mut cursor) {
            Ok(None) => {
                self.stalled = true;
                return Ok(ControlFlow::Break(()));
            }
            Err(_) => self.at = At::Garbage,
            Ok(Some((header, len))) => {
                let used = cursor.position() as usize;
                self.begin_frame(header, len, used)?;
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// [`At::Payload`]: takes what input there is of the payload, deflated
    /// bytes (unmasked) into `pending`, plain ones straight to the output;
    /// after the payload, a header. Breaks (stalled) when the input is
    /// used up.
    fn step_payload(&mut self, mut payload: Payload) -> ControlFlow<()> {
        if payload.left == 0 {
            self.at = At::Header;
            return ControlFlow::Continue(());
        }
        let avail = &self.input[self.pos..];
        if avail.is_empty() {
            self.stalled = true;
            return ControlFlow::Break(());
        }
        let take = payload.left.min(avail.len() as u64) as usize;
        let bytes = &avail[..take];
        if payload.deflated {
            self.partial = false;
            self.received += take;
            match payload.mask {
                Some(key) => self.pending.extend(
                    bytes
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ key[(payload.offset + i) % 4]),
                ),
                None => self.pending.extend_from_slice(bytes),
            }
        } else {
            self.output.extend_from_slice(bytes);
        }
        payload.left -= take as u64;
        payload.offset += take;
        self.pos += take;
        if payload.left == 0 {
            if payload.deflated && payload.fin {
                self.tail_in();
            }
            self.at = At::Header;
        } else {
            self.at = At::Payload(payload);
        }
        ControlFlow::Continue(())
    }

    /// The last frame of a deflated message is in: the sync flush's tail
    /// goes after it, and the message ends once that is inflated.
    fn tail_in(&mut self) {
        self.pending.extend_from_slice(&TAIL);
        self.finishing = true;
        self.partial = false;
    }

    /// A frame header of `used` bytes at `pos`, with `len` payload bytes.
    fn begin_frame(&mut self, header: FrameHeader, len: u64, used: usize) -> Result<(), Refusal> {
        let protocol = |why: &'static str| Err(Refusal::Protocol(why));
        let deflated = match header.opcode {
            OpCode::Control(_) => {
                if header.rsv1 {
                    return protocol("RSV1 set on a control frame");
                }
                false
            }
            OpCode::Data(Data::Continue) => {
                if header.rsv1 {
                    return protocol("RSV1 set on a continuation frame");
                }
                self.message.is_some()
            }
            OpCode::Data(data) => {
                let starts = header.rsv1 && !header.rsv2 && !header.rsv3;
                if starts {
                    if self.message.is_some() {
                        // tungstenite would refuse a new message here too.
                        return protocol("a new message inside a fragmented one");
                    }
                    self.message = Some(0);
                    self.text = data == Data::Text;
                    // An empty first fragment right away: the context (and
                    // the memory tracker, with its message deadline) see
                    // the message begin before any of it is inflated.
                    self.emit(OpCode::Data(data), false, &[]);
                }
                starts
            }
        };
        if deflated && len > (self.limit as u64).saturating_add(1 << 10) {
            return Err(Refusal::TooBig);
        }
        if !deflated {
            // As it came: tungstenite checks the rest.
            let raw = &self.input[self.pos..self.pos + used];
            self.output.extend_from_slice(raw);
        }
        self.pos += used;
        self.at = At::Payload(Payload {
            left: len,
            deflated,
            fin: header.is_final,
            mask: header.mask,
            offset: 0,
        });
        if deflated && len == 0 && header.is_final {
            self.tail_in();
            self.at = At::Header;
        }
        Ok(())
    }

    /// Inflates what is pending, in chunks, until it is all in or enough
    /// output waits.
    fn inflate_pending(&mut self) -> Result<Inflated, Refusal> {
        let keep = self.agreement.peer_takes_over;
        let mask = self.mask();
        let inflate = self
            .inflate
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        loop {
            if self.output.len() - self.out_pos >= OUTPUT_MAX {
                return Ok(Inflated::OutputFull);
            }
            self.chunk.clear();
            self.chunk.reserve(CHUNK);
            let before = inflate.total_in();
            let status = inflate
                .decompress_vec(&self.pending, &mut self.chunk, FlushDecompress::None)
                .map_err(|_| Refusal::Corrupt { text: self.text })?;
            let used = (inflate.total_in() - before) as usize;
            self.pending.drain(..used);
            let produced = self.chunk.len();
            let total = self.message.unwrap_or(0) + produced;
            if total > self.limit {
                return Err(Refusal::TooBig);
            }
            self.message = Some(total);
            if produced > 0 {
                let continuation = OpCode::Data(Data::Continue);
                emit(&mut self.output, mask, continuation, false, &self.chunk);
            }
            if status == Status::StreamEnd {
                // A final deflate block: what follows starts afresh.
                inflate.reset(false);
                if !keep {
                    self.pending.clear();
                }
            }
            if self.pending.is_empty() && produced < CHUNK {
                return Ok(Inflated::Drained);
            }
            if used == 0 && produced == 0 {
                // Only a partial block is pending: more input needed.
                return Ok(Inflated::NeedMore);
            }
        }
    }

    /// Ends the message being inflated with an empty final fragment.
    fn end_message(&mut self) {
        if let (Some(counts), Some(inflated)) = (&self.counts, self.message) {
            counts.inflated(self.received, inflated);
        }
        self.received = 0;
        self.finishing = false;
        self.partial = false;
        self.message = None;
        self.emit(OpCode::Data(Data::Continue), true, &[]);
        if !self.agreement.peer_takes_over {
            // No window kept between messages.
            self.inflate = None;
            self.pending = Vec::new();
        }
    }

    /// The mask of frames handed to the context: the peer's role's.
    fn mask(&self) -> Option<[u8; 4]> {
        // A zero key: masking is then the identity, and the context, which
        // insists on client frames being masked, is satisfied.
        (self.role == Role::Server).then_some([0; 4])
    }

    fn emit(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        let mask = self.mask();
        emit(&mut self.output, mask, opcode, fin, payload);
    }

    /// Bytes buffered here (input not worked through, output not read).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.input.len() - self.pos + self.waiting() + self.pending.len()
    }
}

/// Appends a plain frame for the context to `output`.
fn emit(output: &mut Vec<u8>, mask: Option<[u8; 4]>, opcode: OpCode, fin: bool, payload: &[u8]) {
    let header = FrameHeader {
        is_final: fin,
        opcode,
        mask,
        ..FrameHeader::default()
    };
    // Formatting into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, output);
    output.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn the_first_valid_offer_wins_and_bad_ones_are_declined() {
        let (a, answer) = negotiate(&headers("permessage-deflate"), false).unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(!a.peer_takes_over);
        let (a, answer) = negotiate(
            &headers("permessage-deflate; server_max_window_bits=20, permessage-deflate; server_max_window_bits=9; client_max_window_bits"),
            true,
        )
        .unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        assert_eq!(a.send_window_bits, 9);
        assert!(a.peer_takes_over);
        assert!(a.may_compress(512) && !a.may_compress(513));
        for bad in [
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate(&headers(bad), false), None, "{bad}");
        }
    }

    #[test]
    fn the_client_reads_the_answer_strictly() {
        let a = accept(&headers(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(a.send_window_bits, 10);
        assert!(!a.peer_takes_over);
        assert_eq!(accept(&HeaderMap::new()).unwrap(), None);
        assert!(accept(&headers("permessage-deflate; foo")).is_err());
        assert!(accept(&headers("other")).is_err());
    }

    /// A client frame (masked) with these bits.
    fn frame(opcode: OpCode, rsv1: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let header = FrameHeader {
            is_final: fin,
            rsv1,
            opcode,
            mask: Some(key),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// Runs bytes through an inflater and tungstenite's own frame parser.
    fn through(inflater: &mut Inflater, bytes: &[u8]) -> io::Result<Vec<u8>> {
        // Fed in small pieces, as a socket may deliver them.
        for piece in bytes.chunks(7) {
            inflater.feed(piece)?;
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = inflater.read_out(&mut buf);
            if n == 0 {
                if !inflater.has_work() {
                    break;
                }
                inflater.work()?;
                continue;
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    /// What the context reads plain frames from; it writes nothing back.
    struct Rw(io::Cursor<Vec<u8>>);
    impl io::Read for Rw {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl io::Write for Rw {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn message_of(plain: &[u8]) -> Vec<u8> {
        let mut ctx = tungstenite::protocol::WebSocketContext::new(Role::Server, None);
        let mut stream = Rw(io::Cursor::new(plain.to_vec()));
        loop {
            match ctx.read(&mut stream).expect("a message") {
                tungstenite::Message::Text(t) => return t.as_bytes().to_vec(),
                tungstenite::Message::Binary(b) => return b.to_vec(),
                tungstenite::Message::Ping(_) => {}
                m => panic!("{m:?}"),
            }
        }
    }

    fn agreement() -> Agreement {
        Agreement {
            send_window_bits: 15,
            peer_takes_over: false,
        }
    }

    #[test]
    fn a_compressed_fragmented_message_reaches_the_context_plain() {
        let text = "hello ".repeat(500);
        let deflated = compress(text.as_bytes(), 6).expect("it shrinks");
        let (a, b) = deflated.split_at(deflated.len() / 2);
        let mut raw = frame(OpCode::Data(Data::Text), true, false, a);
        // A ping in between passes untouched.
        raw.extend(frame(
            OpCode::Control(tungstenite::protocol::frame::coding::Control::Ping),
            false,
            true,
            b"p",
        ));
        raw.extend(frame(OpCode::Data(Data::Continue), false, true, b));
        let mut inflater = Inflater::new(Role::Server, 1 << 20, agreement());
        let plain = through(&mut inflater, &raw).unwrap();
        assert_eq!(message_of(&plain), text.as_bytes());
    }

    #[test]
    fn with_client_context_takeover_the_window_is_kept_between_messages() {
        // A client compressor that is never reset: the second message
        // refers back into the first.
        let mut c = Compress::new(Compression::default(), false);
        let mut raw = Vec::new();
        let words = "context takeover keeps the window ".repeat(20);
        for _ in 0..2 {
            let mut out = Vec::with_capacity(4096);
            let before = c.total_in();
            c.compress_vec(words.as_bytes(), &mut out, FlushCompress::Sync)
                .unwrap();
            assert_eq!((c.total_in() - before) as usize, words.len());
            out.truncate(out.len() - TAIL.len());
            raw.extend(frame(OpCode::Data(Data::Text), true, true, &out));
        }
        let takeover = Agreement {
            send_window_bits: 15,
            peer_takes_over: true,
        };
        let mut inflater = Inflater::new(Role::Server, 1 << 20, takeover);
        let plain = through(&mut inflater, &raw).unwrap();
        let mut ctx = tungstenite::protocol::WebSocketContext::new(Role::Server, None);
        let mut stream = Rw(io::Cursor::new(plain));
        for _ in 0..2 {
            match ctx.read(&mut stream).expect("a message") {
                tungstenite::Message::Text(t) => assert_eq!(t.as_str(), words),
                m => panic!("{m:?}"),
            }
        }
    }

    #[test]
    fn compress_round_trips_poorly_compressible_data_of_every_size() {
        // Pseudo-random bytes with runs: some blocks stored, some not.
        let mut x = 0x9e37_79b9_u32;
        let data: Vec<u8> = (0..400_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Runs, full-entropy bytes, and 4-bit symbols (which
                // deflate to about half: where an output buffer of half
                // the input fills up exactly).
                match (i / 1000) % 3 {
                    0 => b'a',
                    1 => x as u8,
                    _ => b'a' + (x & 15) as u8,
                }
            })
            .collect();
        // Level 1 (the default) and 6, one reused compressor each, many
        // slices: resets and stored blocks in every combination.
        let cases = [1u32, 6].into_iter().flat_map(|level| {
            (0..40).map(move |i| {
                (
                    level,
                    (i * 7919) % 200_000,
                    [300, 16384, 65536, 131072][i % 4],
                )
            })
        });
        for (level, at, len) in cases {
            let slice = &data[at..at + len];
            let Some(deflated) = compress(slice, level) else {
                continue;
            };
            let mut d = Decompress::new(false);
            let mut input = deflated;
            input.extend_from_slice(&TAIL);
            let mut out = Vec::with_capacity(len + 1024);
            d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert!(out == slice, "level {level}, {len} bytes at {at}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let deflated = compress(&zeros, 9).unwrap();
        assert!(deflated.len() < 64 << 10, "{}", deflated.len());
        let raw = frame(OpCode::Data(Data::Binary), true, true, &deflated);
        let mut inflater = Inflater::new(Role::Server, 1 << 20, agreement());
        let err = through(&mut inflater, &raw).unwrap_err();
        assert_eq!(Refusal::of(&err), Some(Refusal::TooBig));
        assert!(inflater.buffered() <= (1 << 20) + OUTPUT_MAX + CHUNK);
    }

    #[test]
    fn rsv1_on_control_or_continuation_frames_and_corrupt_data_are_refused() {
        use tungstenite::protocol::frame::coding::Control;
        let mut i = Inflater::new(Role::Server, 1 << 20, agreement());
        let e = through(
            &mut i,
            &frame(OpCode::Control(Control::Ping), true, true, b""),
        )
        .unwrap_err();
        assert!(matches!(Refusal::of(&e), Some(Refusal::Protocol(_))));
        let mut i = Inflater::new(Role::Server, 1 << 20, agreement());
        let mut raw = frame(OpCode::Data(Data::Text), false, false, b"a");
        raw.extend(frame(OpCode::Data(Data::Continue), true, true, b"b"));
        let e = through(&mut i, &raw).unwrap_err();
        assert!(matches!(Refusal::of(&e), Some(Refusal::Protocol(_))));
        let mut i = Inflater::new(Role::Server, 1 << 20, agreement());
        let e = through(
            &mut i,
            &frame(OpCode::Data(Data::Text), true, true, &[0xff; 16]),
        )
        .unwrap_err();
        assert_eq!(Refusal::of(&e), Some(Refusal::Corrupt { text: true }));
    }
}

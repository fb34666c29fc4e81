//! The sending side of the fan-out scenario: flat out within a window,
//! or at a fixed rate, one message per system call unless told otherwise.

use super::*;

/// What a sender's messages look like.
#[derive(Clone, Copy)]
pub(super) struct Payload {
    pub size: usize,
    pub binary: bool,
    /// A chat message in JSON (see `--json`), not a stamp and dots.
    pub json: bool,
}

/// Words for `--json` bodies: a chat's vocabulary, not a compressor's
/// best case of one repeated byte.
const WORDS: &[&str] = &[
    "the",
    "deploy",
    "is",
    "done",
    "and",
    "dashboards",
    "look",
    "green",
    "can",
    "you",
    "check",
    "logs",
    "for",
    "service",
    "api",
    "after",
    "lunch",
    "meeting",
    "moved",
    "to",
    "three",
    "thanks",
    "build",
    "failed",
    "on",
    "main",
    "again",
    "retry",
    "fixed",
    "it",
    "ship",
    "review",
    "please",
    "ok",
    "sounds",
    "good",
    "tomorrow",
    "release",
    "notes",
];

/// A `--json` message of `size` bytes for sender `s`; its stamp goes at
/// [`JSON_STAMP_AT`].
fn chat_message(s: usize, size: usize) -> Vec<u8> {
    let head = format!(
        "{{\"id\":\"{}\",\"type\":\"chat\",\"name\":\"user-{s}\",\"body\":\"",
        "0".repeat(HEADER)
    );
    let mut out = head.into_bytes();
    let tail = b"\"}";
    let mut i = s;
    while out.len() + tail.len() < size {
        let word = WORDS[i % WORDS.len()];
        i = i.wrapping_mul(31).wrapping_add(7);
        out.extend_from_slice(word.as_bytes());
        out.push(b' ');
    }
    out.truncate(size - tail.len());
    out.extend_from_slice(tail);
    out
}

/// When a sender sends: from `start` until `deadline`; at a fixed rate,
/// `rate` messages a second (unused when flat out).
#[derive(Clone, Copy)]
pub(super) struct Schedule {
    pub rate: f64,
    pub start: Instant,
    pub deadline: Instant,
}

/// Sender `s` until the deadline; the number of messages it sent.
pub(super) fn send(
    s: usize,
    shared: &Shared,
    writer: &RawWriter,
    payload: Payload,
    schedule: Schedule,
) -> u64 {
    let mut sender = Sender::new(s, shared, payload);
    loop {
        let now = Instant::now();
        if now >= schedule.deadline {
            break;
        }
        let count = if shared.flat_out {
            match sender.window_allows(schedule.deadline) {
                Some(count) => count,
                None => break,
            }
        } else {
            sender.wait_for_turn(schedule, now);
            1
        };
        sender.frame(count);
        if writer.write_all(&sender.out).is_err() {
            break;
        }
    }
    sender.seq
}

/// A sender's state: its message, its compressor and what it writes next.
struct Sender<'a> {
    s: usize,
    shared: &'a Shared,
    opcode: OpCode,
    /// The message; its stamp is rewritten for every one sent.
    payload: Vec<u8>,
    deflate: Option<flate2::Compress>,
    /// Where a message is deflated to.
    deflated: Vec<u8>,
    /// The frames of one system call.
    out: Vec<u8>,
    /// The next sequence number (so far, the number of messages framed).
    seq: u64,
}

impl<'a> Sender<'a> {
    fn new(s: usize, shared: &'a Shared, payload: Payload) -> Sender<'a> {
        let Payload { size, binary, json } = payload;
        Sender {
            s,
            shared,
            opcode: OpCode::Data(if binary { Data::Binary } else { Data::Text }),
            payload: if json {
                chat_message(s, size)
            } else {
                vec![b'.'; size]
            },
            deflate: shared
                .compress
                .then(|| flate2::Compress::new(flate2::Compression::fast(), false)),
            deflated: Vec::with_capacity(size + 64),
            out: Vec::with_capacity(size + 14),
            seq: 0,
        }
    }

    /// Flat out: waits until message seq - window has reached everyone;
    /// then how many to send now (all the window allows with
    /// --batch-writes, else one). None when the deadline passed first.
    fn window_allows(&self, deadline: Instant) -> Option<u64> {
        let (shared, s, seq) = (self.shared, self.s, self.seq);
        while seq - shared.done[s].load(Ordering::Acquire) >= shared.window {
            shared.waiting[s].store(true, Ordering::Release);
            if seq - shared.done[s].load(Ordering::Acquire) >= shared.window {
                // Woken by the receiver that completes a message; the
                // timeout only bounds a wait on a lost one.
                thread::park_timeout(Duration::from_millis(20));
            }
            shared.waiting[s].store(false, Ordering::Release);
            if Instant::now() >= deadline {
                return None;
            }
        }
        let free = shared.window - (seq - shared.done[s].load(Ordering::Acquire));
        Some(if shared.batch_writes { free } else { 1 })
    }

    /// At a fixed rate: sleeps until the next message is due. Senders are
    /// spread evenly over one period, as independent users would be:
    /// aligned, all S messages would land together and the latency would
    /// measure a burst of S × N deliveries.
    fn wait_for_turn(&self, schedule: Schedule, now: Instant) {
        let rate = schedule.rate;
        let phase = self.s as f64 / (rate * self.shared.senders as f64);
        let due = schedule.start + Duration::from_secs_f64(phase + self.seq as f64 / rate);
        if due > now {
            thread::sleep(due - now);
        }
    }

    /// Frames the next `count` messages into `out`, each its own frame
    /// (with --batch-writes, all that the window allows in one system call).
    fn frame(&mut self, count: u64) {
        let at = self.shared.stamp_at;
        self.out.clear();
        for _ in 0..count {
            stamp(
                &mut self.payload[at..],
                self.shared.base.elapsed().as_nanos() as u64,
                self.s,
                self.seq,
            );
            match self.deflate.as_mut() {
                // As a browser does: every message deflated on its own.
                Some(c) => {
                    compress(c, &self.payload, &mut self.deflated);
                    RawWriter::append_frame(self.opcode, true, &self.deflated, &mut self.out);
                }
                None => RawWriter::append(self.opcode, &self.payload, &mut self.out),
            }
            self.seq += 1;
        }
    }
}

/// Writes the send time, sender and sequence number as hex at the start of
/// the payload: `{ns:016x}{sender:04x}{seq:08x}`.
fn stamp(payload: &mut [u8], ns: u64, sender: usize, seq: u64) {
    fn put(out: &mut [u8], mut v: u64) {
        for b in out.iter_mut().rev() {
            *b = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
        }
    }
    put(&mut payload[0..16], ns);
    put(&mut payload[16..20], sender as u64 & 0xffff);
    put(&mut payload[20..28], seq & 0xffff_ffff);
}

/// `data` deflated with a sync flush into `out`, the `00 00 ff ff` tail
/// removed (RFC 7692 §7.2.1), the compressor reset first.
fn compress(c: &mut flate2::Compress, data: &[u8], out: &mut Vec<u8>) {
    c.reset();
    out.clear();
    // Room for the worst case in one call (see wshub's deflate::compress).
    out.reserve(data.len() + data.len() / 8 + 128);
    let _ = c.compress_vec(data, out, flate2::FlushCompress::Sync);
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
}

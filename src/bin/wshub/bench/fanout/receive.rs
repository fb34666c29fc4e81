//! The receiving side of the fan-out scenario: one epoll set of clients
//! per reader thread; every frame is checked for order and loss, and its
//! latency recorded.

use super::*;
use std::io;

use rustix::buffer::spare_capacity;
use rustix::event::epoll;

use super::raw::{Polled, Seen};

/// One receiving client.
pub(super) struct Receiver {
    pub(super) reader: raw::RawReader,
    pub(super) writer: RawWriter,
    pub(super) state: ReceiverState,
}

/// What one receiver has seen.
pub(super) struct ReceiverState {
    id: usize,
    skip_own: bool,
    /// Per sender, the next sequence number expected.
    next: Vec<u64>,
    /// Deliveries not yet added to `Shared::delivered`.
    unpublished: u64,
    last_ns: u64,
    /// The read number and the clock reading taken for it.
    clock: (u64, u64),
    stats: ReceiverStats,
    /// With permessage-deflate: the inflater (reset per message: the
    /// server keeps no context) and where a message is inflated to.
    inflate: Option<(Box<flate2::Decompress>, Vec<u8>)>,
}

impl ReceiverState {
    pub(super) fn new(id: usize, skip_own: bool, senders: usize) -> ReceiverState {
        ReceiverState {
            id,
            skip_own,
            next: vec![0; senders],
            unpublished: 0,
            last_ns: 0,
            clock: (u64::MAX, 0),
            stats: ReceiverStats::default(),
            inflate: None,
        }
    }

    /// Handles one frame; false to stop reading.
    fn on_frame(
        &mut self,
        seen: Seen<'_>,
        writer: &RawWriter,
        shared: &Shared,
        hist: &mut Histogram,
    ) -> bool {
        match seen {
            Seen::Compressed(p, read) => {
                self.on_compressed(p, read, shared, hist);
                true
            }
            Seen::Data(p, read) => {
                let now = self.read_time(read, shared);
                self.stats.wire_bytes += p.len() as u64;
                // A server may merge queued text messages into one frame,
                // separated by newlines (gorilla's chat does); our payloads
                // hold no newline, so each piece is one message.
                for message in p.split(|&b| b == b'\n') {
                    self.on_data(message, now, shared, hist);
                }
                true
            }
            Seen::Ping(p) => writer.pong(p).is_ok(),
            Seen::Close(code) => {
                if !shared.stopping.load(Ordering::Acquire) {
                    self.stats.close = Some(code.unwrap_or(1005));
                }
                false
            }
            Seen::Other => true,
        }
    }

    /// The time of read number `read`: frames of one read arrived
    /// together, so one clock reading serves them all.
    fn read_time(&mut self, read: u64, shared: &Shared) -> u64 {
        if self.clock.0 != read {
            self.clock = (read, shared.base.elapsed().as_nanos() as u64);
        }
        self.clock.1
    }

    /// A permessage-deflate message: inflated into the buffer kept for
    /// that, then handled as data (or counted as foreign if it fails).
    fn on_compressed(&mut self, p: &[u8], read: u64, shared: &Shared, hist: &mut Histogram) {
        let now = self.read_time(read, shared);
        self.stats.wire_bytes += p.len() as u64;
        let (inflater, out) = self
            .inflate
            .get_or_insert_with(|| (Box::new(flate2::Decompress::new(false)), Vec::new()));
        let ok = inflate(inflater, p, out);
        let message = std::mem::take(out);
        if ok {
            self.stats.compressed += 1;
            self.on_data(&message, now, shared, hist);
        } else {
            self.stats.foreign += 1;
        }
        if let Some((_, out)) = self.inflate.as_mut() {
            *out = message;
        }
    }

    fn on_data(&mut self, p: &[u8], now: u64, shared: &Shared, hist: &mut Histogram) {
        let senders = self.next.len();
        let at = shared.stamp_at;
        let parsed = (p.len() >= at + HEADER)
            .then(|| {
                let p = &p[at..];
                Some((hex(&p[0..16])?, hex(&p[16..20])? as usize, hex(&p[20..28])?))
            })
            .flatten();
        let Some((sent_at, s, seq)) = parsed.filter(|&(_, s, _)| s < senders) else {
            self.stats.foreign += 1;
            return;
        };
        if self.skip_own && s == self.id {
            self.stats.foreign += 1;
            return;
        }
        let _ = hist.record(now.saturating_sub(sent_at).max(1));
        let expected = self.next[s];
        if seq >= expected {
            self.stats.lost += seq - expected;
            self.next[s] = seq + 1;
        } else {
            self.stats.reordered += 1;
        }
        self.stats.delivered += 1;
        self.last_ns = now;
        self.unpublished += 1;
        if self.unpublished == 64 {
            self.publish(shared);
        }
        if shared.flat_out {
            let slot = &shared.slots[s][(seq % shared.window) as usize];
            if slot.fetch_add(1, Ordering::AcqRel) + 1 == shared.fanout {
                slot.store(0, Ordering::Release);
                shared.done[s].fetch_max(seq + 1, Ordering::AcqRel);
                if shared.waiting[s].load(Ordering::Acquire)
                    && let Some(t) = shared.sender_threads.get()
                {
                    t[s].unpark();
                }
            }
        }
    }

    fn publish(&mut self, shared: &Shared) {
        shared.delivered[self.id].fetch_add(self.unpublished, Ordering::Relaxed);
        self.unpublished = 0;
    }

    /// The receiver is done: its counts, with the time of its last delivery.
    fn finish(mut self, shared: &Shared, result: io::Result<()>) -> ReceiverStats {
        self.publish(shared);
        if self.stats.delivered > 0 {
            self.stats.last = Some(shared.base + Duration::from_nanos(self.last_ns));
        }
        if let Err(e) = result {
            // Our own shutdown at the end shows up as a reset or EOF: not an error.
            if self.stats.close.is_none() && !shared.stopping.load(Ordering::Acquire) {
                self.stats.error = Some(e.kind().to_string());
            }
        }
        self.stats
    }
}

/// Inflates one message `p` into `out`, the inflater reset first (the
/// server keeps no context); false if it is not valid deflate data.
fn inflate(inflater: &mut flate2::Decompress, p: &[u8], out: &mut Vec<u8>) -> bool {
    inflater.reset(false);
    out.clear();
    out.reserve(p.len() * 8 + 256);
    for part in [p, &[0, 0, 0xff, 0xff][..]] {
        let before = inflater.total_in();
        loop {
            let used = (inflater.total_in() - before) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            match inflater.decompress_vec(&part[used..], out, flate2::FlushDecompress::Sync) {
                Ok(_) if (inflater.total_in() - before) as usize == part.len() => break,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
    true
}

/// One reader thread: drives its receivers from one epoll set until every
/// one of them has ended (or, after the run, a bounded wait has passed).
pub(super) fn poll_receivers(group: Vec<Receiver>, shared: &Shared) -> PollerResult {
    let mut poller = Poller::new(group)?;
    // Whatever came with the handshake, or before registration.
    for i in 0..poller.live.len() {
        poller.drive(i, shared);
    }
    poller.wait_all(shared)?;
    Ok(poller.finish(shared))
}

/// A reader thread's epoll set and its receivers.
struct Poller {
    set: std::os::fd::OwnedFd,
    /// The receivers still reading, by their index in the set.
    live: Vec<Option<Receiver>>,
    /// The counts of those that ended, by the same index.
    done: Vec<Option<ReceiverStats>>,
    ended: usize,
    hist: Histogram,
}

fn epoll_error(e: rustix::io::Errno) -> String {
    format!("epoll: {e}")
}

impl Poller {
    /// Registers every receiver's socket, edge triggered.
    fn new(group: Vec<Receiver>) -> Result<Poller, String> {
        let set = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(epoll_error)?;
        for (i, r) in group.iter().enumerate() {
            let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ET;
            epoll::add(
                &set,
                r.reader.as_fd(),
                epoll::EventData::new_u64(i as u64),
                flags,
            )
            .map_err(epoll_error)?;
        }
        Ok(Poller {
            set,
            done: (0..group.len()).map(|_| None).collect(),
            live: group.into_iter().map(Some).collect(),
            ended: 0,
            hist: histogram(),
        })
    }

    /// Drives receiver `i`; it moves to `done` when it ends.
    fn drive(&mut self, i: usize, shared: &Shared) {
        let Some(Receiver {
            reader,
            writer,
            state,
        }) = self.live[i].as_mut()
        else {
            return;
        };
        let hist = &mut self.hist;
        let result = match reader.poll(|seen| state.on_frame(seen, writer, shared, hist)) {
            Ok(Polled::Pending) => return,
            Ok(Polled::Ended) => Ok(()),
            Err(e) => Err(e),
        };
        if let Some(r) = self.live[i].take() {
            self.done[i] = Some(r.state.finish(shared, result));
            self.ended += 1;
        }
    }

    /// Drives the receivers the set reports ready until all have ended.
    fn wait_all(&mut self, shared: &Shared) -> Result<(), String> {
        let tick = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        let mut events = Vec::with_capacity(256);
        let mut stopped_at: Option<Instant> = None;
        while self.ended < self.live.len() {
            events.clear();
            match epoll::wait(&self.set, spare_capacity(&mut events), Some(&tick)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(epoll_error(e)),
            }
            for ev in &events {
                let data = ev.data;
                self.drive(data.u64() as usize, shared);
            }
            if shared.stopping.load(Ordering::Acquire) {
                // Every socket has been shut down: each ends at once. Bounded
                // all the same.
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Every receiver's counts (those still reading are ended here), and
    /// the latency histogram of them all.
    fn finish(self, shared: &Shared) -> (Vec<ReceiverStats>, Histogram) {
        let stats = self
            .done
            .into_iter()
            .zip(self.live)
            .filter_map(|(d, l)| d.or_else(|| l.map(|r| r.state.finish(shared, Ok(())))))
            .collect();
        (stats, self.hist)
    }
}

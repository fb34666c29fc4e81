//! Each room's recent messages, for clients that join late or come back
//! after a dropped connection (`?history=K`).
//!
//! A room keeps its newest messages within three bounds at once
//! ([`Bounds`]: a count, bytes, an age), as the frames that were relayed
//! (same bytes, same types). The hub owns the [`Histories`] outright (no
//! lock), records every message it fans out, and takes a joiner's snapshot
//! in the same step as the join, so that nothing is missed or repeated at
//! the boundary. A room with no clients keeps its history until its newest
//! message is older than the age bound; [`Histories::sweep`] then drops it,
//! so rooms that come and go leave nothing behind.
//!
//! Frames held here do not count against the memory budget (they are not
//! queued for anyone; the bounds limit them), but share their bytes with
//! the frames in the queues.
//!
//! May touch: nothing outside this file.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::Message;

use crate::session::frame::Frame;

/// How much each room keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Most messages; 0 turns history off.
    pub messages: usize,
    /// Most bytes of frames.
    pub bytes: usize,
    /// Oldest message kept.
    pub age: Duration,
}

struct Entry {
    at: Instant,
    frame: Frame,
    message: Message,
}

/// One room's history.
#[derive(Default)]
struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl History {
    fn trim(&mut self, bounds: Bounds, now: Instant) {
        while let Some(oldest) = self.entries.front() {
            let too_old = now.saturating_duration_since(oldest.at) > bounds.age;
            if self.entries.len() > bounds.messages || self.bytes > bounds.bytes || too_old {
                self.bytes -= oldest.frame.len();
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }
}

/// Every room's history.
pub(crate) struct Histories {
    bounds: Bounds,
    rooms: HashMap<Arc<str>, History>,
}

impl Histories {
    pub(crate) fn new(bounds: Bounds) -> Histories {
        Histories {
            bounds,
            rooms: HashMap::new(),
        }
    }

    /// Whether history is kept at all.
    pub(crate) fn enabled(&self) -> bool {
        self.bounds.messages > 0 && self.bounds.bytes > 0
    }

    /// Records a message relayed to `room`.
    pub(crate) fn record(&mut self, room: &Arc<str>, frame: &Frame, message: &Message) {
        if !self.enabled() || frame.len() > self.bounds.bytes {
            return;
        }
        let now = Instant::now();
        let history = self.rooms.entry(room.clone()).or_default();
        history.bytes += frame.len();
        history.entries.push_back(Entry {
            at: now,
            frame: frame.uncharged(),
            message: message.clone(),
        });
        history.trim(self.bounds, now);
    }

    /// Takes `entries` (oldest first; from the room's shared history in
    /// Redis) as the room's history, unless there are none.
    pub(crate) fn replace(&mut self, room: &Arc<str>, entries: Vec<(Frame, Message)>) {
        if entries.is_empty() || !self.enabled() {
            return;
        }
        self.rooms.remove(room);
        for (frame, message) in entries {
            self.record(room, &frame, &message);
        }
    }

    /// The last `k` frames of `room` (all it keeps for `usize::MAX`), oldest
    /// first.
    pub(crate) fn snapshot(&mut self, room: &str, k: usize) -> Vec<Frame> {
        let Some(history) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        history.trim(self.bounds, Instant::now());
        let skip = history.entries.len().saturating_sub(k);
        history
            .entries
            .iter()
            .skip(skip)
            .map(|e| e.frame.clone())
            .collect()
    }

    /// The messages `room` keeps, oldest first (for a host program).
    pub(crate) fn messages(&mut self, room: &str) -> Vec<Message> {
        let Some(history) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        history.trim(self.bounds, Instant::now());
        history.entries.iter().map(|e| e.message.clone()).collect()
    }

    /// Messages and bytes `room` keeps now.
    pub(crate) fn held(&self, room: &str) -> (usize, usize) {
        self.rooms
            .get(room)
            .map_or((0, 0), |h| (h.entries.len(), h.bytes))
    }

    /// Messages and bytes all rooms keep now.
    pub(crate) fn totals(&self) -> (usize, usize) {
        self.rooms
            .values()
            .fold((0, 0), |(n, b), h| (n + h.entries.len(), b + h.bytes))
    }

    /// Ages out old messages everywhere, and forgets rooms left with none
    /// (a room with clients keeps its entry, possibly empty).
    pub(crate) fn sweep(&mut self, has_clients: impl Fn(&str) -> bool) {
        let (bounds, now) = (self.bounds, Instant::now());
        self.rooms.retain(|room, history| {
            history.trim(bounds, now);
            !history.entries.is_empty() || has_clients(room)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::Role;

    fn frame(s: &str) -> (Frame, Message) {
        let m = Message::text(s);
        (Frame::data(Role::Server, &m).expect("data"), m)
    }

    #[test]
    fn keeps_the_newest_within_count_and_bytes() {
        let mut h = Histories::new(Bounds {
            messages: 3,
            bytes: 1 << 20,
            age: Duration::from_secs(60),
        });
        let room: Arc<str> = "r".into();
        for i in 0..5 {
            let (f, m) = frame(&format!("m{i}"));
            h.record(&room, &f, &m);
        }
        let got = h.messages("r");
        assert_eq!(
            got,
            vec![
                Message::text("m2"),
                Message::text("m3"),
                Message::text("m4")
            ]
        );
        assert_eq!(h.snapshot("r", 2).len(), 2);
        let mut small = Histories::new(Bounds {
            messages: 100,
            bytes: 8,
            age: Duration::from_secs(60),
        });
        for i in 0..5 {
            let (f, m) = frame(&format!("m{i}"));
            small.record(&room, &f, &m);
        }
        // Each frame is 4 bytes: two fit in 8.
        assert_eq!(small.held("r"), (2, 8));
    }

    #[test]
    fn an_empty_room_forgets_after_the_age() {
        let mut h = Histories::new(Bounds {
            messages: 10,
            bytes: 1 << 20,
            age: Duration::ZERO,
        });
        let room: Arc<str> = "gone".into();
        let (f, m) = frame("old");
        h.record(&room, &f, &m);
        std::thread::sleep(Duration::from_millis(2));
        h.sweep(|_| false);
        assert_eq!(h.held("gone"), (0, 0));
    }
}

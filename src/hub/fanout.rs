//! The hub's fan-out lanes: one broadcast burst written to many members in
//! parallel, one lane per CPU (at most [`MAX_LANES`]).
//!
//! Since the hub writes to clients that keep up itself (see `outbox`),
//! fanning a message out to a large room is a system call per member, and
//! on one thread the last member of a 1,000-client room would wait for 999
//! writes before its own. So each member belongs to a lane, by its id: lane
//! 0 is the hub thread itself, the others are helper threads that the hub
//! hands each burst to. The hub still owns membership and decides the
//! order; a lane only delivers.
//!
//! The first [`SMALL_ROOM`] members of a room are all the hub's, so a small
//! room costs no hand-off; later joiners are spread by id.
//!
//! Invariants: a member is always served by the same lane, and a lane
//! works through its bursts in the order the hub made them, so every member
//! receives a room's messages in the hub's one order, and each outbox has
//! one offering thread (what its direct writes need). Lanes never block on
//! a member; a helper's queue of bursts is unbounded, but the hub makes a
//! burst only from what readers sent it through its bounded inbox.
//!
//! May touch: member outboxes; nothing of the hub's maps.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Sender, unbounded};
use log::{debug, warn};

use crate::hub::member::{Limits, Member};
use crate::id::ClientId;
use crate::metrics::{self, Metrics};
use crate::session::close::Close;
use crate::session::outbox::{Burst, Refused};

/// Most lanes, whatever the CPU count.
pub(crate) const MAX_LANES: usize = 4;

// Each lane counts its deliveries on counters of its own.
const _: () = assert!(MAX_LANES <= metrics::LANES, "metrics::LANES too small");

/// Members a room has before joiners are spread over the lanes.
const SMALL_ROOM: usize = 32;

/// One room's share of a burst: its frames, in the hub's order.
pub(crate) struct Delivery {
    pub room: Arc<str>,
    pub frames: Burst,
    /// Frames and bytes in all.
    pub total: (usize, usize),
    /// What each sender contributed (members do not get their own back).
    pub own: Vec<(ClientId, usize, usize)>,
    /// Only for members that asked for presence notices.
    pub presence_only: bool,
}

impl Delivery {
    /// The burst of `frames` for `room`, with its sums.
    pub(crate) fn new(room: Arc<str>, frames: Burst) -> Delivery {
        let total = (
            frames.len(),
            frames.iter().map(|(_, f)| f.len()).sum::<usize>(),
        );
        let mut own: Vec<(ClientId, usize, usize)> = Vec::new();
        for (from, f) in frames.iter() {
            if let Some(id) = from {
                match own.iter_mut().find(|(o, ..)| o == id) {
                    Some(entry) => {
                        entry.1 += 1;
                        entry.2 += f.len();
                    }
                    None => own.push((*id, 1, f.len())),
                }
            }
        }
        Delivery {
            room,
            frames,
            total,
            own,
            presence_only: false,
        }
    }
}

/// A lane's members of one room, shared with the hub (copied on write).
pub(crate) type LaneMembers = Arc<Vec<Member>>;

struct Job {
    members: LaneMembers,
    delivery: Arc<Delivery>,
}

/// The lanes: the hub's own, and the helpers'.
pub(crate) struct Lanes {
    helpers: Vec<(Sender<Job>, JoinHandle<()>)>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl Lanes {
    /// One lane per CPU, at most [`MAX_LANES`]; fewer if helper threads
    /// cannot be started (down to the hub's own lane alone).
    pub(crate) fn start(limits: Limits, metrics: Arc<Metrics>) -> Lanes {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let mut helpers = Vec::new();
        for lane in 1..cpus.clamp(1, MAX_LANES) {
            match spawn_helper(lane, limits, metrics.clone()) {
                Ok(helper) => helpers.push(helper),
                Err(e) => {
                    warn!("hub: no fan-out lane {lane}: {e}");
                    break;
                }
            }
        }
        debug!("hub: {} fan-out lanes", helpers.len() + 1);
        Lanes {
            helpers,
            limits,
            metrics,
        }
    }

    /// The counters the lanes (and the hub) bump.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What every lane delivers under.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// How many lanes there are.
    pub(crate) fn count(&self) -> usize {
        self.helpers.len() + 1
    }

    /// The lane for `id`, joining a room of `room_size` members; the
    /// caller keeps it for the member's life. The first members of a room
    /// are the hub's: a small room is written without a hand-off (one
    /// thread wake-up less per message).
    pub(crate) fn lane_of(&self, id: ClientId, room_size: usize) -> usize {
        if room_size < SMALL_ROOM {
            0
        } else {
            (id.0 % self.count() as u64) as usize
        }
    }

    /// Delivers one room's burst: helpers' lanes are handed theirs, the
    /// hub's own lane (`lanes[0]`) is written on this thread.
    pub(crate) fn dispatch(&self, lanes: &[LaneMembers], delivery: Delivery) {
        let delivery = Arc::new(delivery);
        for (members, (helper, _)) in lanes.iter().skip(1).zip(&self.helpers) {
            if !members.is_empty() {
                let job = Job {
                    members: members.clone(),
                    delivery: delivery.clone(),
                };
                if let Err(e) = helper.send(job) {
                    // A helper that panicked: its members get nothing more,
                    // and the hub is not held up.
                    debug!(
                        "hub: a fan-out lane is gone: {} members skipped",
                        e.0.members.len()
                    );
                }
            }
        }
        if let Some(own) = lanes.first() {
            deliver(own, &delivery, self.limits, (0, &self.metrics));
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for (helper, thread) in self.helpers.drain(..) {
            drop(helper);
            let _ = thread.join();
        }
    }
}

fn spawn_helper(
    lane: usize,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> io::Result<(Sender<Job>, JoinHandle<()>)> {
    let (tx, rx) = unbounded::<Job>();
    let thread = thread::Builder::new()
        .name(format!("wshub-lane-{lane}"))
        .spawn(move || {
            for job in rx {
                deliver(&job.members, &job.delivery, limits, (lane, &metrics));
            }
        })?;
    Ok((tx, thread))
}

/// Offers `d` to each member (less its own frames, unless echoed); a
/// member whose outbox is full is evicted with 1008, once. The metrics
/// are counted once for the whole burst.
fn deliver(members: &[Member], d: &Delivery, limits: Limits, (lane, metrics): (usize, &Metrics)) {
    let (mut messages, mut bytes_out) = (0, 0);
    let (mut refused, mut evicted) = (0, 0);
    for m in members {
        if d.presence_only && !m.join.presence {
            continue;
        }
        let skip = (!limits.echo_sender).then_some(m.id);
        let (count, bytes) = match d.own.iter().find(|(o, ..)| Some(*o) == skip) {
            Some(&(_, c, b)) => (d.total.0 - c, d.total.1 - b),
            None => d.total,
        };
        if count == 0 {
            continue;
        }
        match m.outbox.offer(&d.frames, skip, count, bytes) {
            Ok(()) => {
                messages += count;
                bytes_out += bytes;
            }
            Err(Refused::Full) => {
                refused += count;
                let close = Close::QueueFull.frame();
                if m.outbox.evict(close) {
                    evicted += 1;
                    warn!(
                        client = m.id.0, room = &*d.room;
                        "{} evicted from room {:?}: send queue full ({} messages / {} bytes max)",
                        m.id, d.room, limits.messages, limits.bytes
                    );
                }
            }
            // A gone writer means its reader unregisters soon.
            Err(Refused::Gone) => {}
        }
    }
    metrics.delivered(lane, messages, bytes_out);
    metrics.refused(refused, evicted);
}

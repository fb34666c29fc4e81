//! The hub thread (gorilla's `Hub.run`): who is in which room, and the
//! fan-out of each message to the other members.
//!
//! Its parts: `membership` (rooms and members), `joins` (joining, with a
//! room's history and presence in the same step, and leaving), `fanout`
//! (the lanes that deliver a burst), `waiting` (rooms new to this instance
//! waiting for their shared history from the Redis bridge), `answer`
//! (queries and presence notices), `budget` (evictions for the memory
//! budget), `event` (what the host program is told), `inbox` (how the
//! hub waits for its next message: a short spin while traffic is quick).
//!
//! The hub owns its maps outright, so there is no lock. It receives on one
//! channel whose variants are gorilla's three channels — register,
//! unregister, broadcast — plus subscribe and shutdown. One FIFO rather than
//! three selected channels keeps each client's join, messages and leave in
//! the order they happened (gorilla gets that from unbuffered channels).
//!
//! The hub never blocks on a client: delivery is an offer to each member's
//! [`Outbox`](crate::session::outbox), which queues it or refuses it without
//! waiting. A member whose outbox is full (in messages or bytes) is evicted
//! — removed from its room and asked, through the outbox's close signal, to
//! close with 1008 — and everyone else carries on. A frame is
//! encoded once, by the sender's reader; each delivery clones a reference to
//! it. Event subscribers are fed with `try_send` too: a full subscriber loses
//! events (counted in the log), never stalls the hub.
//!
//! May touch: member outboxes, subscriber channels, the Redis bridge's
//! queues (through `Bridge`, never waiting).

mod answer;
mod budget;
mod command;
mod event;
pub(crate) mod fanout;
mod inbox;
use inbox::Inbox;
mod joins;
pub(crate) mod member;
mod membership;
#[cfg(test)]
mod tests;
mod waiting;

pub(crate) use command::Command;
pub use event::{Event, Events};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::info;
use tungstenite::protocol::Message;

use crate::bridge::{Bridge, FromBridge};
use crate::history::{self, Histories};
use crate::hub::fanout::Delivery;
pub(crate) use crate::hub::fanout::Lanes;
pub(crate) use crate::hub::member::{Limits, Member};
pub(crate) use crate::id::ClientId;
use crate::memory::Memory;
use crate::presence;
use crate::session::close::Close;
use crate::session::frame::Frame;
use event::Subscribers;
use membership::Rooms;
use waiting::Waiting;

/// What the hub is told.
pub(crate) enum HubMsg {
    Register(Member),
    Unregister(ClientId),
    /// `from: None` is the host program; it names the room instead.
    Broadcast {
        from: Option<ClientId>,
        room: Option<Arc<str>>,
        frame: Frame,
        message: Message,
        /// Told how many local clients it was offered to.
        reply: Option<Sender<usize>>,
    },
    /// Something the host program asks of single clients.
    Command(Command),
    /// What the Redis bridge brings from other instances.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Bridge(FromBridge),
    Subscribe(Sender<Event>),
    /// A question about the rooms (for `/rooms` and the host program).
    Query(Query),
    Shutdown,
}

/// Questions the hub answers on the channel they carry.
pub(crate) enum Query {
    /// `GET /rooms`: every room with local clients or history.
    Rooms(Sender<Vec<presence::RoomSummary>>),
    /// `GET /rooms/{room}`, with its local members (their `id` left for
    /// the server to fill in): `None` for a room with no clients and no
    /// history.
    Room(Arc<str>, Sender<Option<presence::RoomInfo>>),
    /// A room's history, oldest first.
    History(Arc<str>, Sender<Vec<Message>>),
    /// For `/metrics`: rooms with local clients, and the messages and
    /// bytes every history keeps (`None`: history is off).
    Totals(Sender<(usize, Option<(usize, usize)>)>),
}

/// The hub thread's state.
struct Hub {
    /// Who is where.
    rooms: Rooms,
    /// With the bridge: new rooms waiting for their shared history.
    waiting: Waiting,
    /// Each room's recent messages.
    histories: Histories,
    lanes: Lanes,
    /// The server's memory budget: over it, the largest queues go.
    memory: Arc<Memory>,
    /// Other instances' share of the rooms, through Redis.
    bridge: Option<Bridge>,
    /// Who listens to events.
    events: Subscribers,
    last_sweep: Instant,
}

/// How often empty rooms' histories are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Most broadcasts gathered into one fan-out.
const BURST: usize = 64;

/// A broadcast whose room is known, waiting for its fan-out.
pub(super) struct Pending {
    from: Option<ClientId>,
    room: Arc<str>,
    frame: Frame,
    message: Message,
    /// The instance it came from, for a message from another instance.
    remote: Option<Arc<str>>,
    /// Told how many local clients it was offered to.
    reply: Option<Sender<usize>>,
}

/// Runs the hub until `Shutdown` arrives or every sender is gone.
///
/// Broadcasts already waiting in the inbox are fanned out together,
/// member by member: each writer then finds several frames at once and
/// writes them with one system call, instead of being woken per message.
/// Per-sender order is kept (frames go into each queue in arrival order),
/// and a join or leave first delivers what arrived before it.
pub(crate) fn run(
    inbox: Receiver<HubMsg>,
    lanes: Lanes,
    memory: Arc<Memory>,
    bridge: Option<Bridge>,
    history: history::Bounds,
) {
    let mut hub = Hub {
        rooms: Rooms::default(),
        waiting: Waiting::default(),
        histories: Histories::new(history),
        lanes,
        memory,
        bridge,
        events: Subscribers::default(),
        last_sweep: Instant::now(),
    };
    let mut inbox = Inbox::new(inbox);
    hub.serve(&mut inbox);
    // The inbox goes first: a bridge thread blocked on a full inbox then
    // sees it gone, and dropping the hub (which joins the bridge's and the
    // lanes' threads) cannot wait for it.
    drop(inbox);
    drop(hub);
}

/// What one message of the inbox asks the loop to do next.
enum Flow {
    Go,
    Stop,
}

impl Hub {
    fn serve(&mut self, inbox: &mut Inbox<HubMsg>) {
        let mut burst: Vec<Pending> = Vec::with_capacity(BURST);
        loop {
            let first = match inbox.next(SWEEP_EVERY) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    self.sweep();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut next = Some(first);
            while let Some(msg) = next {
                if let Flow::Stop = self.take(msg, &mut burst) {
                    return;
                }
                next = if burst.len() < BURST {
                    inbox.try_next()
                } else {
                    None
                };
            }
            self.deliver(&mut burst);
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep();
            }
        }
    }

    /// One message of the inbox: a broadcast joins the burst; anything
    /// else first delivers the burst (so a join or leave comes after what
    /// arrived before it), then happens.
    fn take(&mut self, msg: HubMsg, burst: &mut Vec<Pending>) -> Flow {
        match msg {
            HubMsg::Broadcast {
                from,
                room,
                frame,
                message,
                reply,
            } => {
                // No room: the sender left (or was evicted) before its
                // message got here.
                if let Some(room) = room.or_else(|| self.room_of(from?)) {
                    let remote = None;
                    burst.push(Pending {
                        from,
                        room,
                        frame,
                        message,
                        remote,
                        reply,
                    });
                }
            }
            HubMsg::Bridge(FromBridge::Remote {
                room,
                frame,
                message,
                instance,
            }) => {
                let (from, remote) = (None, Some(instance));
                burst.push(Pending {
                    from,
                    room,
                    frame,
                    message,
                    remote,
                    reply: None,
                });
            }
            HubMsg::Register(member) => self.after(burst).register(member),
            HubMsg::Unregister(id) => self.after(burst).unregister(id),
            HubMsg::Subscribe(tx) => self.after(burst).events.add(tx),
            HubMsg::Query(q) => self.after(burst).answer(q),
            HubMsg::Command(c) => self.after(burst).command(c),
            HubMsg::Bridge(FromBridge::Remove { client, reason }) => {
                self.after(burst).remove_by_request(client, &reason)
            }
            HubMsg::Bridge(FromBridge::RemoveUser { sub, reason }) => {
                self.after(burst).remove_user_by_request(&sub, &reason)
            }
            HubMsg::Bridge(FromBridge::Backfill {
                room,
                entries,
                present,
            }) => {
                let hub = self.after(burst);
                hub.rooms.set_remote(room.clone(), present);
                hub.backfilled(room, entries);
            }
            HubMsg::Bridge(FromBridge::RemotePresence { room, key, name }) => {
                self.after(burst).remote_presence(room, key, name)
            }
            HubMsg::Bridge(FromBridge::InstanceGone(instance)) => {
                self.after(burst).instance_gone(&instance)
            }
            HubMsg::Shutdown => {
                self.after(burst).shutdown();
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    /// The hub, once `burst` is delivered: what comes next happens after it.
    fn after(&mut self, burst: &mut Vec<Pending>) -> &mut Hub {
        self.deliver(burst);
        self
    }

    /// The room a client's message goes to: where it is, or where it waits.
    fn room_of(&self, client: ClientId) -> Option<Arc<str>> {
        let room = self.rooms.room_of(client);
        room.or_else(|| self.waiting.room_of(client)).cloned()
    }

    /// Forgets aged-out history (and the history of rooms left empty).
    fn sweep(&mut self) {
        let rooms = &self.rooms;
        self.histories.sweep(|room| rooms.contains(room));
        self.last_sweep = Instant::now();
    }

    /// Fans out a burst of broadcasts: per room, the frames go into one
    /// shared slice, and each member's outbox is offered one entry
    /// pointing at it, lane by lane (see `fanout`).
    fn deliver(&mut self, burst: &mut Vec<Pending>) {
        // A room waiting for its shared history keeps its messages until
        // its clients have joined.
        self.waiting.hold(burst);
        if burst.is_empty() {
            return;
        }
        // With compression on, each message may be deflated once, by the
        // first lane or writer that has a compressing receiver for it.
        if let Some((level, min)) = self.lanes.limits().deflate {
            for p in burst.iter_mut().filter(|p| p.message.len() >= min) {
                p.frame
                    .make_deflatable(level, &self.lanes.metrics().deflate);
            }
        }
        let mut rooms: Vec<Arc<str>> = Vec::new();
        for p in burst.iter() {
            if !rooms.contains(&p.room) {
                rooms.push(p.room.clone());
            }
        }
        for room in rooms {
            self.dispatch(room, burst);
        }
        self.record(burst);
        self.enforce_budget();
    }

    /// One room's share of the burst, to its lanes.
    fn dispatch(&self, room: Arc<str>, burst: &[Pending]) {
        let Some(room_lanes) = self.rooms.lanes(&room) else {
            return;
        };
        let frames: Arc<[(Option<ClientId>, Frame)]> = burst
            .iter()
            .filter(|p| p.room == room)
            .map(|p| (p.from, p.frame.clone()))
            .collect();
        // A room spread over several lanes: compress here, once, rather
        // than have the lanes wait on one another for it.
        if self.lanes.limits().deflate.is_some()
            && room_lanes.iter().skip(1).any(|lane| !lane.is_empty())
        {
            for (_, frame) in frames.iter() {
                frame.prepare_deflated();
            }
        }
        self.lanes
            .dispatch(room_lanes, Delivery::new(room.clone(), frames));
    }

    /// After the fan-out: history, counts, the bridge and events.
    fn record(&mut self, burst: &mut Vec<Pending>) {
        let (mut received, mut received_bytes) = (0, 0);
        for p in burst.drain(..) {
            if let Some(reply) = p.reply {
                let _ = reply.send(self.rooms.members(&p.room).count());
            }
            if p.from.is_some() {
                received += 1;
                received_bytes += p.message.len();
            }
            self.histories.record(&p.room, &p.frame, &p.message);
            self.rooms.relayed_one(&p.room);
            if let (None, Some(bridge)) = (&p.remote, &self.bridge) {
                bridge.publish(&p.room, &p.message);
            }
            match (p.from, p.remote) {
                (Some(client), _) => self.events.emit(|| Event::Message {
                    client,
                    room: p.room,
                    message: p.message,
                }),
                (None, Some(instance)) => self.events.emit(|| Event::Remote {
                    room: p.room,
                    message: p.message,
                    instance,
                }),
                (None, None) => {}
            }
        }
        self.lanes.metrics().received(received, received_bytes);
    }

    fn shutdown(&mut self) {
        let close = Close::ShuttingDown.frame();
        let mut n = 0;
        for m in self.rooms.everyone() {
            m.outbox.close_now(close.clone());
            n += 1;
        }
        info!("hub: closing {n} clients");
        for (client, left) in self.rooms.drain() {
            self.left(client, left);
        }
    }
}

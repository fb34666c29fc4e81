//! The hub thread (gorilla's `Hub.run`): who is in which room, and the
//! fan-out of each message to the other members.
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
//! May touch: member outboxes, subscriber channels.

mod budget;
mod event;
pub(crate) mod fanout;
pub(crate) mod member;
mod rooms;

pub use event::Event;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{info, warn};
use tungstenite::protocol::Message;

use crate::bridge::{Bridge, FromBridge, RemoteClient};
use crate::history::{self, Histories};
pub(crate) use crate::hub::fanout::Lanes;
use crate::hub::fanout::{Delivery, LaneMembers};
pub(crate) use crate::hub::member::{Limits, Member};
pub(crate) use crate::id::ClientId;
use crate::memory::Memory;
use crate::presence;
use crate::session::close::Close;
use crate::session::frame::Frame;

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
    },
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
    /// `GET /rooms`.
    Rooms(Sender<String>),
    /// `GET /rooms/{room}`: `None` for a room with no clients and no history.
    Room(Arc<str>, Sender<Option<presence::RoomInfo>>),
    /// A room's history, oldest first.
    History(Arc<str>, Sender<Vec<Message>>),
    /// For `/metrics`: rooms with local clients, and the messages and
    /// bytes every history keeps (`None`: history is off).
    Totals(Sender<(usize, Option<(usize, usize)>)>),
}

struct Hub {
    /// Each room's members, split by fan-out lane.
    rooms: HashMap<Arc<str>, Vec<LaneMembers>>,
    lanes: Lanes,
    /// The server's memory budget: over it, the largest queues go.
    memory: Arc<Memory>,
    /// Other instances' share of the rooms, through Redis.
    bridge: Option<Bridge>,
    /// Which room each chat member is in.
    where_is: HashMap<ClientId, (Arc<str>, usize)>,
    echo: HashMap<ClientId, Member>,
    subscribers: Vec<Sender<Event>>,
    dropped_events: u64,
    /// Each room's recent messages.
    histories: Histories,
    /// Messages relayed per room with clients.
    relayed: HashMap<Arc<str>, u64>,
    /// With the bridge: a new room's first clients, waiting for the room's
    /// shared history from Redis before they join.
    parked: HashMap<Arc<str>, Vec<Member>>,
    /// The room of each waiting client, so that what it sends meanwhile
    /// finds its room.
    parked_in: HashMap<ClientId, Arc<str>>,
    /// Messages to a waiting room, delivered once its clients have joined.
    held: Vec<Pending>,
    /// With the bridge: each room's clients on other instances (key
    /// `{instance}:{client}`, name), for presence.
    remote: HashMap<Arc<str>, Vec<RemoteClient>>,
    last_sweep: Instant,
}

/// A member as presence shows it.
fn present(m: &Member) -> presence::Present<'_> {
    presence::Present {
        name: &m.join.name,
        joined: m.join.at.unwrap_or(UNIX_EPOCH),
    }
}

/// How often empty rooms' histories are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Most broadcasts gathered into one fan-out.
const BURST: usize = 64;

/// A broadcast whose room is known, waiting for its fan-out.
struct Pending {
    from: Option<ClientId>,
    room: Arc<str>,
    frame: Frame,
    message: Message,
    /// The instance it came from, for a message from another instance.
    remote: Option<Arc<str>>,
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
        histories: Histories::new(history),
        relayed: HashMap::new(),
        parked: HashMap::new(),
        parked_in: HashMap::new(),
        held: Vec::new(),
        remote: HashMap::new(),
        last_sweep: Instant::now(),
        rooms: HashMap::new(),
        lanes,
        memory,
        bridge,
        where_is: HashMap::new(),
        echo: HashMap::new(),
        subscribers: Vec::new(),
        dropped_events: 0,
    };
    hub.serve(&inbox);
    // The inbox goes first: a bridge thread blocked on a full inbox then
    // sees it gone, and dropping the hub (which joins the bridge's and the
    // lanes' threads) cannot wait for it.
    drop(inbox);
    drop(hub);
}

impl Hub {
    fn serve(&mut self, inbox: &Receiver<HubMsg>) {
        let mut burst: Vec<Pending> = Vec::with_capacity(BURST);
        loop {
            let first = match inbox.recv_timeout(SWEEP_EVERY) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    self.sweep();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    HubMsg::Broadcast {
                        from,
                        room,
                        frame,
                        message,
                    } => {
                        let room = room.or_else(|| {
                            let id = from?;
                            let joined = self.where_is.get(&id).map(|(room, _)| room.clone());
                            joined.or_else(|| self.parked_in.get(&id).cloned())
                        });
                        // No room: the sender left (or was evicted) before
                        // its message got here.
                        if let Some(room) = room {
                            burst.push(Pending {
                                from,
                                room,
                                frame,
                                message,
                                remote: None,
                            });
                        }
                    }
                    HubMsg::Bridge(FromBridge::Remote {
                        room,
                        frame,
                        message,
                        instance,
                    }) => burst.push(Pending {
                        from: None,
                        room,
                        frame,
                        message,
                        remote: Some(instance),
                    }),
                    other => {
                        self.deliver(&mut burst);
                        match other {
                            HubMsg::Register(member) => self.register(member),
                            HubMsg::Unregister(id) => self.unregister(id),
                            HubMsg::Subscribe(tx) => self.subscribers.push(tx),
                            HubMsg::Query(q) => self.answer(q),
                            HubMsg::Bridge(FromBridge::Backfill {
                                room,
                                entries,
                                present,
                            }) => {
                                self.remote.insert(room.clone(), present);
                                self.backfilled(room, entries)
                            }
                            HubMsg::Bridge(FromBridge::RemotePresence { room, key, name }) => {
                                self.remote_presence(room, key, name)
                            }
                            HubMsg::Bridge(FromBridge::InstanceGone(instance)) => {
                                self.instance_gone(&instance)
                            }
                            HubMsg::Shutdown => {
                                self.shutdown();
                                return;
                            }
                            HubMsg::Broadcast { .. }
                            | HubMsg::Bridge(FromBridge::Remote { .. }) => {}
                        }
                    }
                }
                next = if burst.len() < BURST {
                    inbox.try_recv().ok()
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

    /// Forgets aged-out history (and the history of rooms left empty).
    fn sweep(&mut self) {
        let rooms = &self.rooms;
        self.histories.sweep(|room| rooms.contains_key(room));
        self.last_sweep = Instant::now();
    }
}

impl Hub {
    fn register(&mut self, member: Member) {
        let Some(room) = member.room.clone() else {
            self.echo.insert(member.id, member);
            return;
        };
        // With the bridge, a room new to this instance first gets its
        // shared history from Redis; its first clients wait for it (when
        // the bridge is connected: otherwise they join at once).
        if let Some(bridge) = &self.bridge
            && !self.rooms.contains_key(&room)
        {
            if let Some(waiting) = self.parked.get_mut(&room) {
                self.parked_in.insert(member.id, room);
                waiting.push(member);
                return;
            }
            if bridge.subscribe(room.clone()) {
                self.parked_in.insert(member.id, room.clone());
                self.parked.insert(room, vec![member]);
                return;
            }
        }
        self.join(room, member);
    }

    /// The bridge's answer for a new room: its shared history becomes the
    /// local one, and the clients that waited join.
    fn backfilled(&mut self, room: Arc<str>, entries: Vec<(Frame, Message)>) {
        let Some(waiting) = self.parked.remove(&room) else {
            // Nobody waited for it (the bridge was down when the room
            // began): the local history stands.
            return;
        };
        self.histories.replace(&room, entries);
        let (mut held, others): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|p| p.room == room);
        self.held = others;
        if waiting.is_empty() && !self.rooms.contains_key(&room) {
            // They all left before it came; what they said still goes out.
            if let Some(bridge) = &self.bridge {
                bridge.unsubscribe(room);
            }
            self.deliver(&mut held);
            return;
        }
        for member in waiting {
            self.parked_in.remove(&member.id);
            self.join(room.clone(), member);
        }
        // Then what was sent to the room while they waited, in order.
        self.deliver(&mut held);
    }

    fn join(&mut self, room: Arc<str>, member: Member) {
        let (client, peer) = (member.id, member.peer);
        let lanes = self.lanes.count();
        let room_lanes = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| (0..lanes).map(|_| Arc::new(Vec::new())).collect());
        let size = room_lanes.iter().map(|l| l.len()).sum();
        let lane = self.lanes.lane_of(client, size);
        // The join and what the joiner gets first are one step: nothing
        // relayed before it is missed, nothing twice.
        let join = member.join.clone();
        let mut first: Vec<(Option<ClientId>, Frame)> = Vec::new();
        if let Some(k) = join.history {
            first.extend(
                self.histories
                    .snapshot(&room, k)
                    .into_iter()
                    .map(|f| (None, f)),
            );
        }
        if join.presence {
            let me = present(&member);
            let remote = self
                .remote
                .get(&room)
                .into_iter()
                .flatten()
                .map(|(_, name)| presence::Present {
                    name,
                    joined: UNIX_EPOCH,
                });
            let others = room_lanes.iter().flat_map(|l| l.iter()).map(present);
            first.push((None, presence::snapshot(others.chain(remote).chain([me])).0));
        }
        if !first.is_empty() {
            member.outbox.preload(Arc::from(first));
        }
        let clients = size + 1 + self.remote_count(&room);
        self.notify(&room, "join", &join.name, clients);
        let Some(room_lanes) = self.rooms.get_mut(&room) else {
            return;
        };
        Arc::make_mut(&mut room_lanes[lane]).push(member);
        self.relayed.entry(room.clone()).or_insert(0);
        self.where_is.insert(client, (room.clone(), lane));
        if let Some(bridge) = &self.bridge {
            let joined = join.at.unwrap_or(UNIX_EPOCH);
            bridge.present(&room, client.0, &join.name, presence::millis(joined));
        }
        self.emit(|| Event::Joined { client, room, peer });
    }

    fn unregister(&mut self, id: ClientId) {
        if self.echo.remove(&id).is_some() {
            return;
        }
        if self.parked_in.remove(&id).is_some() {
            for waiting in self.parked.values_mut() {
                waiting.retain(|m| m.id != id);
            }
            return;
        }
        // Absent means already evicted: nothing to do, as in gorilla.
        if let Some((room, lane)) = self.where_is.remove(&id) {
            self.leave(id, room, lane);
        }
    }

    fn leave(&mut self, client: ClientId, room: Arc<str>, lane: usize) {
        let mut name = None;
        if let Some(room_lanes) = self.rooms.get_mut(&room) {
            Arc::make_mut(&mut room_lanes[lane]).retain(|m| {
                if m.id == client {
                    name = Some(m.join.name.clone());
                }
                m.id != client
            });
            if room_lanes.iter().all(|members| members.is_empty()) {
                self.rooms.remove(&room);
                self.relayed.remove(&room);
                self.remote.remove(&room);
                if let Some(bridge) = &self.bridge {
                    bridge.unsubscribe(room.clone());
                }
            }
        }
        if let Some(name) = name {
            let clients = self.members(&room).count() + self.remote_count(&room);
            self.notify(&room, "leave", &name, clients);
            if let Some(bridge) = &self.bridge {
                bridge.absent(&room, client.0);
            }
        }
        self.emit(|| Event::Left { client, room });
    }

    /// Fans out a burst of broadcasts: per room, the frames go into one
    /// shared slice, and each member's outbox is offered one entry
    /// pointing at it, lane by lane (see `fanout`).
    fn deliver(&mut self, burst: &mut Vec<Pending>) {
        if !self.parked.is_empty() {
            // A room waiting for its shared history keeps its messages
            // until its clients have joined.
            let (held, ready): (Vec<Pending>, Vec<Pending>) = std::mem::take(burst)
                .into_iter()
                .partition(|p| self.parked.contains_key(&p.room));
            self.held.extend(held);
            *burst = ready;
        }
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
            let Some(room_lanes) = self.rooms.get(&room) else {
                continue;
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
        let (mut received, mut received_bytes) = (0, 0);
        for p in burst.drain(..) {
            if p.from.is_some() {
                received += 1;
                received_bytes += p.message.len();
            }
            self.histories.record(&p.room, &p.frame, &p.message);
            if let Some(n) = self.relayed.get_mut(&p.room) {
                *n += 1;
            }
            match (&p.remote, &self.bridge) {
                (Some(_), _) => {}
                (None, Some(bridge)) => bridge.publish(&p.room, &p.message),
                (None, None) => {}
            }
            match (p.from, p.remote) {
                (Some(client), _) => self.emit(|| Event::Message {
                    client,
                    room: p.room,
                    message: p.message,
                }),
                (None, Some(instance)) => self.emit(|| Event::Remote {
                    room: p.room,
                    message: p.message,
                    instance,
                }),
                (None, None) => {}
            }
        }
        self.lanes.metrics().received(received, received_bytes);
        self.enforce_budget();
    }

    fn shutdown(&mut self) {
        let close = Close::ShuttingDown.frame();
        let all =
            (self.rooms.values().flatten().flat_map(|lane| lane.iter())).chain(self.echo.values());
        let mut n = 0;
        for m in all {
            m.outbox.close_now(close.clone());
            n += 1;
        }
        info!("hub: closing {n} clients");
        self.echo.clear();
        for (client, (room, lane)) in std::mem::take(&mut self.where_is) {
            self.leave(client, room, lane);
        }
    }

    fn emit(&mut self, event: impl FnOnce() -> Event) {
        if self.subscribers.is_empty() {
            return;
        }
        let event = event();
        let mut dropped = 0;
        self.subscribers
            .retain(|s| match s.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
        if dropped > 0 {
            self.dropped_events += dropped;
            // Powers of two: a stuck subscriber is reported, not logged per event.
            if self.dropped_events.is_power_of_two() {
                warn!(
                    "hub: {} events dropped so far: a subscriber is not keeping up",
                    self.dropped_events
                );
            }
        }
    }
}

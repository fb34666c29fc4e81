//! [`Handle`]: what a host program holds of a running server — the
//! cheap, cloneable, thread-safe way in from any thread: broadcast into a
//! room, send to one client, remove clients, list rooms and members, read
//! a room's history, subscribe to [`Events`], look at the server's
//! counters, ask for shutdown. The server API (`/api/`) is built on it.
//!
//! May touch: the hub's inbox (sending and asking), `Shared`'s counters,
//! Redis (asking who is in a room, through the bridge's view).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::bounded;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, Role};

use super::shared::{ANSWER_TIMEOUT, Shared};
use crate::http;
use crate::hub::{self, Command, Events, HubMsg};
use crate::id::ClientId;
use crate::presence::{MemberInfo, RoomInfo, RoomSummary};
use crate::session::close::Close;
use crate::session::frame::Frame;
use crate::{Error, Result};

/// `Ok` for `""` (the lobby) and a valid room name.
fn check_room(room: &str) -> Result<()> {
    if room.is_empty() || http::valid_room(room) {
        Ok(())
    } else {
        Err(Error::InvalidRoom(room.to_string()))
    }
}

/// A cheap, cloneable, thread-safe view of a running
/// [`Server`](crate::Server): broadcast, subscribe to events, ask for
/// shutdown.
#[derive(Clone)]
pub struct Handle {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("local_addr", &self.shared.local_addr)
            .field("clients", &self.client_count())
            .finish()
    }
}

impl Handle {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Subscribes to hub events. Each call makes a new subscription
    /// holding up to [`Config::event_queue`](crate::Config::event_queue)
    /// events; when it is full, further events are dropped for it rather
    /// than stalling the hub. Drop it to unsubscribe.
    pub fn events(&self) -> Events {
        let (tx, rx) = bounded(self.shared.config.event_queue.max(1));
        let _ = self.shared.hub.send(HubMsg::Subscribe(tx));
        Events::new(rx)
    }

    /// Sends a text or binary message to every client in `room` (`""` is the
    /// lobby at `/ws`).
    pub fn broadcast(&self, room: &str, message: Message) -> Result<()> {
        self.send_broadcast(room, message, None)
    }
    /// Sends a text or binary message to every client in `room`, like
    /// [`broadcast`](Handle::broadcast), and says how many clients of this
    /// instance it was offered to (with Redis it reaches the others too).
    pub fn publish(&self, room: &str, message: Message) -> Result<usize> {
        let (tx, rx) = bounded(1);
        self.send_broadcast(room, message, Some(tx))?;
        rx.recv_timeout(ANSWER_TIMEOUT).map_err(|_| Error::Closed)
    }

    /// Sends a text or binary message to one client only, through its
    /// queue like any delivery (in order with its room's messages; a
    /// client whose queue is full is evicted with 1008). `Ok(false)` when
    /// no such client is connected here.
    pub fn send_to(&self, client: ClientId, message: Message) -> Result<bool> {
        let frame = Frame::data(Role::Server, &message)
            .ok_or(Error::NotData)?
            .charged(&self.shared.memory);
        self.command(|reply| Command::SendTo {
            client,
            frame,
            reply,
        })
    }

    /// Closes one client with `code` and `reason` (cut to fit a Close
    /// frame), after what is already queued for it is dropped. `Ok(false)`
    /// when no such client is connected here.
    pub fn disconnect(&self, client: ClientId, code: CloseCode, reason: &str) -> Result<bool> {
        let close = Close::Hook(code, reason.to_string()).frame();
        self.command(|reply| Command::Remove {
            client,
            room: None,
            close,
            reply,
        })
    }

    /// Closes every connection whose token subject is `sub` with 1008
    /// "removed" — in every room, on every instance (through Redis) — and
    /// says how many were closed here.
    pub fn disconnect_user(&self, sub: &str) -> Result<usize> {
        self.remove_user(sub, "removed")
    }

    /// [`disconnect_user`](Handle::disconnect_user) with a reason.
    pub(crate) fn remove_user(&self, sub: &str, reason: &str) -> Result<usize> {
        let (sub, reason) = (sub.into(), reason.into());
        self.command(|reply| Command::RemoveUser { sub, reason, reply })
    }

    /// Closes the client `id` (as [`MemberInfo::id`] names it, on any
    /// instance) if it is in `room`, with 1008 `reason`. `Ok(false)` when
    /// it is not there.
    pub(crate) fn remove(&self, room: &str, id: &str, reason: &str) -> Result<bool> {
        let Some((instance, number)) = id.split_once(':') else {
            return Ok(false);
        };
        if instance == &*self.shared.instance {
            let Ok(number) = number.parse() else {
                return Ok(false);
            };
            let close = Close::Removed(reason.to_string()).frame();
            let room = Some(room.into());
            return self.command(|reply| Command::Remove {
                client: ClientId(number),
                room,
                close,
                reply,
            });
        }
        if !self.members(room)?.iter().any(|m| m.id == id) {
            return Ok(false);
        }
        let (key, reason) = (id.to_string(), reason.to_string());
        self.shared
            .hub
            .send(HubMsg::Command(Command::RemoveRemote { key, reason }))
            .map_err(|_| Error::Closed)?;
        Ok(true)
    }

    /// Every room with clients on this instance, by name.
    pub fn rooms(&self) -> Result<Vec<RoomSummary>> {
        self.shared.ask(hub::Query::Rooms).ok_or(Error::Closed)
    }

    /// Who is in `room`, oldest first: on every instance with Redis (when
    /// Redis answers), on this one otherwise. Empty for an unknown room.
    pub fn members(&self, room: &str) -> Result<Vec<MemberInfo>> {
        Ok(self
            .room(room)?
            .map(|info| info.members)
            .unwrap_or_default())
    }

    /// This server's id among instances: [`MemberInfo::id`] is
    /// `{instance}:{number}`.
    pub fn instance_id(&self) -> &str {
        &self.shared.instance
    }

    /// `room`'s counts and members (on every instance, with Redis);
    /// `None` for a room with no clients and no history anywhere.
    pub(crate) fn room(&self, room: &str) -> Result<Option<RoomInfo>> {
        check_room(room)?;
        let name: Arc<str> = room.into();
        let local = self
            .shared
            .ask(|tx| hub::Query::Room(name.clone(), tx))
            .ok_or(Error::Closed)?;
        let instance = &self.shared.instance;
        let mut local = local.map(|mut info| {
            for m in &mut info.members {
                m.id = format!("{instance}:{}", m.client.map_or(0, ClientId::get));
            }
            info
        });
        // With Redis, who is there spans the instances.
        let Some(everywhere) = self.shared.bridge.get().and_then(|b| b.presence_of(room)) else {
            return Ok(local);
        };
        let mut info = local.take().unwrap_or_else(|| RoomInfo {
            summary: RoomSummary {
                name: room.to_string(),
                clients: 0,
                messages: 0,
                history: 0,
            },
            members: Vec::new(),
        });
        if everywhere.is_empty() && info.summary.clients == 0 && info.summary.history == 0 {
            return Ok(None);
        }
        // Local entries keep their client; Redis may not have them yet.
        let mut members = info.members;
        for m in everywhere {
            if !members.iter().any(|l| l.id == m.id) {
                members.push(m);
            }
        }
        members.sort_by_key(|m| m.joined_ms);
        info.members = members;
        Ok(Some(info))
    }

    /// Sends a command to the hub and waits for its answer.
    fn command<T: Send + 'static>(
        &self,
        command: impl FnOnce(Option<crossbeam_channel::Sender<T>>) -> Command,
    ) -> Result<T> {
        let (tx, rx) = bounded(1);
        self.shared
            .hub
            .send(HubMsg::Command(command(Some(tx))))
            .map_err(|_| Error::Closed)?;
        rx.recv_timeout(ANSWER_TIMEOUT).map_err(|_| Error::Closed)
    }

    fn send_broadcast(
        &self,
        room: &str,
        message: Message,
        reply: Option<crossbeam_channel::Sender<usize>>,
    ) -> Result<()> {
        check_room(room)?;
        let frame = Frame::data(Role::Server, &message)
            .ok_or(Error::NotData)?
            .charged(&self.shared.memory);
        self.shared
            .hub
            .send(HubMsg::Broadcast {
                from: None,
                room: Some(room.into()),
                frame,
                message,
                reply,
            })
            .map_err(|_| Error::Closed)
    }

    /// Bytes the server holds for its clients right now — messages being
    /// received and frames queued for writers — counted against
    /// [`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.memory.used()
    }

    /// Connections closed with 1013 so far because a message would have
    /// taken the buffered bytes over [`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes).
    pub fn refused_for_memory(&self) -> u64 {
        self.shared.memory.refused()
    }

    /// Clients evicted (1008) so far because queued frames took the
    /// buffered bytes over [`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes).
    pub fn evicted_for_memory(&self) -> u64 {
        self.shared.memory.evicted()
    }

    /// With [`Config::redis`](crate::Config::redis): whether both of the bridge's connections to
    /// Redis are up (`None` without a bridge). While they are down, local
    /// clients are served as always and messages do not cross instances.
    pub fn redis_connected(&self) -> Option<bool> {
        self.shared.redis_connected()
    }

    /// The messages `room` keeps in its history (see [`Config::history`](crate::Config::history)),
    /// oldest first.
    pub fn history(&self, room: &str) -> Result<Vec<Message>> {
        check_room(room)?;
        let room: Arc<str> = room.into();
        self.shared
            .ask(|tx| hub::Query::History(room, tx))
            .ok_or(Error::Closed)
    }

    /// Open WebSocket connections right now.
    pub fn client_count(&self) -> usize {
        self.shared.clients.load(Ordering::Relaxed)
    }

    /// Asks the server to shut down: [`Server::run`](crate::Server::run) returns once it has.
    /// Safe to call from any thread, any number of times.
    pub fn shutdown(&self) {
        self.shared.lock().stop_requested = true;
        self.shared.changed.notify_all();
    }
}

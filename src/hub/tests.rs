//! The hub driven without sockets: members whose outboxes are plain
//! queues (no wire), read back as their writers would read them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, Role};

use super::{Event, HubMsg, Lanes, Limits, Member, run};
use crate::history;
use crate::hub::member::Join;
use crate::id::ClientId;
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::session::frame::Frame;
use crate::session::outbox::{self, Bound, Mailbox};

const STEP: Duration = Duration::from_secs(5);

/// A hub thread of its own, with an event subscriber.
struct TestHub {
    inbox: Sender<HubMsg>,
    events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl TestHub {
    fn start(history: usize) -> TestHub {
        let limits = Limits {
            echo_sender: false,
            messages: 4,
            bytes: 1 << 20,
            deflate: None,
        };
        let lanes = Lanes::start(limits, Arc::new(Metrics::default()));
        let bounds = history::Bounds {
            messages: history,
            bytes: 1 << 20,
            age: Duration::from_secs(3600),
        };
        let (inbox, rx) = unbounded();
        let memory = Memory::new(1 << 30);
        let thread = std::thread::spawn(move || run(rx, lanes, memory, None, bounds));
        let (tx, events) = bounded(1024);
        inbox.send(HubMsg::Subscribe(tx)).expect("hub");
        TestHub {
            inbox,
            events,
            thread: Some(thread),
        }
    }

    /// Registers client `id` in `room` (asking for `history` messages);
    /// its mailbox, once the hub says it joined.
    fn join(&self, id: u64, room: &str, history: Option<usize>, bound: Bound) -> Mailbox {
        let (outbox, mailbox) = outbox::new(bound, None, None);
        let member = Member {
            id: ClientId(id),
            room: Some(room.into()),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            outbox,
            join: Arc::new(Join {
                history,
                name: format!("c{id}").into(),
                at: Some(SystemTime::now()),
                ..Join::default()
            }),
        };
        self.inbox.send(HubMsg::Register(member)).expect("hub");
        loop {
            match self.events.recv_timeout(STEP).expect("an event") {
                Event::Joined { client, .. } if client == ClientId(id) => return mailbox,
                _ => {}
            }
        }
    }

    fn say(&self, from: u64, text: &str) {
        let message = Message::text(text);
        let frame = Frame::data(Role::Server, &message).expect("data");
        let from = Some(ClientId(from));
        let (room, msg) = (None, message);
        let broadcast = HubMsg::Broadcast {
            from,
            room,
            frame,
            message: msg,
            reply: None,
        };
        self.inbox.send(broadcast).expect("hub");
    }

    /// Waits until the hub has handled everything sent so far.
    fn settle(&self) {
        let (tx, rx) = bounded(1);
        self.inbox
            .send(HubMsg::Query(super::Query::Rooms(tx)))
            .expect("hub");
        rx.recv_timeout(STEP).expect("the hub answers");
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        let _ = self.inbox.send(HubMsg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The texts queued in `mailbox` so far, in the order its writer gets them.
fn texts(mailbox: &Mailbox) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(entry) = mailbox.try_next() {
        for frame in entry.frames() {
            out.push(String::from_utf8_lossy(frame.payload()).into_owned());
        }
    }
    out
}

const ROOMY: Bound = Bound {
    messages: 1 << 20,
    bytes: 1 << 30,
};

#[test]
fn each_member_gets_the_rooms_messages_in_the_hubs_order_and_not_its_own() {
    let hub = TestHub::start(0);
    let a = hub.join(1, "r", None, ROOMY);
    let b = hub.join(2, "r", None, ROOMY);
    let other = hub.join(3, "elsewhere", None, ROOMY);
    for i in 0..200 {
        hub.say(1 + i % 2, &format!("m{i}"));
    }
    hub.settle();
    let from = |who: u64| -> Vec<String> {
        (0..200)
            .filter(|i| 1 + i % 2 == who)
            .map(|i| format!("m{i}"))
            .collect()
    };
    assert_eq!(texts(&a), from(2));
    assert_eq!(texts(&b), from(1));
    assert!(texts(&other).is_empty());
}

#[test]
fn a_joiner_gets_the_history_snapshot_then_live_messages_nothing_twice() {
    let hub = TestHub::start(100);
    let _a = hub.join(1, "h", None, ROOMY);
    for i in 0..5 {
        hub.say(1, &format!("old {i}"));
    }
    let late = hub.join(2, "h", Some(3), ROOMY);
    hub.say(1, "live");
    hub.settle();
    assert_eq!(texts(&late), ["old 2", "old 3", "old 4", "live"]);
}

#[test]
fn a_member_whose_queue_is_full_is_evicted_with_1008_and_the_others_get_everything() {
    let hub = TestHub::start(0);
    let tight = Bound {
        messages: 4,
        bytes: 1 << 30,
    };
    let slow = hub.join(1, "e", None, tight);
    let fine = hub.join(2, "e", None, ROOMY);
    let _sender = hub.join(3, "e", None, ROOMY);
    for i in 0..10 {
        hub.say(3, &format!("m{i}"));
        hub.settle();
    }
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&fine), want);
    assert!(slow.take_raised(), "the slow member was asked to close");
    let close = slow.take_close().expect("a close");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "send queue full");
    // What fit before its bound, and nothing offered after the eviction.
    assert_eq!(texts(&slow), want[..4]);
    hub.say(3, "after");
    hub.settle();
    assert!(texts(&slow).is_empty());
    assert_eq!(texts(&fine), ["after"]);
}

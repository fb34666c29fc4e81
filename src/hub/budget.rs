//! The hub's share of the memory budget: when queued frames take what the
//! server buffers past what queues may hold, the clients with the most
//! queued go first.
//!
//! May touch: member outboxes (eviction), the budget's counters.

use log::warn;

use super::Hub;
use crate::hub::member::Member;
use crate::session::close::Close;

impl Hub {
    /// While what the server buffers is over what queues may take of its
    /// budget (see `Memory::queue_excess`), evicts the clients with the
    /// most bytes queued (1008), largest first, among those more than a
    /// writer batch behind; their queues are dropped at once. A frame that other queues still hold frees nothing, so this
    /// goes on until the total is under it.
    pub(super) fn enforce_budget(&mut self) {
        if self.memory.queue_excess().is_none() {
            return;
        }
        let mut queued: Vec<(usize, &Member)> = self
            .rooms
            .chat_members()
            .map(|m| (m.outbox.queued_bytes(), m))
            // A queue of no more than one writer batch is keeping up: the
            // frames it holds are the newest, held by the others as well,
            // so evicting it would free nothing (and would drop a reader
            // that is merely a batch behind, while the excess left is in
            // writes already under way).
            .filter(|(bytes, _)| *bytes > crate::session::MAX_BATCH_BYTES)
            .collect();
        queued.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        for (bytes, m) in queued {
            if self.memory.queue_excess().is_none() {
                break;
            }
            let close = Close::MemoryBudget.frame();
            if m.outbox.evict(close) {
                self.memory.count_evicted();
                warn!(
                    client = m.id.0, room = m.room.as_deref().unwrap_or("");
                    "{} evicted from room {:?}: {bytes} bytes queued while the server holds {} of its {} byte budget",
                    m.id,
                    m.room.as_deref().unwrap_or(""),
                    self.memory.used(),
                    self.memory.limit()
                );
            }
        }
    }
}

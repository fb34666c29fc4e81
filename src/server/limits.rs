//! What the system lets this process start: the thread budget, from the
//! kernel's and the process's limits, read once when a server starts.
//!
//! May touch: nothing but `/proc` (reading).

use log::info;

/// How many connection threads the kernel will let this process start.
///
/// Each thread costs four memory mappings (its stack and guard page, and
/// the alternate signal stack Rust gives every thread, with its guard), and
/// `vm.max_map_count` (65530 by default) bounds mappings per process; the
/// system-wide `kernel.threads-max` bounds threads. When a thread cannot get
/// its mappings, Rust aborts the whole process, so the server stays below.
pub(super) fn thread_budget() -> usize {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
    };
    let maps = read("/proc/sys/vm/max_map_count").unwrap_or(65530);
    let by_maps = maps.saturating_sub(4096) / 4;
    let by_threads = read("/proc/sys/kernel/threads-max").map_or(usize::MAX, |t| t / 2);
    let budget = by_maps.min(by_threads);
    info!(
        "thread budget {budget} (vm.max_map_count {maps}): room for about {} WebSocket clients",
        budget / 2
    );
    budget
}

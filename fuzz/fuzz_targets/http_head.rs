//! Fuzzes the HTTP request-head parser and router: any bytes give a route
//! or a 4xx, never a panic, and never a large allocation.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 8 << 10;

/// Counts live bytes and the largest single allocation.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    // The server never holds more than the head limit.
    let data = &data[..data.len().min(MAX_HEAD)];
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    match wshub::fuzzing::parse_head(data, MAX_HEAD) {
        Ok(Some((request, len))) => {
            assert!(len <= data.len());
            match wshub::fuzzing::route(&request) {
                Ok(_) => {}
                Err(r) => assert!(r.status.is_client_error(), "{r:?}"),
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD),
        Err(r) => assert!(r.status.is_client_error(), "{r:?}"),
    }
    // Parsing a head of at most 8 KiB must not need more than a few times that.
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(peak <= 64 * MAX_HEAD, "peak {peak} bytes for a {} byte head", data.len());
    assert!(LARGEST.load(Ordering::Relaxed) <= 8 * MAX_HEAD);
});

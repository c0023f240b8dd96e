//! The global allocator: mimalloc (as the `weft-relay` binary uses), counting the bytes the
//! program holds while the `memory` workload asks for it, so that memory a process keeps can
//! be told apart from memory the allocator keeps (freed, but in pages it has not returned).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

/// mimalloc, counting live bytes while [`Counting::start`] is in effect.
pub struct Counting;

impl Counting {
    /// Counts from now on (allocations made before and freed after count as negative: only
    /// differences between two readings mean something).
    pub fn start() {
        ON.store(true, Ordering::Relaxed);
    }

    /// Bytes allocated minus bytes freed since [`Counting::start`].
    pub fn live() -> i64 {
        LIVE.load(Ordering::Relaxed)
    }
}

fn count(delta: i64) {
    if ON.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to mimalloc unchanged; counting touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: as for `alloc`.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract).
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: as for `dealloc`, and `new_size` is the caller's valid new size.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

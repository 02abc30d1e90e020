//! A counting global allocator: the system allocator plus counters of allocations and bytes,
//! for the allocation budget test (`tests/tests/replay_allocations.rs`) and the bench
//! (`logbook-bench-compare`), which install it with `#[global_allocator]`.
//!
//! Owns: [`CountingAllocator`] and its process-wide counters. Must never: change what the
//! system allocator returns, allocate itself (it is the allocator), or be installed in a
//! library or production binary (the counters cost an atomic add per allocation).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting every allocation (`alloc`, `alloc_zeroed`, and `realloc`,
/// which may move the block) and the bytes asked for. Frees are not counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

/// Allocations and bytes counted so far, process-wide (every thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Calls of `alloc`, `alloc_zeroed` and `realloc`.
    pub allocations: u64,
    /// Bytes those calls asked for.
    pub bytes: u64,
}

impl Counts {
    /// The counts since `earlier`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// The counters now. Meaningful only where [`CountingAllocator`] is the global allocator
/// (zero otherwise).
pub fn counts() -> Counts {
    Counts {
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        bytes: ALLOCATED_BYTES.load(Ordering::Relaxed),
    }
}

fn count(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract (layouts, pointers, no unwinding) is `System`'s; the counting is two
// relaxed atomic adds, which neither allocate nor panic.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract for `layout`; passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds `realloc`'s
        // contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: CountingAllocator = CountingAllocator;

    /// Allocations are counted, and what the allocator hands out is usable memory.
    #[test]
    fn counts_allocations_and_returns_usable_memory() {
        let before = counts();
        let mut bytes = vec![7u8; 1000];
        bytes.resize(5000, 9);
        let text = String::from("counted");
        let after = counts().since(before);
        assert!(after.allocations >= 3, "{after:?}");
        assert!(after.bytes >= 6000, "{after:?}");
        assert_eq!(bytes[999], 7);
        assert_eq!(bytes[4999], 9);
        assert_eq!(text, "counted");
    }
}

//! A counting global allocator: how many bytes a decoder holds at its peak, per thread, so a
//! check can assert that a decoder refuses an oversize input before it allocates for it.
//!
//! The binaries that run the checks (the libFuzzer targets, the corpus replay) install it with
//! `#[global_allocator] static ALLOCATOR: CountingAllocator = CountingAllocator;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, counting the bytes each thread holds.
pub struct CountingAllocator;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    // Const-initialised and without a destructor: usable from inside the allocator.
    // Signed: memory allocated on one thread and freed on another makes a thread's count go
    // down past zero, and only differences on one thread are used.
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = HELD.try_with(|held| {
        let now = held.get().wrapping_add(bytes as isize);
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = HELD.try_with(|held| held.set(held.get().wrapping_sub(bytes as isize)));
}

// SAFETY: every call is forwarded to `System` unchanged; the counters never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // A realloc may copy: count the new block before the old one goes.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

/// Runs `f` and returns its result with the most bytes this thread held during it beyond what
/// it held before. Panics unless [`CountingAllocator`] is the global allocator: a check that
/// could not measure would pass for the wrong reason.
pub fn peak_while<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = HELD.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let result = f();
    assert!(
        INSTALLED.load(Ordering::Relaxed),
        "the counting allocator is not installed: add #[global_allocator] static ALLOCATOR: sdsim_fuzz_checks::alloc::CountingAllocator = sdsim_fuzz_checks::alloc::CountingAllocator;"
    );
    let peak = PEAK.with(Cell::get);
    (result, usize::try_from(peak - before).unwrap_or(0))
}

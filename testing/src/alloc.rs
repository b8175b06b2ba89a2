//! An allocator that counts, per thread, the bytes allocated (never freed), so a test can bound
//! what one call allocates. A test binary installs it as its global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: sdsim_testing::alloc::Counting = sdsim_testing::alloc::Counting;
//! ```
//!
//! and measures with [`allocated_during`], which panics when the allocator is not installed
//! (a bound on a count that is always 0 would hold whatever the code did).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, counting what each thread allocates.
pub struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

/// Whether [`Counting`] has seen an allocation, i.e. is this process's global allocator.
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn count(bytes: usize) {
    INSTALLED.store(true, Ordering::Relaxed);
    // `try_with`: the thread-local may be gone while a thread exits.
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + bytes));
}

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// `f`'s result and the bytes allocated on this thread while it ran.
pub fn allocated_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    assert!(
        INSTALLED.load(Ordering::Relaxed),
        "sdsim_testing::alloc::Counting is not this test binary's #[global_allocator]"
    );
    let before = ALLOCATED.with(Cell::get);
    let result = f();
    (result, ALLOCATED.with(Cell::get) - before)
}

#[cfg(test)]
mod tests {
    /// This unit-test binary keeps the system allocator: measuring must refuse, not report 0.
    #[test]
    #[should_panic(expected = "is not this test binary's #[global_allocator]")]
    fn measuring_without_the_allocator_installed_panics() {
        let _ = super::allocated_during(|| vec![0u8; 64]);
    }
}

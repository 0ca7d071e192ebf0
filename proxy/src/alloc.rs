//! Handing freed memory back to the OS.
//!
//! mimalloc keeps freed memory for reuse and returns it to the OS ("purges"
//! it) a second after it was freed, but only when it next gets around to it:
//! when a thread allocates a fresh page or collects its heap. A proxy that
//! goes quiet after a burst (large bodies held whole, thousands of
//! connections closed at once) therefore kept the burst's memory resident:
//! 141 MB of RSS 30 s after four 50 MB uploads had gone through, against
//! 20 MB before them (docs/benchmarks.md, round 49). Two calls do it:
//! - [`return_free_memory`] at once, after a known one-off allocation
//!   (loading the eBPF objects makes aya parse the kernel's BTF, tens of MB
//!   freed right after);
//! - [`purge_idle_memory`], a loop every thread that serves connections
//!   runs, which lets each heap hand back its empty pages and the arenas
//!   their expired ranges every [`PURGE_EVERY`].

use std::time::Duration;

// Links libmimalloc (the binary's global allocator), which defines `mi_collect`.
use mimalloc as _;

unsafe extern "C" {
    fn mi_collect(force: bool);
}

/// How often [`purge_idle_memory`] runs: twice mimalloc's purge delay (1 s
/// in mimalloc 3), so memory freed in a burst is back with the OS within
/// about three seconds of the burst.
pub const PURGE_EVERY: Duration = Duration::from_secs(2);

/// Returns mimalloc's free memory (the calling thread's empty pages, and
/// purgeable arena memory) to the OS. Harmless when mimalloc is not the
/// global allocator (the library's unit tests): its heaps are then empty.
pub fn return_free_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread
    // at any time; `force` makes it free and purge instead of deferring.
    unsafe { mi_collect(true) }
}

/// Every [`PURGE_EVERY`], hands back to the OS the calling thread's empty
/// pages and the arena memory (shared by all threads) freed longer ago than
/// mimalloc's purge delay. Not forced: memory freed within the delay stays
/// for reuse, as it would under load, so a busy proxy pays nothing it would
/// not pay anyway (mimalloc purges as it allocates), and a quiet one does
/// not keep a burst's memory. Runs until its task is dropped; spawn it on
/// every runtime thread that serves connections, since each thread has its
/// own heap.
pub async fn purge_idle_memory() {
    let mut every = tokio::time::interval(PURGE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // SAFETY: as in `return_free_memory`; not forced, so only what
        // mimalloc would purge itself at its next allocation goes.
        unsafe { mi_collect(false) }
    }
}

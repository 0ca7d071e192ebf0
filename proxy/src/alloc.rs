//! Handing freed memory back to the OS after a large one-off allocation.
//!
//! Loading the eBPF objects makes aya parse the kernel's BTF, tens of MB that
//! are freed right after. mimalloc keeps freed memory for reuse and returns it
//! to the OS only when it next gets around to purging; on a proxy that then
//! serves only small requests that can take a long time. [`return_free_memory`]
//! does it at once.

// Links libmimalloc (the binary's global allocator), which defines `mi_collect`.
use mimalloc as _;

unsafe extern "C" {
    fn mi_collect(force: bool);
}

/// Returns mimalloc's free memory (the calling thread's empty pages, and
/// purgeable arena memory) to the OS. Harmless when mimalloc is not the
/// global allocator (the library's unit tests): its heaps are then empty.
pub fn return_free_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread
    // at any time; `force` makes it free and purge instead of deferring.
    unsafe { mi_collect(true) }
}

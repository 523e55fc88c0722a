//! The allocator's memory policy for batch work: a replay keeps the memory it frees for its
//! next lake file instead of handing it back to the kernel.
//!
//! Each lake file's rows are built in column buffers of a few MB, sorted into new ones and
//! encoded, then all of it is freed; mimalloc gives freed memory back to the kernel after a
//! second (its `purge_delay`), so the next file's buffers were mostly fresh pages that the
//! kernel zeroed on first touch. On a day of 2 000 nodes that was 267 000 page faults and 10 %
//! of the CPU in the kernel's `clear_page`. A replay is a batch job whose memory ends with it,
//! so it turns purging off; the live server keeps the default and returns memory after a load
//! passes.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (`enum mi_option_e`, the 16th
/// option), which the `libmimalloc-sys` bindings do not name: how many ms freed memory is kept
/// before it is returned to the kernel; -1 for never. (v2 has it at the same place.)
const PURGE_DELAY: mi_option_t = 15;

/// mimalloc v3's default for [`PURGE_DELAY`], ms (`src/options.c`).
#[cfg(test)]
const DEFAULT_PURGE_DELAY: std::ffi::c_long = 1000;

/// From now on freed memory stays with the process for reuse, never returned to the kernel.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
    unsafe { mi_option_set(PURGE_DELAY, -1) };
    tracing::debug!(purge_delay = purge_delay(), "allocator keeps freed memory");
}

/// The allocator's current purge delay, ms (-1: never).
pub fn purge_delay() -> std::ffi::c_long {
    // SAFETY: reading an option is thread-safe in mimalloc.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_is_mimallocs_purge_delay() {
        // Its default is purge_delay's 1 000 ms (no other option defaults to 1 000), so the
        // number names the right option of the bundled mimalloc. The test process runs with
        // the default unless MIMALLOC_PURGE_DELAY is set.
        assert_eq!(purge_delay(), DEFAULT_PURGE_DELAY);
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
        // SAFETY: as in `keep_freed_memory`.
        unsafe { mi_option_set(PURGE_DELAY, DEFAULT_PURGE_DELAY) };
    }
}

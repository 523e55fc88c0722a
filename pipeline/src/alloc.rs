//! The allocator's memory policy: no transparent huge pages in any command, and for batch
//! work, a replay keeps the memory it frees for its next lake file instead of handing it back
//! to the kernel.
//!
//! Huge pages: mimalloc asks the kernel for transparent huge pages on its arenas (`madvise`),
//! but returns memory in 64 KiB pieces; each piece touched again faulted in, and zeroed, a
//! whole 2 MiB page. Queries over the lake paid for it most: in `lake_sql`, run on this
//! allocator, the period per node and metric took 15 ms with huge pages and 3.4 ms without,
//! the latest state per node 34 against 31 ms. A replay is no slower without them (CPU ×0.98,
//! wall ×0.99, peak RSS 443 against 471 MiB).
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

/// `mi_option_allow_thp` in mimalloc v3's `mimalloc.h` (the 44th option, also unnamed by the
/// bindings): whether mimalloc `madvise`s its arenas for transparent huge pages (default 1).
const ALLOW_THP: mi_option_t = 43;

/// mimalloc v3's default for [`PURGE_DELAY`], ms (`src/options.c`).
#[cfg(test)]
const DEFAULT_PURGE_DELAY: std::ffi::c_long = 1000;

/// From now on freed memory stays with the process for reuse, never returned to the kernel.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
    unsafe { mi_option_set(PURGE_DELAY, -1) };
    tracing::debug!(purge_delay = purge_delay(), "allocator keeps freed memory");
}

/// No transparent huge pages for this process from now on: mimalloc stops asking for them, and
/// the kernel gives none (`PR_SET_THP_DISABLE`, what mimalloc does itself when the option is 0
/// at its start, before `main` could set it).
pub fn no_transparent_huge_pages() {
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
    unsafe { mi_option_set(ALLOW_THP, 0) };
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and changes only this process's flag.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        // An old kernel or a sandbox: huge pages stay as the system has them. Not an error.
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "transparent huge pages left as the system sets them"
        );
    }
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

    /// The kernel's view of this process's huge pages (`THP_enabled` in its status).
    fn thp_enabled() -> Option<bool> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
        Some(line.split_whitespace().nth(1)? == "1")
    }

    #[test]
    fn huge_pages_are_off_for_the_process_and_for_mimalloc() {
        // SAFETY: reading an option is thread-safe in mimalloc.
        let before = unsafe { mi_option_get(ALLOW_THP) };
        assert_eq!(before, 1, "mimalloc allows huge pages by default");
        no_transparent_huge_pages();
        // SAFETY: as above.
        assert_eq!(unsafe { mi_option_get(ALLOW_THP) }, 0);
        // Kernels before 6.x do not report it; where they do, it is off.
        if let Some(enabled) = thp_enabled() {
            assert!(!enabled, "the kernel still gives this process huge pages");
        }
    }
}

//! Tuning of mimalloc, the relay binary's global allocator.

/// mimalloc's `purge_delay` option. The Rust bindings name no constant for it, so it is
/// derived from its named successor: in mimalloc's `mi_option_e` (v2 and v3 alike)
/// `mi_option_purge_delay` comes right before `mi_option_use_numa_nodes`. The tests check the
/// id against mimalloc itself, through the option's environment variable.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// How long mimalloc keeps freed memory before returning it to the OS, unless the operator set
/// `MIMALLOC_PURGE_DELAY`.
pub const ALLOCATOR_PURGE_DELAY_MS: i64 = 60_000;

/// Tunes mimalloc, the relay binary's global allocator, for a busy relay: freed memory is
/// returned to the OS after [`ALLOCATOR_PURGE_DELAY_MS`] instead of mimalloc's default second.
/// Under load the relay frees and reuses pages continuously; with a one-second delay a
/// purged page was faulted back in (and zeroed, as a 2 MiB huge page) soon after, so the
/// relay spent CPU faulting in memory it was about to reuse anyway. A minute, not less: a
/// document's buffers are rebuilt at each of its compactions, which are further apart than
/// seconds (decision 0007 has the measurements). Memory the relay stops using still goes back
/// to the OS, a minute later.
///
/// Call it first thing in `main`, in a binary whose global allocator is `mimalloc::MiMalloc`
/// (elsewhere it configures an allocator nothing uses). An operator's `MIMALLOC_PURGE_DELAY`
/// wins.
pub fn tune_allocator() {
    disable_thp();
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set takes any option id and value; options are atomics that mimalloc
    // reads on each purge decision, so setting one while other threads allocate is allowed.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS as _) };
}

/// Lets mimalloc return what this thread freed more than [`ALLOCATOR_PURGE_DELAY_MS`] ago.
/// mimalloc purges a thread's freed pages only from that thread, when it next allocates or
/// frees past the delay: a relay gone quiet (its documents evicted, its devices idle) kept
/// everything it had freed resident for good. The hub calls this from its housekeeping, a few
/// times a minute; it visits the thread's pages that are not full and purges only what is
/// past the delay, so memory about to be reused stays. Does nothing when mimalloc is not the
/// global allocator (its heaps are then empty).
pub(crate) fn release_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Transparent huge pages off for this process, unless the operator set
/// `MIMALLOC_ALLOW_THP`: mimalloc asks for them on its arenas, so each thread's first touch
/// of its heap faulted in a whole 2 MiB page; an idle relay's five threads held 14 MiB that
/// way, more than half of its 25 MiB RSS (1.7 MiB of heap without). mimalloc's own
/// `allow_thp=0` does the same but is read at its initialisation, so the `weft-relay` binary
/// calls this from a constructor, before anything is allocated ([`tune_allocator`] calls it
/// too, for binaries without one); it applies to every later fault. It allocates nothing. The
/// `throughput` workload measured no difference in CPU per change.
pub fn disable_thp() {
    #[cfg(target_os = "linux")]
    // SAFETY: getenv reads the environment with a NUL-terminated name (no allocation, which
    // matters before main); PR_SET_THP_DISABLE takes an integer flag and only sets this
    // process's huge-page policy. Nothing else runs yet when the constructor calls it.
    unsafe {
        if libc::getenv(c"MIMALLOC_ALLOW_THP".as_ptr()).is_null() {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process of `the_option_id_is_mimallocs_purge_delay`.
    const CHILD: &str = "WEFT_TEST_MIMALLOC_CHILD";
    /// A purge delay no default has, given to the child through mimalloc's own variable.
    const FROM_ENV: i64 = 4_321;

    // `c_long` is `i64` here but `i32` on some targets, where the conversion is not useless.
    #[allow(clippy::useless_conversion)]
    fn option() -> i64 {
        // SAFETY: mi_option_get takes any option id; it only reads the option's atomic.
        i64::from(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) })
    }

    /// mimalloc reads each option from `MIMALLOC_<name>` once per process, so the test runs
    /// itself again in a child whose environment sets `MIMALLOC_PURGE_DELAY`: the option our
    /// id names has that value exactly when the id is `purge_delay`.
    #[test]
    fn the_option_id_is_mimallocs_purge_delay() {
        if std::env::var_os(CHILD).is_some() {
            assert_eq!(option(), FROM_ENV, "option {MI_OPTION_PURGE_DELAY}");
            return;
        }
        let exe = std::env::current_exe().expect("the test binary has a path");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "allocator::tests::the_option_id_is_mimallocs_purge_delay",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("MIMALLOC_PURGE_DELAY", FROM_ENV.to_string())
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn tuning_sets_the_purge_delay_unless_the_operator_did() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        tune_allocator();
        assert_eq!(option(), ALLOCATOR_PURGE_DELAY_MS);
    }
}

//! Returning freed heap to the kernel.
//!
//! glibc's malloc gives memory back on its own only from the top of an arena: pages freed
//! below a live allocation stay resident until something reuses them. A daemon that works in
//! bursts (a Go binary's analysis inflating its DWARF, an exec storm, API lists) and idles
//! between them keeps each arena's high-water mark resident: about 4 MiB of an idle
//! `odiglet run` with 100 pods (BENCHMARKS.md). `malloc_trim` returns every free page of every
//! arena; this module is the one place that calls it.

use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tracing::trace;

/// How often [`scavenge`] runs in `odiglet run`: idle memory settles within this long after a
/// burst, for a few hundred microseconds of CPU a run.
pub const SCAVENGE_PERIOD: Duration = Duration::from_secs(10);

/// Returns the allocator's free pages to the kernel (glibc only; a no-op elsewhere).
pub fn release_free() {
    #[cfg(target_env = "gnu")]
    {
        #[expect(
            unsafe_code,
            reason = "glibc's malloc_trim is only reachable through FFI"
        )]
        // SAFETY: `malloc_trim` takes no pointers and only releases pages of free chunks, under
        // the arenas' own locks; memory in use is untouched, so it is sound from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Calls [`release_free`] every `period`, forever (the task is dropped with the runtime).
pub async fn scavenge(period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; start-up frees what it used when it is done, not before.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let started = Instant::now();
        release_free();
        trace!(took = ?started.elapsed(), "free heap returned to the kernel");
    }
}

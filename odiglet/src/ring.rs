//! Async readiness for eBPF ring buffers: the one place odiglet registers a raw fd with tokio.

use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::{Interval, MissedTickBehavior},
};

/// A ring buffer whose readiness the tokio reactor reports.
pub type AsyncRingBuf = AsyncFd<RingBuf<MapData>>;

/// Registers `ring` with the current tokio reactor. Must be called inside a runtime.
pub fn register(ring: RingBuf<MapData>) -> io::Result<AsyncRingBuf> {
    #[expect(
        unsafe_code,
        reason = "tokio's fd registration is unsafe; its contract holds here"
    )]
    // SAFETY: `RingBuf` owns its map fd, which stays open and unchanged until the `RingBuf` is
    // dropped; the `AsyncFd` owns the `RingBuf`, so the fd outlives the registration, and
    // `as_raw_fd` always returns that same fd.
    let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
    registered.map_err(io::Error::from)
}

/// Waits until `ring` has records to drain with `ring.get_mut().next()`.
///
/// Readiness is cleared before the caller drains: the kernel wakes a reader only for records
/// committed while it is caught up, so a record committed after the drain finds the ring empty
/// and raises readiness again. Clearing after draining could lose that wake-up for good.
pub async fn wait_ready(ring: &mut AsyncRingBuf) -> io::Result<()> {
    ring.readable_mut().await?.clear_ready();
    Ok(())
}

/// How often a span ring is drained without a wakeup. The Go probes wake the reader only once
/// a ring is 1/8 full (odiglet-ebpf `submit_span`), which spares a busy server a wakeup and a
/// context switch per span; this timer bounds how long a span waits at low rates. 20 ms is
/// small beside the exporter's batching delay and costs 50 task wakeups a second, far below
/// the idle CPU measured for the manager.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// The timer of a reader that drains on [`DRAIN_INTERVAL`] as well as on readiness.
pub fn drain_timer() -> Interval {
    let mut timer = tokio::time::interval(DRAIN_INTERVAL);
    // After a long drain, tick once rather than in a burst.
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// Waits until `ring` is readable or `timer` ticks, whichever comes first; then the caller
/// drains. Cancel-safe: readiness that arrives meanwhile is kept for the next call.
pub async fn wait_ready_or_tick(ring: &mut AsyncRingBuf, timer: &mut Interval) -> io::Result<()> {
    tokio::select! {
        ready = wait_ready(ring) => ready,
        _ = timer.tick() => Ok(()),
    }
}

//! Async readiness for eBPF ring buffers: the one place odiglet registers a raw fd with tokio.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

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

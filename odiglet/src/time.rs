//! Converting the kernel's boot-time timestamps (`bpf_ktime_get_boot_ns`) to wall-clock time.

use nix::time::{ClockId, clock_gettime};

/// The offset between `CLOCK_REALTIME` and `CLOCK_BOOTTIME` at one instant. Re-read it per
/// batch of events: the wall clock can be stepped, boot time cannot.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    realtime_ns: u64,
    boottime_ns: u64,
}

fn nanos(clock: ClockId) -> u64 {
    // These clocks exist on every kernel odiglet supports; 0 would only skew timestamps.
    clock_gettime(clock).map_or(0, |ts| {
        u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec()).unwrap_or(0)
    })
}

impl BootClock {
    pub fn now() -> Self {
        let boottime_ns = nanos(ClockId::CLOCK_BOOTTIME);
        let realtime_ns = nanos(ClockId::CLOCK_REALTIME);
        Self {
            realtime_ns,
            boottime_ns,
        }
    }

    /// A clock with given readings, for tests.
    pub fn fixed(realtime_ns: u64, boottime_ns: u64) -> Self {
        Self {
            realtime_ns,
            boottime_ns,
        }
    }

    /// Wall-clock nanoseconds since the Unix epoch for a boot-time timestamp.
    pub fn boot_to_unix_nanos(&self, boot_ns: u64) -> u64 {
        (i128::from(self.realtime_ns) - i128::from(self.boottime_ns) + i128::from(boot_ns))
            .clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Wall-clock nanoseconds at the reading.
    pub fn unix_now_nanos(&self) -> u64 {
        self.realtime_ns
    }
}

/// Kubernetes `metav1.Time` text (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_boot_time_to_wall_clock() {
        let clock = BootClock::fixed(1_700_000_000_000_000_000, 10_000);
        assert_eq!(clock.boot_to_unix_nanos(10_000), 1_700_000_000_000_000_000);
        assert_eq!(clock.boot_to_unix_nanos(9_000), 1_699_999_999_999_999_000);
        assert_eq!(
            BootClock::fixed(5, 10).boot_to_unix_nanos(0),
            0,
            "clamped, not wrapped"
        );
    }

    #[test]
    fn live_clock_is_after_2020() {
        let clock = BootClock::now();
        assert!(clock.unix_now_nanos() > 1_577_836_800_000_000_000);
        let now_boot = nanos(ClockId::CLOCK_BOOTTIME);
        let converted = clock.boot_to_unix_nanos(now_boot);
        assert!(converted.abs_diff(nanos(ClockId::CLOCK_REALTIME)) < 1_000_000_000);
    }
}

//! Cost of the process-lifecycle probe on an exec-heavy workload (with vs without an
//! `odiglet processes` running beside it, as on a node), and how fast the reader drains a full
//! ring buffer. Needs root. `cargo bench -p odiglet --bench lifecycle`.
//!
//! Arms run interleaved in rounds on the same machine, so the ratio to the baseline is what
//! to read: absolute figures on these shared VMs are noisy.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::resource::{UsageWho, getrusage};
use odiglet::process::{ProcessEventKind, ProcessWatcher, WatcherConfig};

const ROUNDS: usize = 7;
const EXECS_PER_ROUND: usize = 2000;
const DRAIN_PROCESSES: usize = 3000;

/// Wall time and CPU time of one arm.
#[derive(Clone, Copy, Default)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

fn rusage_cpu(who: UsageWho) -> Duration {
    let usage = getrusage(who).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

/// CPU time of another process so far, from `/proc/<pid>/stat` (utime + stime, in ticks).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_comm
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // After the comm: state is not numeric, so utime/stime are fields 11 and 12 here.
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// Runs `n` fork+exec of /bin/true; CPU counts this process, its children (the execs, where
/// the probe's kernel work is charged) and, when given, odiglet.
fn spawn_true(n: usize, odiglet: Option<u32>) -> Cost {
    let cpu_before = rusage_cpu(UsageWho::RUSAGE_SELF) + rusage_cpu(UsageWho::RUSAGE_CHILDREN);
    let odiglet_before = odiglet.map_or(Duration::ZERO, process_cpu);
    let start = Instant::now();
    for _ in 0..n {
        let status = Command::new("/bin/true").status().expect("/bin/true runs");
        assert!(status.success());
    }
    let wall = start.elapsed();
    let cpu_after = rusage_cpu(UsageWho::RUSAGE_SELF) + rusage_cpu(UsageWho::RUSAGE_CHILDREN);
    let odiglet_cpu = odiglet
        .map_or(Duration::ZERO, process_cpu)
        .saturating_sub(odiglet_before);
    Cost {
        wall,
        cpu: cpu_after - cpu_before + odiglet_cpu,
    }
}

/// An `odiglet processes` child, attached and consuming, as it runs on a node.
struct Odiglet(Child);

impl Odiglet {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_odiglet"))
            .args(["processes", "--json", "--no-scan"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("odiglet starts");
        // Its first log line says the probe is attached.
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let attached = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            attached.contains("attached"),
            "odiglet failed to start: {attached}"
        );
        // Keep draining stderr so odiglet never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        Self(child)
    }
}

impl Drop for Odiglet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn with_odiglet(extra: &[&str], n: usize) -> Cost {
    let odiglet = Odiglet::start(extra);
    spawn_true(n, Some(odiglet.0.id()))
}

fn median(samples: &[Cost], pick: fn(&Cost) -> Duration) -> Duration {
    let mut values: Vec<Duration> = samples.iter().map(pick).collect();
    values.sort();
    values[values.len() / 2]
}

fn per_exec_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED (needs root/BPF): lifecycle benchmark");
        return;
    }
    let (mut base, mut report, mut filter) = (Vec::new(), Vec::new(), Vec::new());
    spawn_true(200, None); // warm up caches
    for _ in 0..ROUNDS {
        base.push(spawn_true(EXECS_PER_ROUND, None));
        report.push(with_odiglet(&[], EXECS_PER_ROUND));
        // A filter no process here satisfies: every exec pays for the full environment scan.
        filter.push(with_odiglet(
            &["--env-filter", "ODIGOS_POD_NAME"],
            EXECS_PER_ROUND,
        ));
    }
    println!(
        "exec-heavy workload: {ROUNDS} rounds x {EXECS_PER_ROUND} fork+exec of /bin/true (medians)"
    );
    println!(
        "  {:<46} {:>14} {:>8} {:>14} {:>8}",
        "arm", "wall us/exec", "ratio", "cpu us/exec", "ratio"
    );
    let (base_wall, base_cpu) = (median(&base, |c| c.wall), median(&base, |c| c.cpu));
    for (name, arm) in [
        ("baseline (no odiglet)", &base),
        ("odiglet processes, every exec reported", &report),
        ("odiglet processes --env-filter (rejects all)", &filter),
    ] {
        let (wall, cpu) = (median(arm, |c| c.wall), median(arm, |c| c.cpu));
        println!(
            "  {name:<46} {:>14.1} {:>8.3} {:>14.1} {:>8.3}",
            per_exec_us(wall, EXECS_PER_ROUND),
            wall.as_secs_f64() / base_wall.as_secs_f64(),
            per_exec_us(cpu, EXECS_PER_ROUND),
            cpu.as_secs_f64() / base_cpu.as_secs_f64(),
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let reporting = WatcherConfig {
        scan_existing: false,
        ..WatcherConfig::standalone()
    };
    // Drain rate: let the ring buffer fill while nobody consumes, then time the reader.
    let mut watcher = runtime
        .block_on(async { ProcessWatcher::start(reporting) })
        .expect("probe loads");
    spawn_true(DRAIN_PROCESSES, None);
    let expected = 2 * DRAIN_PROCESSES; // an exec and an exit each
    let (events, elapsed) = runtime.block_on(async {
        let start = Instant::now();
        let mut n = 0;
        while n < expected {
            match tokio::time::timeout(Duration::from_secs(10), watcher.next()).await {
                Ok(Some(event))
                    if matches!(event.kind, ProcessEventKind::Exec | ProcessEventKind::Exit) =>
                {
                    n += 1
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        (n, start.elapsed())
    });
    println!(
        "reader drain: {events} events (exec+exit of {DRAIN_PROCESSES} processes) in {:.1} ms = {:.0} events/s",
        elapsed.as_secs_f64() * 1e3,
        events as f64 / elapsed.as_secs_f64()
    );
}

//! Cost of the process-lifecycle probe on an exec-heavy workload, and how fast the reader
//! drains a full ring buffer. Needs root. `cargo bench -p odiglet --bench lifecycle`.
//!
//! Arms run interleaved in rounds on the same machine, so the ratio to the baseline is what
//! to read: absolute figures on these shared VMs are noisy.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use odiglet::process::{ProcessEventKind, ProcessFilter, ProcessWatcher, WatcherConfig};

const ROUNDS: usize = 5;
const EXECS_PER_ROUND: usize = 2000;
const DRAIN_PROCESSES: usize = 3000;

fn spawn_true(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let status = Command::new("/bin/true").status().expect("/bin/true runs");
        assert!(status.success());
    }
    start.elapsed()
}

/// Runs `n` execs with a watcher attached and a consumer draining it.
fn with_watcher(runtime: &tokio::runtime::Runtime, config: WatcherConfig, n: usize) -> Duration {
    let mut watcher = runtime
        .block_on(async { ProcessWatcher::start(config) })
        .expect("probe loads");
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let consumer = runtime.spawn(async move {
        loop {
            tokio::select! {
                event = watcher.next() => if event.is_none() { break },
                _ = &mut stop_rx => break,
            }
        }
        watcher
    });
    let elapsed = spawn_true(n);
    let _ = stop_tx.send(());
    let watcher = runtime.block_on(consumer).expect("consumer task");
    assert_eq!(
        watcher.counters().lost(),
        0,
        "the bench must not lose events"
    );
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn per_exec_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED (needs root/BPF): lifecycle benchmark");
        return;
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
    // A filter no process here satisfies: every exec pays for the full environment scan.
    let filtering = WatcherConfig {
        filter: ProcessFilter::new(Some("ODIGOS_POD_NAME"), &[]).expect("valid filter"),
        ..reporting.clone()
    };

    let (mut base, mut report, mut filter) = (Vec::new(), Vec::new(), Vec::new());
    spawn_true(200); // warm up caches
    for _ in 0..ROUNDS {
        base.push(spawn_true(EXECS_PER_ROUND));
        report.push(with_watcher(&runtime, reporting.clone(), EXECS_PER_ROUND));
        filter.push(with_watcher(&runtime, filtering.clone(), EXECS_PER_ROUND));
    }
    let (base, report, filter) = (median(base), median(report), median(filter));
    println!(
        "exec-heavy workload: {ROUNDS} rounds x {EXECS_PER_ROUND} fork+exec of /bin/true (median round)"
    );
    println!(
        "  {:<44} {:>8.1} us/exec   ratio 1.000",
        "baseline (no probe)",
        per_exec_us(base, EXECS_PER_ROUND)
    );
    for (name, d) in [
        ("probe, every exec reported", report),
        ("probe, env filter rejecting every exec", filter),
    ] {
        println!(
            "  {name:<44} {:>8.1} us/exec   ratio {:.3}",
            per_exec_us(d, EXECS_PER_ROUND),
            d.as_secs_f64() / base.as_secs_f64()
        );
    }

    // Drain rate: let the ring buffer fill while nobody consumes, then time the reader.
    let mut watcher = runtime
        .block_on(async { ProcessWatcher::start(reporting) })
        .expect("probe loads");
    spawn_true(DRAIN_PROCESSES);
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

//! Runtime-inspection throughput: processes inspected per second when the quick scan decides
//! (python3 by name) and when the deep scan must (a renamed python3), against a baseline
//! measured in the same run: a bare `readlink /proc/<pid>/exe` loop over the same processes.
//!
//! `cargo bench -p odiglet --bench inspect` (needs /usr/bin/python3; as root or as the owner of
//! the processes, which the bench starts itself).

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use odiglet::inspect::{Inspector, Stage};

const PROCESSES: usize = 8;
const MEASURE: Duration = Duration::from_secs(2);

/// Children killed on drop.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(python: &Path, count: usize) -> Children {
    let children = (0..count)
        .map(|_| {
            Command::new(python)
                .args(["-c", "import time; time.sleep(600)"])
                .env("PYTHONHOME", "/usr")
                .stdin(Stdio::null())
                .spawn()
                .expect("start python")
        })
        .collect();
    let children = Children(children);
    let target = fs::canonicalize(python).expect("python exists");
    let deadline = Instant::now() + Duration::from_secs(10);
    for child in &children.0 {
        let pid = child.id();
        while !(fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == target)
            && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()))
        {
            assert!(Instant::now() < deadline, "python did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    children
}

/// Runs `op` over `pids` round-robin for [`MEASURE`]; operations per second.
fn rate(pids: &[u32], mut op: impl FnMut(u32)) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < MEASURE {
        for pid in pids {
            op(*pid);
        }
        done += pids.len() as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

#[expect(clippy::print_stdout, reason = "a bench reports on stdout")]
fn main() {
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "/usr/bin/python3 is missing: run `cargo xtask setup`"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let renamed = dir.path().join("myservice");
    fs::copy(fs::canonicalize(python).expect("python"), &renamed).expect("copy python");

    let quick = start(python, PROCESSES);
    let deep = start(&renamed, PROCESSES);
    let inspector = Inspector::new("/proc");
    let pids = |children: &Children| children.0.iter().map(Child::id).collect::<Vec<_>>();
    let (quick_pids, deep_pids) = (pids(&quick), pids(&deep));
    for (pids, stage) in [(&quick_pids, Stage::Quick), (&deep_pids, Stage::Deep)] {
        for pid in pids {
            let details = inspector.inspect(*pid).expect("inspect");
            assert_eq!(details.stage, stage, "{pid} decided by the wrong scan");
        }
    }

    let all: Vec<u32> = quick_pids.iter().chain(&deep_pids).copied().collect();
    let baseline = rate(&all, |pid| {
        let _ = std::hint::black_box(fs::read_link(format!("/proc/{pid}/exe")));
    });
    let quick_rate = rate(&quick_pids, |pid| {
        let _ = std::hint::black_box(inspector.inspect(pid));
    });
    let deep_rate = rate(&deep_pids, |pid| {
        let _ = std::hint::black_box(inspector.inspect(pid));
    });
    println!("runtime inspection ({PROCESSES} processes per case, {MEASURE:?} each)");
    println!("  baseline readlink /proc/<pid>/exe  {baseline:>10.0} /s");
    println!(
        "  quick scan (python3 by name)       {quick_rate:>10.0} /s  ({:.4} of baseline)",
        quick_rate / baseline
    );
    println!(
        "  deep scan (renamed python3)        {deep_rate:>10.0} /s  ({:.4} of baseline)",
        deep_rate / baseline
    );
}

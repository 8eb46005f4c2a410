//! Memory and CPU of the instrumentation manager (lifecycle probe, Go probes, span reader,
//! exporter, manager task) as `odiglet run` hosts it: idle with 20 instrumented Go processes in
//! one container cgroup, then after 10 000 exec/exit cycles of short processes in that
//! container (plus 300 short-lived Go processes, attached and detached). Needs root and Go
//! (`cargo xtask setup`). `cargo bench -p odiglet --bench manager`.
//!
//! Figures are this process's (the bench binary links the whole odiglet library, as the
//! daemon does); the baseline is the same process with its tokio runtime up and nothing
//! loaded, measured in the same run.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use std::{
    fs,
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::resource::{UsageWho, getrusage};
use odiglet::{
    export::ExportTarget,
    manager::{
        ContainerKey, ContainerTarget, InstanceReason, InstrumentationManager, ManagerConfig,
        ManagerHandle, ManagerRequest, TracesConfig,
    },
    opamp::InstanceQueue,
    process::cgroup2_mount_from_mountinfo,
};

use self::daemon::{
    Cgroups, Children, ContainerCgroup, exec_churn_script, free_port, memory, mib, wait_until,
};

const PROCESSES: usize = 20;
const EXEC_CYCLES: usize = 10_000;
const GO_CYCLES: usize = 300;
const IDLE: Duration = Duration::from_secs(10);
const POD_UID: &str = "b3e1c0de-1111-2222-3333-444455556666";
const CONTAINER_ID: &str = "be0c4a11be0c4a11be0c4a11be0c4a11be0c4a11be0c4a11be0c4a11be0c4a11";

fn cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

fn loaded(handle: &ManagerHandle) -> usize {
    handle
        .snapshot()
        .iter()
        .filter(|s| s.state == InstanceReason::LoadedSuccessfully)
        .count()
}

fn main() {
    let Some((root, go)) = common::privileged_go("manager") else {
        return;
    };
    let binary = common::build_go_server(&go, &root.join("target/bench-manager"));
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mount = cgroup2_mount_from_mountinfo(&mountinfo).expect("a cgroup v2 hierarchy");
    let cgroups = Cgroups::create(
        &mount,
        &[ContainerCgroup {
            pod_uid: POD_UID.into(),
            container_id: CONTAINER_ID.into(),
        }],
    );
    let scope = cgroups.scopes()[0].clone();

    // The daemon's runtime shape: two workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let baseline = memory("self");

    let mut services = Children(Vec::new());
    let mut ports = Vec::new();
    for _ in 0..PROCESSES {
        let port = free_port();
        let child = Command::new(&binary)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("service");
        cgroups.enter(0, child.id());
        services.0.push(child);
        ports.push(port);
    }
    for port in &ports {
        wait_until("service", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", *port)).is_ok()
        });
    }

    let mut config = ManagerConfig::new(ExportTarget::OtlpGrpc {
        endpoint: "http://127.0.0.1:4317".into(),
    });
    config.cgroup_root = cgroups.root().to_owned();
    config.propagation = false;
    // Both rings (spans, lifecycle) are mapped into this process: `BENCH_RING_KIB` resizes them.
    if let Some(kib) = std::env::var("BENCH_RING_KIB")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        config.ring_buffer_bytes = kib << 10;
        config.watcher.ring_buffer_bytes = kib << 10;
    }
    println!(
        "rings: spans {} KiB, lifecycle {} KiB",
        config.ring_buffer_bytes >> 10,
        config.watcher.ring_buffer_bytes >> 10
    );
    config.rescan_every = Duration::from_secs(5);
    let key = ContainerKey {
        namespace: "bench".into(),
        pod: "bench-pod".into(),
        container: "app".into(),
    };
    let target = ContainerTarget {
        key: key.clone(),
        pod_uid: POD_UID.into(),
        container_id: Some(CONTAINER_ID.into()),
        qos_class: Some("Burstable".into()),
        workload: None,
        service_name: "bench".into(),
        distro: "golang-community".into(),
        traces: TracesConfig::default(),
    };
    let start = Instant::now();
    let manager = runtime.block_on(async {
        InstrumentationManager::start(config, InstanceQueue::disabled()).expect("manager starts")
    });
    // Probes loaded (kernel BTF read, both rings mapped), nothing analyzed yet.
    let loaded_memory = memory("self");
    let handle = manager.handle();
    runtime
        .block_on(manager.requests().send(ManagerRequest::Apply(target)))
        .expect("apply");
    wait_until("20 instrumented", Duration::from_secs(120), || {
        loaded(&handle) == PROCESSES
    });
    let to_instrument = start.elapsed();

    // Idle: probes attached, nothing happening.
    std::thread::sleep(Duration::from_secs(2));
    let (cpu_before, wall_before) = (cpu(), Instant::now());
    std::thread::sleep(IDLE);
    let idle_cpu = (cpu() - cpu_before).as_secs_f64() / wall_before.elapsed().as_secs_f64();
    let idle = memory("self");

    // Churn: short processes exec'd in the container (examined, found not Go, forgotten at
    // exit), and short-lived Go processes (attached, then detached at exit).
    let churn_start = Instant::now();
    let status = Command::new("/bin/sh")
        .args(["-c", &exec_churn_script(&scope, EXEC_CYCLES)])
        .status()
        .expect("churn");
    assert!(status.success());
    let attached_before = handle.stats().attached_total;
    for _ in 0..GO_CYCLES {
        let script = format!(
            "echo $$ > {}/cgroup.procs; exec \"$0\" 0 exit",
            scope.display()
        );
        let status = Command::new("/bin/sh")
            .args(["-c", &script])
            .arg(&binary)
            .stdout(Stdio::null())
            .status()
            .expect("go churn");
        assert!(status.success() || status.code().is_some());
    }
    let churn_time = churn_start.elapsed();
    // Exits handled, rescans pruned what they could.
    wait_until("churn settled", Duration::from_secs(60), || {
        handle.snapshot().len() == PROCESSES
    });
    std::thread::sleep(Duration::from_secs(6));
    let after = memory("self");
    let stats = handle.stats();
    let go_attached = stats.attached_total - attached_before;

    let totals = runtime.block_on(manager.shutdown()).totals;
    drop(services);
    drop(cgroups);

    println!("manager: {PROCESSES} Go processes instrumented in {to_instrument:.2?}");
    println!(
        "| state | VmRSS MiB | RssAnon MiB | RssFile MiB | RssShmem MiB | ratio to baseline |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, m) in [
        ("baseline (runtime up, nothing loaded)", baseline),
        ("probes loaded, nothing instrumented", loaded_memory),
        ("idle, 20 processes instrumented", idle),
        ("after churn", after),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            mib(m.rss),
            mib(m.anon),
            mib(m.file),
            mib(m.shmem),
            m.rss as f64 / baseline.rss.max(1) as f64
        );
    }
    println!(
        "idle CPU: {:.3}% of one core over {IDLE:?}",
        idle_cpu * 100.0
    );
    println!(
        "churn: {EXEC_CYCLES} exec/exit + {GO_CYCLES} Go exec/exit in {churn_time:.1?}; \
         {go_attached} Go processes attached and detached; not-Go skipped {}; \
         RSS after/idle {:.3}, RssAnon after/idle {:.3}",
        stats.skipped_not_go_total,
        after.rss as f64 / idle.rss.max(1) as f64,
        after.anon as f64 / idle.anon.max(1) as f64,
    );
    println!("lost span records: {}", totals.probes.ringbuf_full);
}

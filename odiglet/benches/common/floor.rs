//! The floor under the Go probes: `uprobe_floor`'s programs (an empty one and a counting one)
//! attached at exactly the points where `GoProbes::attach` puts its uprobes.

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use odiglet::instrument::ProcessTargets;

/// The empty-uprobe object built by `cargo xtask build-ebpf` (benchmarks only).
pub fn floor_object(root: &Path) -> PathBuf {
    root.join("target/ebpf/bpfel-unknown-none/release/uprobe_floor")
}

/// Exactly the points where `GoProbes::attach` puts a uprobe on a net/http program: the
/// entries and RETs of the server and client functions and the entry of the connection
/// function (these targets link no gRPC or database/sql).
fn probe_points(targets: &ProcessTargets) -> Vec<u64> {
    let entries = [
        &targets.http_server,
        &targets.http_client,
        &targets.connection,
    ];
    let returns = [&targets.http_server, &targets.http_client];
    let entry_points = entries.into_iter().flatten().map(|f| f.entry);
    let return_points = returns
        .into_iter()
        .flatten()
        .flat_map(|f| f.returns.iter().copied());
    entry_points.chain(return_points).collect()
}

/// `program` of the floor object attached at every probe point of `pid`; dropping detaches.
pub fn attach_floor(object: &Path, program: &str, pid: u32, targets: &ProcessTargets) -> Ebpf {
    let mut ebpf = Ebpf::load_file(object).expect("load the floor object");
    let probe: &mut UProbe = ebpf
        .program_mut(program)
        .expect("floor program")
        .try_into()
        .expect("a uprobe");
    probe.load().expect("load floor program");
    let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("pid"));
    for offset in probe_points(targets) {
        probe
            .attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                &targets.exe,
                scope,
            )
            .expect("attach floor uprobe");
    }
    ebpf
}

/// Hits counted by `floor_count`.
#[allow(dead_code, reason = "only the throughput bench counts hits")]
pub fn floor_hits(ebpf: &Ebpf) -> u64 {
    let hits: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("FLOOR_HITS").expect("FLOOR_HITS")).expect("per-cpu array");
    hits.get(&0, 0).expect("slot 0").iter().sum()
}

//! Go `net/http` instrumentation against the real kernel.

use odiglet::instrument::{AttachError, GoProbes};

use crate::support::privileges::privileged;

#[test]
fn go_probes_pass_the_verifier_and_hand_out_their_ring_buffer_once() {
    if !privileged("go_probes_pass_the_verifier_and_hand_out_their_ring_buffer_once") {
        return;
    }
    let mut probes = GoProbes::load(1 << 20).expect("every Go program loads");
    probes.take_spans().expect("the ring buffer is there");
    assert!(matches!(probes.take_spans(), Err(AttachError::SpansTaken)));
    // Detaching a process never attached is a no-op, and nothing is in flight.
    probes.detach(4_000_000);
    assert_eq!(probes.in_flight(4_000_000), 0);
    assert_eq!(probes.counters(), Default::default());
    assert_eq!(probes.attached().count(), 0);

    // The socket programs (sock_ops + sk_msg with bpf_loop scans) load and attach to the
    // cgroup v2 root; enabling twice is a no-op.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup2 = odiglet::process::cgroup2_mount_from_mountinfo(&mountinfo)
        .expect("a cgroup v2 hierarchy is mounted");
    probes
        .enable_propagation(&cgroup2)
        .expect("sock_ops and sk_msg attach");
    probes.enable_propagation(&cgroup2).expect("idempotent");
}

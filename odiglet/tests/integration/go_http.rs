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
}

//! Arbitrary bytes as ring-buffer records (Go spans and lifecycle events): decoding never
//! panics, and a span that decodes, packed again as the probes send it, decodes to a span that
//! packs to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odiglet::pipeline::record_bytes;
use odiglet_common::{decode_go_span, decode_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(span) = decode_go_span(data) {
        let packed = record_bytes(&span);
        let again = decode_go_span(&packed).expect("a packed span decodes");
        assert_eq!(record_bytes(&again), packed);
    }
    let _ = decode_record(data);
});

//! Arbitrary statement text through the SQL sanitizer: it must never panic, never grow the text
//! beyond its bound, and never let a quoted literal through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odiglet::pipeline::sql;

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let clean = sql::sanitize(&query);
    assert!(clean.len() <= query.len().min(sql::MAX_QUERY) * 3 + 4);
    // Quoted identifiers are kept verbatim and may hold a quote; without them none survives.
    if !query.contains(['"', '`']) {
        assert!(!clean.contains('\''), "a string literal survived: {clean:?}");
    }
    let _ = sql::summarize(&clean);
});

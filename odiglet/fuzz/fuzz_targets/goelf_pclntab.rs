//! `.gopclntab` parsing of arbitrary bytes: every offset bounded, no panic, bounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odiglet::goelf::pclntab;

fuzz_target!(|data: &[u8]| {
    let names = [
        "main.main",
        "net/http.serverHandler.ServeHTTP",
        "net/http.(*Transport).roundTrip",
    ];
    let _ = pclntab::find_functions(&mut &data[..], &names, 0x40_1000);
});

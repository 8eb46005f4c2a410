//! Synthesized `.gopclntab` images (1.16 and 1.18/1.20 layouts) and hostile variants.
#![expect(
    clippy::indexing_slicing,
    reason = "fixtures are patched at known offsets"
)]

use super::*;

/// A synthesized `.gopclntab` for `functions` (name, entry offset from the text start), the
/// last one ending at `end`.
struct Synth {
    magic: u32,
    ptr: usize,
    text_start: u64,
    functions: Vec<(&'static str, u64)>,
    end: u64,
}

impl Synth {
    fn go118(text_start: u64) -> Self {
        Self {
            magic: MAGIC_118,
            ptr: 8,
            text_start,
            functions: vec![
                ("runtime.main", 0x0),
                ("net/http.serverHandler.ServeHTTP", 0x40),
                ("net/http.serverHandler.ServeHTTPx", 0x100),
                ("main.main", 0x180),
            ],
            end: 0x200,
        }
    }

    fn word(&self, out: &mut Vec<u8>, value: u64) {
        if self.ptr == 8 {
            out.extend(value.to_le_bytes());
        } else {
            out.extend(u32::try_from(value).expect("small").to_le_bytes());
        }
    }

    fn build(&self) -> Vec<u8> {
        let go116 = self.magic == MAGIC_116;
        let words = if go116 { 7 } else { 8 };
        let header_len = 8 + words * self.ptr;
        let mut names = Vec::new();
        let mut name_offsets = Vec::new();
        for (name, _) in &self.functions {
            name_offsets.push(names.len() as u64);
            names.extend(name.as_bytes());
            names.push(0);
        }
        while names.len() % 8 != 0 {
            names.push(0);
        }
        let funcname = header_len as u64;
        let pcln = funcname + names.len() as u64;
        let nfunc = self.functions.len() as u64;
        let field = if go116 { self.ptr as u64 } else { 4 };
        let functab_len = (2 * nfunc + 1) * field;
        let func_len = if go116 { self.ptr as u64 + 12 } else { 16 };
        let mut out = Vec::new();
        out.extend(self.magic.to_le_bytes());
        out.extend([0, 0, 1, u8::try_from(self.ptr).expect("small")]);
        let header: Vec<u64> = if go116 {
            vec![nfunc, 1, funcname, 0, 0, 0, pcln]
        } else {
            vec![nfunc, 1, self.text_start, funcname, 0, 0, 0, pcln]
        };
        for value in header {
            self.word(&mut out, value);
        }
        out.extend(&names);
        let entry = |offset: u64| {
            if go116 {
                self.text_start + offset
            } else {
                offset
            }
        };
        let fields = |out: &mut Vec<u8>, value: u64| {
            if field == 4 {
                out.extend(u32::try_from(value).expect("small").to_le_bytes());
            } else {
                self.word(out, value);
            }
        };
        for (index, (_, offset)) in self.functions.iter().enumerate() {
            fields(&mut out, entry(*offset));
            fields(&mut out, functab_len + index as u64 * func_len);
        }
        fields(&mut out, entry(self.end));
        for ((_, offset), name_off) in self.functions.iter().zip(&name_offsets) {
            if go116 {
                self.word(&mut out, entry(*offset));
            } else {
                out.extend(u32::try_from(*offset).expect("small").to_le_bytes());
            }
            out.extend(u32::try_from(*name_off).expect("small").to_le_bytes());
            out.extend([0u8; 8]);
        }
        out
    }
}

fn find(table: &[u8], names: &[&str]) -> Result<Vec<PclnFunction>, PclntabError> {
    find_functions(&mut &table[..], names, 0x40_1000)
}

fn function(name: &str, entry: u64, end: u64) -> PclnFunction {
    PclnFunction {
        name: name.to_owned(),
        entry,
        end,
    }
}

#[test]
fn go_1_18_layout_resolves_only_the_names_asked_for() {
    for magic in [MAGIC_118, MAGIC_120] {
        let table = Synth {
            magic,
            ..Synth::go118(0x40_0000)
        }
        .build();
        let found = find(
            &table,
            &[
                "main.main",
                "net/http.serverHandler.ServeHTTP",
                "absent.func",
            ],
        )
        .expect("valid table");
        assert_eq!(
            found,
            vec![
                function("net/http.serverHandler.ServeHTTP", 0x40_0040, 0x40_0100),
                function("main.main", 0x40_0180, 0x40_0200),
            ]
        );
        assert_eq!(find(&table, &[]).expect("valid"), vec![]);
    }
}

#[test]
fn go_1_18_zero_text_start_uses_the_fallback() {
    let table = Synth::go118(0).build();
    let found = find(&table, &["runtime.main"]).expect("valid table");
    assert_eq!(found, vec![function("runtime.main", 0x40_1000, 0x40_1040)]);
}

#[test]
fn go_1_16_layout_with_8_and_4_byte_pointers() {
    for ptr in [8, 4] {
        let table = Synth {
            magic: MAGIC_116,
            ptr,
            ..Synth::go118(0x40_0000)
        }
        .build();
        let found = find(&table, &["net/http.serverHandler.ServeHTTPx"]).expect("valid");
        assert_eq!(
            found,
            vec![function(
                "net/http.serverHandler.ServeHTTPx",
                0x40_0100,
                0x40_0180
            )],
            "pointer size {ptr}"
        );
    }
}

#[test]
fn big_endian_magic_is_recognized() {
    let mut table = Synth::go118(0x40_0000).build();
    table[..4].copy_from_slice(&MAGIC_118.to_be_bytes());
    // Every other word is now read big-endian: garbage, but bounded and without panics.
    assert!(find(&table, &["main.main"]).is_err());
}

#[test]
fn hostile_headers_are_refused() {
    let valid = Synth::go118(0x40_0000).build();
    let set_word = |index: usize, value: u64| {
        let mut table = valid.clone();
        table[8 + index * 8..16 + index * 8].copy_from_slice(&value.to_le_bytes());
        table
    };
    assert!(matches!(
        find(&set_word(0, u64::MAX / 2), &["main.main"]),
        Err(PclntabError::TooManyFunctions { .. })
    ));
    assert!(matches!(
        find(&set_word(0, 1 << 40), &["main.main"]),
        Err(PclntabError::TooManyFunctions { .. })
    ));
    assert!(matches!(
        find(&set_word(7, u64::MAX - 3), &["main.main"]),
        Err(PclntabError::TooManyFunctions { .. })
    ));
    assert!(matches!(
        find(&set_word(3, 1 << 50), &["main.main"]),
        Err(PclntabError::OutOfRange { .. })
    ));
    let mut bad_magic = valid.clone();
    bad_magic[0] = 0xFB;
    assert_eq!(
        find(&bad_magic, &["main.main"]),
        Err(PclntabError::UnknownMagic(0xFFFF_FFFB))
    );
    let mut bad_ptr = valid.clone();
    bad_ptr[7] = 3;
    assert_eq!(
        find(&bad_ptr, &["main.main"]),
        Err(PclntabError::PointerSize(3))
    );
}

#[test]
fn out_of_range_function_records_and_names_are_errors() {
    let valid = Synth::go118(0x40_0000).build();
    let pcln = usize::try_from(u64::from_le_bytes(valid[64..72].try_into().expect("word")))
        .expect("small");
    // funcoff of the first function far out of the table.
    let mut table = valid.clone();
    table[pcln + 4..pcln + 8].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    assert!(matches!(
        find(&table, &["main.main"]),
        Err(PclntabError::OutOfRange { .. })
    ));
    // funcoff at the very end of the address space (1.16: pointer-sized).
    let go116 = Synth {
        magic: MAGIC_116,
        ..Synth::go118(0x40_0000)
    }
    .build();
    let pcln116 = usize::try_from(u64::from_le_bytes(go116[56..64].try_into().expect("word")))
        .expect("small");
    let mut table = go116;
    table[pcln116 + 8..pcln116 + 16]
        .copy_from_slice(&(u64::MAX - pcln116 as u64 - 2).to_le_bytes());
    assert!(matches!(
        find(&table, &["main.main"]),
        Err(PclntabError::OutOfRange { .. })
    ));
    // A negative nameoff.
    let functab_len = (2 * 4 + 1) * 4;
    let mut table = valid.clone();
    let nameoff = pcln + functab_len + 4;
    table[nameoff..nameoff + 4].copy_from_slice(&(-8i32).to_le_bytes());
    assert!(matches!(
        find(&table, &["main.main"]),
        Err(PclntabError::OutOfRange { .. })
    ));
    // A function whose end precedes its entry.
    let mut table = valid;
    table[pcln + 8..pcln + 12].copy_from_slice(&0u32.to_le_bytes());
    table[pcln..pcln + 4].copy_from_slice(&0x30u32.to_le_bytes());
    assert!(find(&table, &["runtime.main"]).is_err());
}

#[test]
fn every_truncation_and_byte_flip_is_handled_without_panic() {
    let names = ["main.main", "net/http.serverHandler.ServeHTTP"];
    for magic in [MAGIC_116, MAGIC_118] {
        let valid = Synth {
            magic,
            ..Synth::go118(0x40_0000)
        }
        .build();
        for len in 0..valid.len() {
            let _ = find(&valid[..len], &names);
        }
        for at in 0..valid.len() {
            for value in [0x00, 0x7F, 0x80, 0xFF] {
                let mut table = valid.clone();
                table[at] = value;
                let _ = find(&table, &names);
            }
        }
    }
}

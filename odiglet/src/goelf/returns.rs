//! RET instructions inside a function, where Go return probes attach (never uretprobes: they
//! rewrite the return address and Go's stack walking crashes on it).
//!
//! x86-64: a linear sweep with `iced-x86` (decodes `ENDBR64` and everything else; Go emits no
//! data inside functions). arm64: fixed 4-byte words, `RET Xn` by mask.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

/// `e_machine` values we can decode.
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// Instruction sets with a RET decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// From the ELF header's `e_machine`.
    pub fn from_machine(machine: u16) -> Option<Self> {
        match machine {
            EM_X86_64 => Some(Self::X86_64),
            EM_AARCH64 => Some(Self::Aarch64),
            _ => None,
        }
    }
}

/// `RET {Xn}` on arm64: `1101011 0 0 10 11111 000000 nnnnn 00000`.
const ARM64_RET_MASK: u32 = 0xFFFF_FC1F;
const ARM64_RET: u32 = 0xD65F_0000;

/// Virtual addresses of the RET instructions in `code`, which starts at `vaddr`.
pub fn return_addresses(arch: Arch, code: &[u8], vaddr: u64) -> Vec<u64> {
    match arch {
        Arch::X86_64 => x86_64(code, vaddr),
        Arch::Aarch64 => aarch64(code, vaddr),
    }
}

fn x86_64(code: &[u8], vaddr: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut found = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        // Near returns (`C3`, `C2 iw`); an undecodable byte is skipped as one instruction.
        if instruction.mnemonic() == Mnemonic::Ret {
            found.push(instruction.ip());
        }
    }
    found
}

fn aarch64(code: &[u8], vaddr: u64) -> Vec<u64> {
    code.chunks_exact(4)
        .zip((0u64..).map(|i| vaddr.wrapping_add(i * 4)))
        .filter(|(word, _)| {
            let word = u32::from_le_bytes([
                word.first().copied().unwrap_or(0),
                word.get(1).copied().unwrap_or(0),
                word.get(2).copied().unwrap_or(0),
                word.get(3).copied().unwrap_or(0),
            ]);
            word & ARM64_RET_MASK == ARM64_RET
        })
        .map(|(_, address)| address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_finds_every_ret_after_endbr64() {
        let code = [
            0xF3, 0x0F, 0x1E, 0xFA, // endbr64
            0x48, 0x89, 0xE5, // mov rbp, rsp
            0x74, 0x01, // je +1
            0xC3, // ret
            0x48, 0x83, 0xC4, 0x10, // add rsp, 0x10
            0xC2, 0x08, 0x00, // ret 8
            0xCC, // int3 (padding)
            0xB8, 0xC3, 0x00, 0x00, 0x00, // mov eax, 0xc3: a C3 byte that is no RET
            0xC3, // ret
        ];
        assert_eq!(
            return_addresses(Arch::X86_64, &code, 0x1000),
            vec![0x1009, 0x100E, 0x1017]
        );
    }

    #[test]
    fn x86_64_survives_garbage_and_truncation() {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let _ = return_addresses(Arch::X86_64, &garbage, u64::MAX - 10);
        // A truncated instruction at the end is not a RET.
        assert!(return_addresses(Arch::X86_64, &[0x48, 0x89], 0).is_empty());
        assert!(return_addresses(Arch::X86_64, &[], 0).is_empty());
    }

    #[test]
    fn aarch64_matches_ret_to_any_register_on_word_boundaries() {
        let words: [u32; 5] = [
            0xD503_233F, // paciasp
            0xD65F_03C0, // ret (x30)
            0x9100_03FD, // mov x29, sp
            0xD65F_0020, // ret x1
            0xD61F_0200, // br x16: not a return
        ];
        let mut code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        code.extend([0xC0, 0x03]); // a trailing half word is ignored
        assert_eq!(
            return_addresses(Arch::Aarch64, &code, 0x4000),
            vec![0x4004, 0x400C]
        );
    }
}

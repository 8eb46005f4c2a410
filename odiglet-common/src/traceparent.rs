//! W3C `traceparent` values (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`), parsed by
//! the Go probes from incoming headers. Here rather than in `odiglet-ebpf` so the host can test
//! it: the parser decodes eight digits per step with word arithmetic (SWAR), which runs in a
//! fraction of the instructions of a branch per character.

use crate::go::SpanContext;

/// Bytes of a version-00 value.
pub const TRACEPARENT_VALUE_LEN: usize = 55;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const CASE: u64 = ONES * 0x20;
const NIBBLE: u64 = ONES * 0x0f;

/// The high bit of every byte of `x` (each below 0x80) that lies in `lo..=hi`. Adding
/// `0x80 - lo` sets a byte's high bit when it is `>= lo`, adding `0x7f - hi` when it is `> hi`;
/// no byte carries into the next, as every sum stays below 0x100.
#[inline(always)]
const fn bytes_in(x: u64, lo: u8, hi: u8) -> u64 {
    (x + ONES * (0x80 - lo as u64)) & !(x + ONES * (0x7f - hi as u64)) & HIGH
}

/// The four bytes spelled by eight hex digits (either case; first digit in the lowest byte,
/// as loaded little-endian), in order; `None` when one is not a hex digit.
#[inline(always)]
fn hex_word(chars: u64) -> Option<u32> {
    if chars & HIGH != 0 {
        return None;
    }
    let digits = bytes_in(chars, b'0', b'9');
    // OR-ing 0x20 lowercases letters and leaves digits as they are.
    let letters = bytes_in(chars | CASE, b'a', b'f');
    if digits | letters != HIGH {
        return None;
    }
    // A letter's low nibble is 1..=6 in either case: 9 more makes it 10..=15.
    let nibbles = (chars & NIBBLE) + (letters >> 7) * 9;
    // Pair the nibbles into bytes (even lanes), then close the gaps.
    let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    Some((quads | (quads >> 16)) as u32)
}

#[inline(always)]
fn word_at(value: &[u8; TRACEPARENT_VALUE_LEN], at: usize) -> Option<u64> {
    let mut word = [0u8; 8];
    word.copy_from_slice(value.get(at..at + 8)?);
    Some(u64::from_le_bytes(word))
}

/// Decodes the `2 * N` digits at `at` into `out` (`N` a multiple of 4); false on a non-hex
/// digit.
#[inline(always)]
fn decode<const N: usize>(
    value: &[u8; TRACEPARENT_VALUE_LEN],
    at: usize,
    out: &mut [u8; N],
) -> bool {
    let mut i = 0;
    while i + 4 <= N {
        let Some(bytes) = word_at(value, at + 2 * i).and_then(hex_word) else {
            return false;
        };
        out[i..i + 4].copy_from_slice(&bytes.to_le_bytes());
        i += 4;
    }
    true
}

/// Parses a version-00 value; refuses other versions and all-zero ids. Hex digits of either
/// case are accepted.
#[inline(always)]
pub fn parse_traceparent(value: &[u8; TRACEPARENT_VALUE_LEN]) -> Option<SpanContext> {
    if value[0] != b'0'
        || value[1] != b'0'
        || value[2] != b'-'
        || value[35] != b'-'
        || value[52] != b'-'
    {
        return None;
    }
    let mut context = SpanContext::default();
    if !decode(value, 3, &mut context.trace_id) || !decode(value, 36, &mut context.span_id) {
        return None;
    }
    if context.trace_id == [0; 16] || context.span_id == [0; 8] {
        return None;
    }
    // The two flag digits, padded with zeros to a word: the first two bytes decode them.
    let flags = u64::from(value[53]) | (u64::from(value[54]) << 8) | 0x3030_3030_3030_0000;
    context.trace_flags = hex_word(flags)? as u8;
    Some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain reading of the format, one character at a time.
    fn reference(value: &[u8; TRACEPARENT_VALUE_LEN]) -> Option<SpanContext> {
        fn nibble(c: u8) -> Option<u8> {
            (c as char).to_digit(16).map(|d| d as u8)
        }
        let byte = |at: usize| Some(nibble(value[at])? << 4 | nibble(value[at + 1])?);
        if &value[..3] != b"00-" || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut context = SpanContext::default();
        for i in 0..16 {
            context.trace_id[i] = byte(3 + 2 * i)?;
        }
        for i in 0..8 {
            context.span_id[i] = byte(36 + 2 * i)?;
        }
        context.trace_flags = byte(53)?;
        if context.trace_id == [0; 16] || context.span_id == [0; 8] {
            return None;
        }
        Some(context)
    }

    const VALID: &[u8; TRACEPARENT_VALUE_LEN] =
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example() {
        let context = parse_traceparent(VALID).expect("valid");
        assert_eq!(
            context.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(
            context.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(context.trace_flags, 1);
    }

    #[test]
    fn refuses_zero_ids_other_versions_and_bad_separators() {
        let mut zero_trace = *VALID;
        zero_trace[3..35].fill(b'0');
        let mut zero_span = *VALID;
        zero_span[36..52].fill(b'0');
        let mut version = *VALID;
        version[1] = b'1';
        let mut separator = *VALID;
        separator[35] = b'_';
        for value in [zero_trace, zero_span, version, separator] {
            assert_eq!(parse_traceparent(&value), None);
        }
    }

    /// Every byte value at every digit position: the word arithmetic must accept exactly the
    /// hex digits and decode them as the reference does.
    #[test]
    fn matches_the_reference_for_every_byte_at_every_position() {
        let mut upper = *VALID;
        upper.make_ascii_uppercase();
        for base in [*VALID, upper] {
            for at in (3..35).chain(36..52).chain(53..55) {
                for byte in 0..=255u8 {
                    let mut value = base;
                    value[at] = byte;
                    assert_eq!(
                        parse_traceparent(&value),
                        reference(&value),
                        "byte {byte:#04x} at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_the_reference_on_random_digits() {
        const DIGITS: &[u8] = b"0123456789abcdefABCDEF";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut value = *VALID;
            for at in (3..35).chain(36..52).chain(53..55) {
                value[at] = DIGITS[(next() % DIGITS.len() as u64) as usize];
            }
            let context = parse_traceparent(&value);
            assert_eq!(context, reference(&value));
            assert!(context.is_some());
        }
    }
}

//! twemproxy's four FNV variants, each with the quirk it inherited.
//!
//! twemproxy reads key bytes through a `const char *`, which is signed on
//! the x86-64 and aarch64 Linux builds people run, so a byte ≥ 0x80 enters
//! the XOR sign-extended (`0xE9` becomes `0xFFFF_FFE9`). [`signed`] does the
//! same so non-ASCII keys land where twemproxy puts them.

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_INIT: u32 = 0x811c_9dc5;
const FNV_32_PRIME: u32 = 0x0100_0193;

/// A key byte as C's `(uint32_t)(char)b` sees it on a signed-char target.
pub(crate) fn signed(byte: u8) -> u32 {
    byte as i8 as i32 as u32
}

/// `fnv1_64`: a real 64-bit FNV-1 (with sign-extended bytes), truncated to
/// its low 32 bits.
pub(crate) fn fnv1_64(key: &[u8]) -> u32 {
    let hash = key.iter().fold(FNV_64_INIT, |hash, &byte| {
        hash.wrapping_mul(FNV_64_PRIME) ^ (byte as i8 as i64 as u64)
    });
    hash as u32
}

/// `fnv1a_64`: despite the name, a 32-bit FNV-1a run with the 64-bit
/// constants truncated to 32 bits (init `0x84222325`, prime `0x1b3`).
pub(crate) fn fnv1a_64(key: &[u8]) -> u32 {
    key.iter().fold(FNV_64_INIT as u32, |hash, &byte| {
        (hash ^ signed(byte)).wrapping_mul(FNV_64_PRIME as u32)
    })
}

/// `fnv1_32`: 32-bit FNV-1.
pub(crate) fn fnv1_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_INIT, |hash, &byte| {
        hash.wrapping_mul(FNV_32_PRIME) ^ signed(byte)
    })
}

/// `fnv1a_32`: 32-bit FNV-1a.
pub(crate) fn fnv1a_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_INIT, |hash, &byte| {
        (hash ^ signed(byte)).wrapping_mul(FNV_32_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_matches_reference_fnv() {
        // Published FNV test values: fnv1a_32("a") and fnv1_32("a").
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
        // With ASCII input, fnv1_64 is the real FNV-1 64 truncated.
        assert_eq!(fnv1_64(b"a"), 0xaf63_bd4c_8601_b7be_u64 as u32);
    }

    #[test]
    fn high_bytes_are_sign_extended() {
        assert_eq!(signed(0xe9), 0xffff_ffe9);
        assert_eq!(signed(0x7f), 0x7f);
        // Unsigned FNV-1a of [0xff] would be (init ^ 0xff) * prime.
        let unsigned = (FNV_32_INIT ^ 0xff).wrapping_mul(FNV_32_PRIME);
        assert_ne!(fnv1a_32(&[0xff]), unsigned);
    }
}

//! MurmurHash2 as twemproxy's `murmur`: the seed is `0xdeadbeef * len`.

const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

/// `murmur`. Words are read little-endian, as twemproxy's unaligned
/// `*(unsigned int *)` reads do on the hosts it runs on.
pub(crate) fn murmur(key: &[u8]) -> u32 {
    let len = key.len() as u32;
    let mut h = 0xdead_beef_u32.wrapping_mul(len) ^ len;

    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

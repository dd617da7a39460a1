//! Paul Hsieh's SuperFastHash, as twemproxy's `hsieh`.

use super::fnv::signed;

/// `hsieh`. An empty key hashes to 0. In the 3-byte tail, twemproxy reads
/// the third byte through a `char`, so a byte ≥ 0x80 is sign-extended there
/// (and only there); that is reproduced.
pub(crate) fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut hash = 0u32;
    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        hash = hash.wrapping_add(half(&block[0..2]));
        let tmp = (half(&block[2..4]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    match *blocks.remainder() {
        [b0, b1, b2] => {
            hash = hash.wrapping_add(half(&[b0, b1]));
            hash ^= hash << 16;
            hash ^= signed(b2) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        [b0, b1] => {
            hash = hash.wrapping_add(half(&[b0, b1]));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        [b0] => {
            hash = hash.wrapping_add(u32::from(b0));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}

fn half(bytes: &[u8]) -> u32 {
    u32::from(u16::from_le_bytes([bytes[0], bytes[1]]))
}

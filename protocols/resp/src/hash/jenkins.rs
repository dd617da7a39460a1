//! Bob Jenkins' hashes as twemproxy has them: `one_at_a_time` and
//! `jenkins` (lookup3's `hashlittle` with initval 13).

use super::fnv::signed;

/// `one_at_a_time`. Bytes ≥ 0x80 enter sign-extended, as in twemproxy.
pub(crate) fn one_at_a_time(key: &[u8]) -> u32 {
    let mut value = key.iter().fold(0u32, |mut value, &byte| {
        value = value.wrapping_add(signed(byte));
        value = value.wrapping_add(value << 10);
        value ^ (value >> 6)
    });
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}

const JENKINS_INITVAL: u32 = 13;

/// `jenkins`: lookup3 `hashlittle`. twemproxy picks a word-, half-word- or
/// byte-at-a-time loop by the key's alignment, but on little-endian hosts
/// all three read the same little-endian words, so the byte loop is exact.
pub(crate) fn jenkins(key: &[u8]) -> u32 {
    let start = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(JENKINS_INITVAL);
    let (mut a, mut b, mut c) = (start, start, start);

    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        // Zero-length tails skip the final mix (lookup3 does the same).
        return c;
    }
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(word(&tail[0..4]));
    b = b.wrapping_add(word(&tail[4..8]));
    c = c.wrapping_add(word(&tail[8..12]));
    finish(&mut a, &mut b, &mut c);
    c
}

fn word(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_key_is_the_unmixed_seed() {
        assert_eq!(jenkins(b""), 0xdead_beef_u32 + 13);
        assert_eq!(one_at_a_time(b""), 0);
    }

    #[test]
    fn every_tail_length_is_distinct() {
        // Lengths 1..=25 cover each tail size with and without a full block.
        let key = b"abcdefghijklmnopqrstuvwxy";
        let mut seen = std::collections::HashSet::new();
        for len in 1..=key.len() {
            assert!(seen.insert(jenkins(&key[..len])), "collision at {len}");
        }
    }
}

//! Redis Cluster key slots.

use super::crc::crc16_xmodem;
use super::tag::HashTag;

/// The number of Redis Cluster hash slots.
pub const SLOT_COUNT: u16 = 16384;

/// The Redis Cluster slot of `key`: CRC16-XMODEM of the key (or of its
/// non-empty `{…}` tag) mod 16384, exactly as Redis's `keyHashSlot`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(HashTag::BRACES.hashed_part(key)) % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // Empty tag: the whole key is hashed.
        assert_ne!(key_slot(b"{}foo"), key_slot(b"foo"));
    }

    #[test]
    fn redis_protocol_crate_agrees() {
        let keys: [&[u8]; 8] = [
            b"foo",
            b"{user1000}.following",
            b"foo{}{bar}",
            b"foo{{bar}}zap",
            b"foo{bar",
            b"}{a}",
            b"\xff\xfe",
            b"a-much-longer-key-with-no-tag-at-all:0123456789",
        ];
        for key in keys {
            assert_eq!(key_slot(key), redis_protocol::redis_keyslot(key), "{key:?}");
        }
    }
}

//! The CRC-based key hashes: twemproxy's `crc16`, `crc32` and `crc32a`, and
//! the CRC16-XMODEM that Redis Cluster slots are defined by.
//!
//! The tables are computed at compile time from the polynomials rather than
//! pasted, so a typo cannot hide in 256 magic numbers.

/// CRC16-XMODEM (polynomial 0x1021, MSB first, init 0) lookup table.
const XMODEM: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) lookup table.
const IEEE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC16-XMODEM of `data`, as Redis Cluster's `crc16()` computes it
/// (`"123456789"` → `0x31C3`).
pub(crate) fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ XMODEM[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// twemproxy's `hash_crc16`: the XMODEM table, but the running value is a
/// `uint32_t` that is never masked to 16 bits, so every step's `crc << 8`
/// keeps the bits above 16. The low 16 bits equal CRC16-XMODEM; the high 16
/// bits are what is left of earlier states. Ketama needs all 32 bits.
pub(crate) fn twemproxy_crc16(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |crc, &byte| {
        (crc << 8) ^ u32::from(XMODEM[usize::from((crc >> 8) as u8 ^ byte)])
    })
}

/// Plain CRC-32 (IEEE, as zlib computes it): twemproxy's `crc32a`.
pub(crate) fn crc32a(data: &[u8]) -> u32 {
    !ieee_register(data)
}

/// twemproxy's `crc32`, kept compatible with libmemcached: bits 16..31 of the
/// CRC-32, masked to 15 bits, so its values are always below 0x8000.
pub(crate) fn crc32_libmemcached(data: &[u8]) -> u32 {
    ((!ieee_register(data)) >> 16) & 0x7fff
}

fn ieee_register(data: &[u8]) -> u32 {
    data.iter().fold(u32::MAX, |crc, &byte| {
        (crc >> 8) ^ IEEE[usize::from(crc as u8 ^ byte)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_xmodem_check_value() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(crc16_xmodem(b""), 0);
    }

    #[test]
    fn twemproxy_crc16_keeps_the_high_bits() {
        // Low half is the real CRC; the high half is the unmasked carry.
        let value = twemproxy_crc16(b"123456789");
        assert_eq!(value & 0xffff, 0x31C3);
        assert_eq!(value, 0x8690_31C3);
        // One byte cannot carry anything yet.
        assert_eq!(twemproxy_crc16(b"a"), u32::from(crc16_xmodem(b"a")));
    }

    #[test]
    fn crc32_variants() {
        // The standard CRC-32 check value.
        assert_eq!(crc32a(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32a(b""), 0);
        assert_eq!(
            crc32_libmemcached(b"123456789"),
            (0xCBF4_3926 >> 16) & 0x7fff
        );
        assert_eq!(crc32_libmemcached(b"123456789"), 0x4BF4);
    }

    #[test]
    fn redis_protocol_crate_agrees_on_xmodem() {
        for key in [&b"foo"[..], b"bar", b"123456789", b"\xff\x00\x80", b""] {
            assert_eq!(
                crc16_xmodem(key) % 16384,
                redis_protocol::redis_keyslot(key),
                "{key:?}"
            );
        }
    }
}

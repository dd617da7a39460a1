//! Hash tags: hashing only part of a key so related keys share a server.

use std::fmt;
use std::str::FromStr;

/// A two-character hash tag such as twemproxy's `hash_tag: "{}"`.
///
/// When a key holds the opening character, and the closing character occurs
/// after it with at least one byte between them, only the bytes between the
/// first opening character and the first closing character after it are
/// hashed. Otherwise (no opening, no closing after it, or an empty tag such
/// as `{}`) the whole key is hashed. This is twemproxy's `server_pool_idx`
/// and, for `{}`, Redis Cluster's `keyHashSlot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashTag {
    open: u8,
    close: u8,
}

impl HashTag {
    /// The `{…}` tag, which Redis Cluster always applies.
    pub const BRACES: HashTag = HashTag {
        open: b'{',
        close: b'}',
    };

    /// A tag from its opening and closing bytes.
    pub const fn new(open: u8, close: u8) -> Self {
        HashTag { open, close }
    }

    /// The part of `key` that is hashed.
    pub fn hashed_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let Some(start) = key.iter().position(|&b| b == self.open) else {
            return key;
        };
        let inner = &key[start + 1..];
        match inner.iter().position(|&b| b == self.close) {
            Some(len) if len > 0 => &inner[..len],
            _ => key,
        }
    }
}

impl fmt::Display for HashTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.open.escape_ascii(),
            self.close.escape_ascii()
        )
    }
}

/// A `hash_tag` string that is not exactly two bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash tag {0:?} must be exactly two characters, like \"{{}}\"")]
pub struct HashTagError(String);

impl FromStr for HashTag {
    type Err = HashTagError;

    /// Twemproxy compares bytes and requires a two-byte string, so a
    /// multi-byte UTF-8 character is refused here as it is there.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match *s.as_bytes() {
            [open, close] => Ok(HashTag { open, close }),
            _ => Err(HashTagError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(key: &[u8]) -> &[u8] {
        HashTag::BRACES.hashed_part(key)
    }

    #[test]
    fn tag_rules() {
        assert_eq!(part(b"{user1000}.following"), b"user1000");
        assert_eq!(part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(part(b"foo{{bar}}zap"), b"{bar");
        // Empty tag or no closing brace: the whole key.
        assert_eq!(part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(part(b"{}"), b"{}");
        assert_eq!(part(b"foo{bar"), b"foo{bar");
        assert_eq!(part(b"}{a}"), b"a");
        assert_eq!(part(b"plain"), b"plain");
        assert_eq!(part(b""), b"");
    }

    #[test]
    fn same_open_and_close() {
        let tag: HashTag = "$$".parse().unwrap();
        assert_eq!(tag.hashed_part(b"a$b$c"), b"b");
        assert_eq!(tag.hashed_part(b"a$$b$"), b"a$$b$");
    }

    #[test]
    fn parse_requires_two_bytes() {
        assert_eq!("{}".parse::<HashTag>().unwrap(), HashTag::BRACES);
        assert_eq!("{}".parse::<HashTag>().unwrap().to_string(), "{}");
        assert!("{".parse::<HashTag>().is_err());
        assert!("{}}".parse::<HashTag>().is_err());
        assert!(
            "é".parse::<HashTag>().is_ok(),
            "two UTF-8 bytes, as in twemproxy"
        );
        let err = "abc".parse::<HashTag>().unwrap_err().to_string();
        assert!(err.contains("exactly two characters"), "{err}");
    }
}

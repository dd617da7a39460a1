//! Counting an app's commands where their replies become ready: per
//! upstream and command family, the latency (from the read that brought the
//! command in to its reply being ready for the app) and error replies.
//!
//! Cheap on purpose, since every command passes here: the session takes
//! one clock reading per read from the app (shared by every command in it)
//! and one per pass that collects replies; a batch of commands of one family
//! (the usual pipeline) is counted with one histogram update; the stats of
//! an upstream are looked up once per app connection ([`Meters`]), not per
//! command. An upstream batch of several replies is walked frame by frame
//! for errors by their headers alone (a bulk string's payload is skipped,
//! not read); an array is measured by the full parser only while a `-` or
//! `!` byte is left at all.

use std::sync::Arc;
use std::time::Instant;

use attache_resp::frame;

use super::metrics::{ErrorSource, Family, UpstreamStats};
use super::service::RedisService;

/// The families of the commands of one batch, in order.
#[derive(Debug)]
pub(crate) enum Families {
    /// All of the same family (how many is the slot's reply count).
    One(Family),
    /// One per command, when they differ.
    Each(Vec<Family>),
}

impl Families {
    /// Adds a command of `family` after `count` others.
    pub(crate) fn push(&mut self, family: Family, count: u32) {
        match self {
            Families::One(f) if *f == family => {}
            Families::One(f) => {
                let mut each = vec![*f; count as usize];
                each.push(family);
                *self = Families::Each(each);
            }
            Families::Each(each) => each.push(family),
        }
    }
}

/// What a slot's replies count as when they are ready.
#[derive(Debug)]
pub(crate) struct Meter {
    /// When the read that brought the commands in returned.
    pub(crate) started: Instant,
    /// The upstream index the commands went to.
    pub(crate) server: usize,
    pub(crate) families: Families,
}

impl Meter {
    /// Counts `replies` replies, in `reply`, to this slot's commands.
    /// `from_attache`: attache wrote them in place of the upstream's (the
    /// upstream failed), so each is an attache error.
    pub(crate) fn record(
        &self,
        stats: &UpstreamStats,
        reply: &[u8],
        replies: u32,
        from_attache: bool,
        resp3: bool,
        now: Instant,
    ) {
        let elapsed = now.saturating_duration_since(self.started);
        match &self.families {
            Families::One(family) => {
                stats.answered(*family, elapsed, u64::from(replies));
                if from_attache {
                    stats.error(*family, ErrorSource::Attache, u64::from(replies));
                } else if replies == 1 {
                    if frame::is_error(reply) {
                        stats.error(*family, ErrorSource::Upstream, 1);
                    }
                } else {
                    let errors = error_frames(reply, resp3).filter(|&e| e).count();
                    if errors > 0 {
                        stats.error(*family, ErrorSource::Upstream, errors as u64);
                    }
                }
            }
            Families::Each(families) => {
                for family in families {
                    stats.answered(*family, elapsed, 1);
                }
                if from_attache {
                    for family in families {
                        stats.error(*family, ErrorSource::Attache, 1);
                    }
                } else {
                    for (family, error) in families.iter().zip(error_frames(reply, resp3)) {
                        if error {
                            stats.error(*family, ErrorSource::Upstream, 1);
                        }
                    }
                }
            }
        }
    }
}

/// Whether each reply frame in `bytes` is an error, in order; ends early
/// once no error can follow.
fn error_frames(bytes: &[u8], resp3: bool) -> impl Iterator<Item = bool> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let len = frame_len(rest, resp3)?;
        let error = frame::is_error(rest);
        rest = rest.get(len..)?;
        Some(error)
    })
}

/// The length of the first complete frame in `buf`, from its header when
/// it has no elements; `None` at the end, or when neither it nor anything
/// after it can be an error.
fn frame_len(buf: &[u8], resp3: bool) -> Option<usize> {
    match buf.first()? {
        // Short lines (`+OK`, `:1`, an error message): a plain scan beats
        // a vectorized search's setup.
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
            buf.iter().position(|&b| b == b'\n').map(|n| n + 1)
        }
        b'$' | b'!' | b'=' => {
            let (header, len) = length_header(buf)?;
            match usize::try_from(len) {
                Ok(len) => header.checked_add(len)?.checked_add(2),
                // `$-1`: the RESP2 null.
                Err(_) => Some(header),
            }
        }
        // Aggregates: only whether another top-level frame may be an
        // error matters; if none can, stop without parsing this one.
        _ => {
            memchr::memchr2(b'-', b'!', buf)?;
            frame::reply_len(buf, resp3).ok().flatten()
        }
    }
}

/// `$<n>\r\n`: the header's length and `n`.
fn length_header(buf: &[u8]) -> Option<(usize, i64)> {
    let negative = buf.get(1) == Some(&b'-');
    let mut i = 1 + usize::from(negative);
    let mut n: i64 = 0;
    loop {
        match *buf.get(i)? {
            b @ b'0'..=b'9' => n = n.checked_mul(10)?.checked_add(i64::from(b - b'0'))?,
            b'\r' => break,
            _ => return None,
        }
        i += 1;
    }
    Some((i + 2, if negative { -n } else { n }))
}

/// An app connection's handles on the stats it counts in, looked up once.
#[derive(Default)]
pub(crate) struct Meters {
    /// By upstream index.
    upstreams: Vec<Option<Arc<UpstreamStats>>>,
    local: Option<Arc<UpstreamStats>>,
}

impl Meters {
    /// The stats of upstream `server` of `service`.
    pub(crate) fn upstream(&mut self, service: &RedisService, server: usize) -> &UpstreamStats {
        if self.upstreams.len() <= server {
            self.upstreams.resize(server + 1, None);
        }
        self.upstreams[server].get_or_insert_with(|| service.upstream_stats(server))
    }

    /// The stats of commands attache answers itself.
    pub(crate) fn local(&mut self, service: &RedisService) -> &UpstreamStats {
        self.local.get_or_insert_with(|| service.local_stats())
    }

    /// The session moved to another service (a reload): indexes changed.
    pub(crate) fn clear(&mut self) {
        self.upstreams.clear();
        self.local = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attache_resp::command::Group;

    #[test]
    fn a_batch_becomes_mixed_when_a_second_family_joins() {
        let string = Family::of(Some(Group::String));
        let hash = Family::of(Some(Group::Hash));
        let mut families = Families::One(string);
        families.push(string, 1);
        assert!(matches!(families, Families::One(_)));
        families.push(hash, 2);
        match families {
            Families::Each(each) => assert_eq!(each, vec![string, string, hash]),
            Families::One(_) => panic!("still one family"),
        }
    }

    #[test]
    fn errors_are_found_frame_by_frame() {
        let replies = b"$2\r\n-x\r\n-ERR no\r\n:1\r\n!3\r\nbad\r\n$-1\r\n_\r\n-WRONGTYPE x\r\n";
        let found: Vec<bool> = error_frames(replies, true).collect();
        assert_eq!(found, vec![false, true, false, true, false, false, true]);
    }

    #[test]
    fn an_error_inside_an_array_is_not_a_reply_error() {
        let replies = b"*2\r\n-ERR inner\r\n:1\r\n+OK\r\n-ERR outer\r\n";
        let found: Vec<bool> = error_frames(replies, false).collect();
        assert_eq!(found, vec![false, false, true]);
        // No error byte after an array: the walk stops there.
        let found: Vec<bool> = error_frames(b"-E\r\n*1\r\n:1\r\n", false).collect();
        assert_eq!(found, vec![true]);
    }
}

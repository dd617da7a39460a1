//! Counting an app's commands where their replies become ready: per
//! upstream and command family, the latency (from the read that brought the
//! command in to its reply being ready for the app) and error replies.
//!
//! Cheap on purpose, since every command passes here: the session takes
//! one clock reading per read from the app (shared by every command in it)
//! and one per pass that collects replies; a batch of commands of one family
//! (the usual pipeline) is counted with one histogram update; the stats of
//! an upstream are looked up once per app connection ([`Meters`]), not per
//! command. An upstream batch of several replies is scanned for error
//! frames only if it holds a `-` or `!` byte at all.

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
                } else if may_hold_errors(reply) {
                    let errors = error_frames(reply, resp3).filter(|&e| e).count();
                    stats.error(*family, ErrorSource::Upstream, errors as u64);
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
                } else if may_hold_errors(reply) {
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

/// False when no reply in `bytes` can be an error (no `-` or `!` byte).
fn may_hold_errors(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == b'-' || b == b'!')
}

/// Whether each reply frame in `bytes` is an error, in order.
fn error_frames(bytes: &[u8], resp3: bool) -> impl Iterator<Item = bool> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let len = frame::reply_len(rest, resp3).ok().flatten()?;
        let error = frame::is_error(rest);
        rest = &rest[len..];
        Some(error)
    })
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
        let replies = b"$2\r\n-x\r\n-ERR no\r\n:1\r\n!3\r\nbad\r\n";
        let found: Vec<bool> = error_frames(replies, true).collect();
        assert_eq!(found, vec![false, true, false, true]);
        assert!(!may_hold_errors(b"$2\r\nok\r\n+OK\r\n"));
    }
}

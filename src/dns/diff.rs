//! What changed between two answers, so a consumer opens connections to new
//! addresses and drains the ones to removed addresses, and leaves the rest
//! alone.

use std::cmp::Ordering;
use std::net::SocketAddr;

/// The difference between two address sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrDiff {
    /// In the new set, not in the old one: connect to these.
    pub added: Vec<SocketAddr>,
    /// In the old set, not in the new one: drain these.
    pub removed: Vec<SocketAddr>,
}

impl AddrDiff {
    /// Compares two sets. Both must be sorted and deduplicated (as
    /// [`Watched::addrs`](super::Watched::addrs) gives them); `added` and
    /// `removed` come out sorted.
    pub fn between(old: &[SocketAddr], new: &[SocketAddr]) -> Self {
        debug_assert!(old.windows(2).all(|w| w[0] < w[1]), "old set not sorted");
        debug_assert!(new.windows(2).all(|w| w[0] < w[1]), "new set not sorted");
        let mut diff = Self::default();
        let (mut i, mut j) = (0, 0);
        // One merge pass over the two sorted sets.
        while i < old.len() && j < new.len() {
            match old[i].cmp(&new[j]) {
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                Ordering::Less => {
                    diff.removed.push(old[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    diff.added.push(new[j]);
                    j += 1;
                }
            }
        }
        diff.removed.extend_from_slice(&old[i..]);
        diff.added.extend_from_slice(&new[j..]);
        diff
    }

    /// Whether the two sets were the same.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = list.iter().map(|a| a.parse().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn same_sets_differ_in_nothing() {
        let a = addrs(&["10.0.0.1:6379", "10.0.0.2:6379"]);
        let diff = AddrDiff::between(&a, &a);
        assert!(diff.is_empty());
        assert!(AddrDiff::between(&[], &[]).is_empty());
    }

    #[test]
    fn from_and_to_nothing() {
        let a = addrs(&["10.0.0.1:6379", "[::1]:6379"]);
        assert_eq!(
            AddrDiff::between(&[], &a),
            AddrDiff {
                added: a.clone(),
                removed: vec![]
            }
        );
        assert_eq!(
            AddrDiff::between(&a, &[]),
            AddrDiff {
                added: vec![],
                removed: a
            }
        );
    }

    #[test]
    fn overlapping_sets_keep_the_common_part() {
        let old = addrs(&["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"]);
        let new = addrs(&["10.0.0.2:6379", "10.0.0.4:6379", "[fd00::2]:6379"]);
        assert_eq!(
            AddrDiff::between(&old, &new),
            AddrDiff {
                added: addrs(&["10.0.0.4:6379", "[fd00::2]:6379"]),
                removed: addrs(&["10.0.0.1:6379", "10.0.0.3:6379"]),
            }
        );
    }

    #[test]
    fn a_port_change_is_a_new_address() {
        let old = addrs(&["10.0.0.1:6379"]);
        let new = addrs(&["10.0.0.1:6380"]);
        let diff = AddrDiff::between(&old, &new);
        assert_eq!(diff.added, new);
        assert_eq!(diff.removed, old);
    }

    #[test]
    fn disjoint_interleaved_sets() {
        let old = addrs(&["10.0.0.1:1", "10.0.0.3:1", "10.0.0.5:1"]);
        let new = addrs(&["10.0.0.2:1", "10.0.0.4:1", "10.0.0.6:1"]);
        let diff = AddrDiff::between(&old, &new);
        assert_eq!(diff.added, new);
        assert_eq!(diff.removed, old);
    }
}

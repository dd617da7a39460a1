//! Cluster error replies: `MOVED`/`ASK` redirects, and the errors after
//! which the same command is safe to send again.

use crate::hash::{key_slot, SLOT_COUNT};

use super::NodeAddress;

/// A redirect from a cluster node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Redirect {
    /// `-MOVED <slot> <host>:<port>`: the slot lives there now. Send the
    /// command there, and refresh the slot map.
    Moved { slot: u16, addr: NodeAddress },
    /// `-ASK <slot> <host>:<port>`: the slot is migrating and this key is
    /// already there. Send `ASKING` then the command there, once; the slot
    /// map stays as it is.
    Ask { slot: u16, addr: NodeAddress },
}

impl Redirect {
    /// The slot the redirect is about.
    pub fn slot(&self) -> u16 {
        match self {
            Redirect::Moved { slot, .. } | Redirect::Ask { slot, .. } => *slot,
        }
    }

    /// Where to send the command.
    pub fn addr(&self) -> &NodeAddress {
        match self {
            Redirect::Moved { addr, .. } | Redirect::Ask { addr, .. } => addr,
        }
    }
}

/// Whether a reply frame is a redirect, from its first bytes: the cheap
/// check before [`parse_redirect`].
#[inline]
pub fn is_redirect(reply: &[u8]) -> bool {
    reply.starts_with(b"-MOVED ") || reply.starts_with(b"-ASK ")
}

/// Parses a `MOVED` or `ASK` error. The leading `-` is optional, and the line
/// ends at the first `\r` (so a whole reply buffer may be passed). The
/// address is split at its last colon, as Redis writes IPv6 without brackets
/// (`::1:6381`); an empty host or `?` is [`Host::Unknown`](super::Host),
/// the host of the node that replied. `None` for anything else.
pub fn parse_redirect(error_line: &[u8]) -> Option<Redirect> {
    let line = error_line.strip_prefix(b"-").unwrap_or(error_line);
    let line = line.split(|&b| b == b'\r').next()?;
    let mut parts = std::str::from_utf8(line).ok()?.split(' ');
    let (kind, slot, addr) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !slot.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let slot = slot.parse().ok().filter(|&s| s < SLOT_COUNT)?;
    let addr = NodeAddress::parse(addr)?;
    match kind {
        "MOVED" => Some(Redirect::Moved { slot, addr }),
        "ASK" => Some(Redirect::Ask { slot, addr }),
        _ => None,
    }
}

/// Whether Redis Cluster could have answered `requests` (whole request
/// frames: one command, or a transaction) with a redirect for `slot`: it
/// redirects a command for the slot of its keys, and never one without
/// keys. A script's error reply can say anything
/// (`redis.error_reply('MOVED 1 host:port')`), and following it would run
/// the script again. A command attache does not know (a module's) could.
pub fn could_redirect(requests: &[u8], slot: u16) -> bool {
    let mut rest = requests;
    let mut keys = Vec::new();
    while let Ok(Some(request)) = crate::frame::parse_request(rest, usize::MAX) {
        let args: Vec<&[u8]> = (0..request.args.len())
            .filter_map(|i| request.arg(rest, i))
            .collect();
        let Some(spec) = crate::command::resolve(&args) else {
            return true;
        };
        crate::command::key_indices_including_not_keys(spec, &args, &mut keys);
        if keys
            .iter()
            .any(|&i| args.get(i).is_some_and(|key| key_slot(key) == slot))
        {
            return true;
        }
        rest = &rest[request.len..];
    }
    false
}

/// A cluster error after which the same command may be sent again: Redis
/// refuses these before running the command, so a retry is safe even for a
/// write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryableClusterError {
    /// `-TRYAGAIN`: a multi-key command whose keys are split by an ongoing
    /// migration. Retry on the same node after a short delay.
    TryAgain,
    /// `-CLUSTERDOWN`: the cluster is down (a failover in progress) or the
    /// slot is not served. Refresh the slot map, then retry after a delay.
    ClusterDown,
}

/// Classifies a reply frame by its first bytes; `None` if it is neither
/// `-TRYAGAIN` nor `-CLUSTERDOWN`.
pub fn retryable_cluster_error(reply: &[u8]) -> Option<RetryableClusterError> {
    let code_is = |code: &[u8]| {
        reply
            .strip_prefix(code)
            .is_some_and(|rest| matches!(rest.first(), None | Some(b' ' | b'\r')))
    };
    if code_is(b"-TRYAGAIN") {
        Some(RetryableClusterError::TryAgain)
    } else if code_is(b"-CLUSTERDOWN") {
        Some(RetryableClusterError::ClusterDown)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::Host;
    use super::*;

    fn addr(host: &str, port: u16) -> NodeAddress {
        NodeAddress {
            host: Host::Name(host.into()),
            port,
        }
    }

    #[test]
    fn a_redirect_is_for_a_key_of_the_command() {
        let command = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            crate::frame::reply::command(&args).to_vec()
        };
        let slot = key_slot(b"k");
        assert!(could_redirect(&command(&["GET", "k"]), slot));
        assert!(!could_redirect(&command(&["GET", "k"]), slot + 1));
        // A script's keys are its declared ones; without keys, never.
        let script = command(&["EVAL", "return 1", "2", "a", "k"]);
        assert!(could_redirect(&script, slot));
        assert!(!could_redirect(&command(&["EVAL", "return 1", "0"]), slot));
        assert!(!could_redirect(&command(&["PING"]), slot));
        // A transaction: any of its commands' keys.
        let tx = [
            command(&["MULTI"]),
            command(&["SET", "other", "1"]),
            command(&["INCR", "k"]),
            command(&["EXEC"]),
        ]
        .concat();
        assert!(could_redirect(&tx, slot));
        assert!(!could_redirect(&tx, slot ^ 1));
        // Sharded pub/sub: its channel's slot.
        assert!(could_redirect(&command(&["SPUBLISH", "k", "m"]), slot));
        // Unknown to attache: it cannot tell.
        assert!(could_redirect(&command(&["MODULE.CMD", "x"]), slot ^ 1));
    }

    #[test]
    fn moved_and_ask() {
        let moved = parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n").unwrap();
        assert_eq!(
            moved,
            Redirect::Moved {
                slot: 3999,
                addr: addr("127.0.0.1", 6381)
            }
        );
        assert_eq!((moved.slot(), moved.addr().port), (3999, 6381));
        let ask = parse_redirect(b"ASK 0 redis-0.example:6379").unwrap();
        assert_eq!(
            ask,
            Redirect::Ask {
                slot: 0,
                addr: addr("redis-0.example", 6379)
            }
        );
        assert_eq!(
            parse_redirect(b"-MOVED 16383 h:1\r\n+OK\r\n")
                .unwrap()
                .slot(),
            16383
        );
    }

    #[test]
    fn ipv6_and_unknown_hosts() {
        let v6 = parse_redirect(b"-MOVED 3999 ::1:6381").unwrap();
        assert_eq!(v6.addr(), &addr("::1", 6381));
        assert_eq!(v6.addr().to_string(), "[::1]:6381");
        let bracketed = parse_redirect(b"-MOVED 3999 [fe80::1]:6381").unwrap();
        assert_eq!(bracketed.addr(), &addr("fe80::1", 6381));
        for line in [&b"-MOVED 3999 :6380"[..], b"-MOVED 3999 ?:6380"] {
            let unknown = parse_redirect(line).unwrap();
            assert_eq!(
                unknown.addr(),
                &NodeAddress {
                    host: Host::Unknown,
                    port: 6380
                }
            );
            assert_eq!(unknown.addr().host_or("10.0.0.7"), "10.0.0.7");
            assert_eq!(unknown.addr().to_string(), ":6380");
        }
        assert_eq!(addr("h", 1).host_or("10.0.0.7"), "h");
    }

    #[test]
    fn not_redirects() {
        for line in [
            &b""[..],
            b"-",
            b"-MOVED",
            b"-MOVED 3999",
            b"-MOVED 3999 127.0.0.1",
            b"-MOVED 16384 127.0.0.1:6381",
            b"-MOVED -1 127.0.0.1:6381",
            b"-MOVED +1 127.0.0.1:6381",
            b"-MOVED 1 127.0.0.1:0",
            b"-MOVED 1 127.0.0.1:65536",
            b"-MOVED 1 127.0.0.1:6381 extra",
            b"-MOVED  1 127.0.0.1:6381",
            b"-moved 1 127.0.0.1:6381",
            b"-ERR MOVED 1 127.0.0.1:6381",
            b"-MOVED 1 \xff:6381",
            b"+OK",
        ] {
            assert_eq!(
                parse_redirect(line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn cheap_checks() {
        assert!(is_redirect(b"-MOVED 1 h:1\r\n"));
        assert!(is_redirect(b"-ASK 1 h:1\r\n"));
        assert!(!is_redirect(b"-ASKING\r\n"));
        assert!(!is_redirect(b"$6\r\nMOVED \r\n"));
        use RetryableClusterError::*;
        assert_eq!(
            retryable_cluster_error(b"-TRYAGAIN Multiple keys\r\n"),
            Some(TryAgain)
        );
        assert_eq!(
            retryable_cluster_error(b"-CLUSTERDOWN The cluster is down\r\n"),
            Some(ClusterDown)
        );
        assert_eq!(
            retryable_cluster_error(b"-CLUSTERDOWN\r\n"),
            Some(ClusterDown)
        );
        assert_eq!(retryable_cluster_error(b"-CLUSTERDOWNX\r\n"), None);
        assert_eq!(retryable_cluster_error(b"-MOVED 1 h:1\r\n"), None);
        assert_eq!(retryable_cluster_error(b"+TRYAGAIN\r\n"), None);
    }
}

//! Commands across shards: where a command goes when keys are spread over
//! several servers, how a multi-key command is split, and how the pieces'
//! replies are merged back into the one reply the app expects.
//!
//! The policy is Redis's own: the command table's `request_policy` and
//! `response_policy` tips (Redis 7) say which commands fan out to every
//! shard (`DBSIZE`, `FLUSHALL`, `SCRIPT LOAD`, `KEYS` …), which split by key
//! (`MGET`, `MSET`, `DEL`, `EXISTS`, `TOUCH`, `UNLINK`), and how replies
//! combine (sum, all succeeded, one succeeded, min, logical and …). A
//! command whose keys span shards and that is not splittable is refused
//! with `-CROSSSLOT`, as Redis Cluster does.

use std::ops::Range;

use crate::command::{self, CommandSpec, RequestPolicy, ResponsePolicy};
use crate::frame::{self, reply};
use bytes::{BufMut, Bytes, BytesMut};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every key is on this server.
    One(usize),
    /// No key to route by, and no policy for it.
    Keyless,
    /// The same request to every server, replies merged.
    All(Merge),
    /// One sub-request per server, replies merged.
    Split {
        /// Sub-requests, one per server involved.
        parts: Vec<Part>,
        /// How to combine their replies.
        merge: Merge,
    },
    /// Keys on several servers, and the command cannot be split.
    CrossSlot,
}

/// One server's share of a split request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The server.
    pub server: usize,
    /// Argument indices of the sub-request, command name first.
    pub args: Vec<usize>,
    /// For each key of the sub-request, its position among the request's
    /// keys (to put `MGET` values back in the app's order).
    pub key_order: Vec<usize>,
}

/// How replies from several servers become one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Integers added (`DEL`, `EXISTS`, `DBSIZE`).
    Sum,
    /// The first error, else the first reply (`MSET`, `FLUSHALL`).
    AllSucceeded,
    /// The first non-error reply, else the first error.
    OneSucceeded,
    /// The smallest integer (`MSETNX`, `WAIT`).
    Min,
    /// The largest integer.
    Max,
    /// Element-wise AND of integer arrays (`SCRIPT EXISTS`).
    LogicalAnd,
    /// Element-wise OR of integer arrays.
    LogicalOr,
    /// Array elements put back in key order (`MGET`); `keys` in all.
    KeyOrder {
        /// Number of keys in the original request.
        keys: usize,
    },
    /// Arrays concatenated (`KEYS`).
    Concat,
    /// Bulk strings joined (`INFO`), each under a header naming its server.
    JoinText,
}

/// Plans `args` (command name first) given `spec`, its key indices
/// (`keys`, from [`command::key_indices`]) and the server of a key.
pub fn plan(
    spec: &CommandSpec,
    args: &[&[u8]],
    keys: &[usize],
    server_of: impl Fn(&[u8]) -> usize,
) -> Plan {
    if keys.is_empty() {
        return match spec.request_policy {
            Some(RequestPolicy::AllShards | RequestPolicy::AllNodes) => {
                Plan::All(all_shards_merge(spec))
            }
            _ => Plan::Keyless,
        };
    }
    let first = server_of(args[keys[0]]);
    let mut spread = false;
    for &k in &keys[1..] {
        if server_of(args[k]) != first {
            spread = true;
            break;
        }
    }
    if !spread {
        return Plan::One(first);
    }
    let merge = match (spec.request_policy, spec.response_policy) {
        (Some(RequestPolicy::MultiShard), Some(ResponsePolicy::AggSum)) => Merge::Sum,
        (Some(RequestPolicy::MultiShard), Some(ResponsePolicy::AllSucceeded)) => {
            Merge::AllSucceeded
        }
        (Some(RequestPolicy::MultiShard), None) => Merge::KeyOrder { keys: keys.len() },
        // MSETNX is multi_shard/agg_min in the table, but split it would not
        // be atomic: "set all or none" cannot hold across servers.
        _ => return Plan::CrossSlot,
    };
    // A key without all of its arguments (`MSET a 1 b`): Redis refuses the
    // whole request, so it goes whole to one server. Split, the complete
    // parts would be written before the short one's error.
    let step = spec.key_step.max(1) as usize;
    if keys.iter().any(|&k| k + step > args.len()) {
        return Plan::One(first);
    }
    Plan::Split {
        parts: split(spec, args, keys, server_of),
        merge,
    }
}

fn all_shards_merge(spec: &CommandSpec) -> Merge {
    match spec.response_policy {
        Some(ResponsePolicy::AggSum) => Merge::Sum,
        Some(ResponsePolicy::AllSucceeded) => Merge::AllSucceeded,
        Some(ResponsePolicy::OneSucceeded) => Merge::OneSucceeded,
        Some(ResponsePolicy::AggMin) => Merge::Min,
        Some(ResponsePolicy::AggMax) => Merge::Max,
        Some(ResponsePolicy::AggLogicalAnd) => Merge::LogicalAnd,
        Some(ResponsePolicy::AggLogicalOr) => Merge::LogicalOr,
        Some(ResponsePolicy::Special) => Merge::JoinText,
        // KEYS, RANDOMKEY, SLOWLOG GET: arrays from every server.
        None => Merge::Concat,
    }
}

/// Groups keys by server; each key takes the `key_step - 1` arguments that
/// follow it (MSET's values).
fn split(
    spec: &CommandSpec,
    args: &[&[u8]],
    keys: &[usize],
    server_of: impl Fn(&[u8]) -> usize,
) -> Vec<Part> {
    let step = spec.key_step.max(1) as usize;
    let mut parts: Vec<Part> = Vec::new();
    for (order, &k) in keys.iter().enumerate() {
        let server = server_of(args[k]);
        let part = match parts.iter_mut().position(|p| p.server == server) {
            Some(i) => &mut parts[i],
            None => {
                parts.push(Part {
                    server,
                    args: vec![0],
                    key_order: Vec::new(),
                });
                parts.last_mut().expect("just pushed")
            }
        };
        part.args.extend((k..k + step).filter(|&i| i < args.len()));
        part.key_order.push(order);
    }
    parts
}

/// The `-CROSSSLOT` reply.
pub fn cross_slot_error() -> Bytes {
    reply::error("CROSSSLOT Keys in request don't hash to the same slot")
}

/// Merges `replies` (one complete reply each, in the order of the plan's
/// parts or servers) into one. `resp3` is the protocol they were read in;
/// `labels` names each server for [`Merge::JoinText`]. `key_orders` gives,
/// for [`Merge::KeyOrder`], each part's [`Part::key_order`].
pub fn merge(
    merge: &Merge,
    replies: &[Bytes],
    resp3: bool,
    key_orders: &[Vec<usize>],
    labels: &[String],
) -> Bytes {
    if replies.is_empty() {
        return reply::error("ERR attache: no server to ask");
    }
    let first_error = replies.iter().find(|r| frame::is_error(r));
    match merge {
        Merge::OneSucceeded => replies
            .iter()
            .find(|r| !frame::is_error(r))
            .unwrap_or(&replies[0])
            .clone(),
        _ if first_error.is_some() => first_error.cloned().unwrap_or_default(),
        Merge::AllSucceeded => replies[0].clone(),
        Merge::Sum => fold_integers(replies, 0, |a, b| a.saturating_add(b)),
        Merge::Min => fold_integers(replies, i64::MAX, i64::min),
        Merge::Max => fold_integers(replies, i64::MIN, i64::max),
        Merge::LogicalAnd => elementwise(replies, resp3, |a, b| (a != 0 && b != 0) as i64),
        Merge::LogicalOr => elementwise(replies, resp3, |a, b| (a != 0 || b != 0) as i64),
        Merge::KeyOrder { keys } => key_order(replies, resp3, key_orders, *keys),
        Merge::Concat => concat(replies, resp3),
        Merge::JoinText => join_text(replies, labels),
    }
}

/// The integer of an `:n` reply.
pub fn integer(reply: &[u8]) -> Option<i64> {
    let body = reply.strip_prefix(b":")?;
    let end = body.iter().position(|&b| b == b'\r')?;
    std::str::from_utf8(&body[..end]).ok()?.parse().ok()
}

fn fold_integers(replies: &[Bytes], init: i64, f: impl Fn(i64, i64) -> i64) -> Bytes {
    let mut acc = init;
    for r in replies {
        match integer(r) {
            Some(n) => acc = f(acc, n),
            None => return unexpected(r),
        }
    }
    Bytes::from(format!(":{acc}\r\n"))
}

/// The complete element frames of an array (or set/push) reply.
pub fn array_elements(reply: &[u8], resp3: bool) -> Option<Vec<Range<usize>>> {
    if !matches!(reply.first(), Some(b'*' | b'~' | b'>')) {
        return None;
    }
    let nl = reply.iter().position(|&b| b == b'\n')?;
    let count: i64 = std::str::from_utf8(reply.get(1..nl.checked_sub(1)?)?)
        .ok()?
        .parse()
        .ok()?;
    let mut pos = nl + 1;
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count.max(0) {
        let len = frame::reply_len(reply.get(pos..)?, resp3).ok()??;
        out.push(pos..pos + len);
        pos += len;
    }
    Some(out)
}

fn array_header(out: &mut BytesMut, n: usize) {
    out.put_u8(b'*');
    out.put_slice(n.to_string().as_bytes());
    out.put_slice(b"\r\n");
}

fn key_order(replies: &[Bytes], resp3: bool, key_orders: &[Vec<usize>], keys: usize) -> Bytes {
    let mut slots: Vec<Option<&[u8]>> = vec![None; keys];
    for (reply, order) in replies.iter().zip(key_orders) {
        let Some(elements) = array_elements(reply, resp3) else {
            return unexpected(reply);
        };
        if elements.len() != order.len() {
            return unexpected(reply);
        }
        for (range, &position) in elements.into_iter().zip(order) {
            if let Some(slot) = slots.get_mut(position) {
                *slot = Some(&reply[range]);
            }
        }
    }
    let mut out = BytesMut::new();
    array_header(&mut out, keys);
    for element in slots {
        match element {
            Some(bytes) => out.put_slice(bytes),
            None => out.put_slice(&reply::null(resp3)),
        }
    }
    out.freeze()
}

fn concat(replies: &[Bytes], resp3: bool) -> Bytes {
    let mut parts = Vec::new();
    for r in replies {
        // RANDOMKEY and the like answer a single value: take the first.
        let Some(elements) = array_elements(r, resp3) else {
            return replies
                .iter()
                .find(|r| !r.starts_with(b"$-1") && !r.starts_with(b"_"))
                .unwrap_or(&replies[0])
                .clone();
        };
        parts.extend(elements.into_iter().map(|e| &r[e]));
    }
    let mut out = BytesMut::new();
    array_header(&mut out, parts.len());
    for p in parts {
        out.put_slice(p);
    }
    out.freeze()
}

fn elementwise(replies: &[Bytes], resp3: bool, f: impl Fn(i64, i64) -> i64) -> Bytes {
    let mut acc: Option<Vec<i64>> = None;
    for r in replies {
        let Some(elements) = array_elements(r, resp3) else {
            return unexpected(r);
        };
        let values: Option<Vec<i64>> = elements.into_iter().map(|e| integer(&r[e])).collect();
        let Some(values) = values else {
            return unexpected(r);
        };
        acc = Some(match acc {
            None => values,
            Some(prev) => prev.iter().zip(&values).map(|(&a, &b)| f(a, b)).collect(),
        });
    }
    let values = acc.unwrap_or_default();
    let mut out = BytesMut::new();
    array_header(&mut out, values.len());
    for v in values {
        out.put_slice(format!(":{v}\r\n").as_bytes());
    }
    out.freeze()
}

fn join_text(replies: &[Bytes], labels: &[String]) -> Bytes {
    let mut text = Vec::new();
    for (i, r) in replies.iter().enumerate() {
        let Some(body) = bulk_payload(r) else {
            return reply::error(
                "ERR attache: this command has no single answer across shards; ask each server directly",
            );
        };
        let label = labels.get(i).map(String::as_str).unwrap_or("?");
        text.extend_from_slice(format!("# attache_server:{label}\r\n").as_bytes());
        text.extend_from_slice(body);
        if !body.ends_with(b"\r\n") {
            text.extend_from_slice(b"\r\n");
        }
    }
    reply::bulk(&text)
}

/// The payload of a bulk string (or RESP3 verbatim string) reply.
fn bulk_payload(reply: &[u8]) -> Option<&[u8]> {
    let kind = *reply.first()?;
    if kind != b'$' && kind != b'=' {
        return None;
    }
    let nl = reply.iter().position(|&b| b == b'\n')?;
    let len: usize = std::str::from_utf8(reply.get(1..nl.checked_sub(1)?)?)
        .ok()?
        .parse()
        .ok()?;
    let body = reply.get(nl + 1..nl + 1 + len)?;
    // Verbatim strings start with a three-letter format and a colon.
    Some(if kind == b'=' { body.get(4..)? } else { body })
}

fn unexpected(reply: &[u8]) -> Bytes {
    let shown: String = String::from_utf8_lossy(&reply[..reply.len().min(40)]).into();
    reply::error(&format!(
        "ERR attache: unexpected reply while merging shards: {shown}"
    ))
}

/// Plans `args` with the table's spec for it; a convenience for callers
/// that hold the arguments as slices.
pub fn plan_args(args: &[&[u8]], server_of: impl Fn(&[u8]) -> usize) -> Option<Plan> {
    let spec = command::resolve(args)?;
    let mut keys = Vec::new();
    command::key_indices(spec, args, &mut keys);
    Some(plan(spec, args, &keys, server_of))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_of(key: &[u8]) -> usize {
        (key.last().copied().unwrap_or(0) % 3) as usize
    }

    #[test]
    fn keys_on_one_server_go_there() {
        let args: Vec<&[u8]> = vec![b"MGET", b"a0", b"b0"];
        // b'0' % 3 == 0
        assert_eq!(plan_args(&args, server_of), Some(Plan::One(0)));
    }

    #[test]
    fn mget_splits_and_merges_in_key_order() {
        let args: Vec<&[u8]> = vec![b"MGET", b"k0", b"k1", b"k2", b"k3"];
        let Some(Plan::Split { parts, merge: m }) = plan_args(&args, server_of) else {
            panic!("expected a split");
        };
        assert_eq!(m, Merge::KeyOrder { keys: 4 });
        // '0'=48→0, '1'→1, '2'→2, '3'→0
        assert_eq!(
            parts[0],
            Part {
                server: 0,
                args: vec![0, 1, 4],
                key_order: vec![0, 3]
            }
        );
        assert_eq!(
            parts[1],
            Part {
                server: 1,
                args: vec![0, 2],
                key_order: vec![1]
            }
        );
        let replies = [
            Bytes::from_static(b"*2\r\n$2\r\nv0\r\n$-1\r\n"),
            Bytes::from_static(b"*1\r\n$2\r\nv1\r\n"),
            Bytes::from_static(b"*1\r\n$2\r\nv2\r\n"),
        ];
        let orders: Vec<Vec<usize>> = parts.iter().map(|p| p.key_order.clone()).collect();
        let merged = merge(&m, &replies, false, &orders, &[]);
        assert_eq!(
            &merged[..],
            b"*4\r\n$2\r\nv0\r\n$2\r\nv1\r\n$2\r\nv2\r\n$-1\r\n"
        );
    }

    #[test]
    fn mset_keeps_values_with_their_keys() {
        let args: Vec<&[u8]> = vec![b"MSET", b"k0", b"x", b"k1", b"y"];
        let Some(Plan::Split { parts, merge: m }) = plan_args(&args, server_of) else {
            panic!("expected a split");
        };
        assert_eq!(m, Merge::AllSucceeded);
        assert_eq!(parts[0].args, vec![0, 1, 2]);
        assert_eq!(parts[1].args, vec![0, 3, 4]);
    }

    #[test]
    fn mset_missing_a_value_is_not_split() {
        let args: Vec<&[u8]> = vec![b"MSET", b"k0", b"x", b"k1"];
        assert_eq!(plan_args(&args, server_of), Some(Plan::One(0)));
    }

    #[test]
    fn atomic_multi_key_commands_are_cross_slot() {
        for args in [
            vec![&b"MSETNX"[..], b"k0", b"x", b"k1", b"y"],
            vec![b"RENAME", b"k0", b"k1"],
            vec![b"SMOVE", b"k0", b"k1", b"m"],
            vec![b"SINTERSTORE", b"k0", b"k1"],
        ] {
            assert_eq!(
                plan_args(&args, server_of),
                Some(Plan::CrossSlot),
                "{args:?}"
            );
        }
    }

    #[test]
    fn keyless_commands_follow_the_tips() {
        assert_eq!(
            plan_args(&[b"DBSIZE"], server_of),
            Some(Plan::All(Merge::Sum))
        );
        assert_eq!(
            plan_args(&[b"FLUSHALL"], server_of),
            Some(Plan::All(Merge::AllSucceeded))
        );
        assert_eq!(
            plan_args(&[b"KEYS", b"*"], server_of),
            Some(Plan::All(Merge::Concat))
        );
        assert_eq!(
            plan_args(&[b"INFO"], server_of),
            Some(Plan::All(Merge::JoinText))
        );
        assert_eq!(
            plan_args(&[b"SCRIPT", b"EXISTS", b"abc"], server_of),
            Some(Plan::All(Merge::LogicalAnd))
        );
        assert_eq!(plan_args(&[b"TIME"], server_of), Some(Plan::Keyless));
    }

    #[test]
    fn merges() {
        let ints = [Bytes::from_static(b":2\r\n"), Bytes::from_static(b":3\r\n")];
        assert_eq!(&merge(&Merge::Sum, &ints, false, &[], &[])[..], b":5\r\n");
        assert_eq!(&merge(&Merge::Min, &ints, false, &[], &[])[..], b":2\r\n");
        let with_err = [
            Bytes::from_static(b"+OK\r\n"),
            Bytes::from_static(b"-ERR no\r\n"),
        ];
        assert_eq!(
            &merge(&Merge::AllSucceeded, &with_err, false, &[], &[])[..],
            b"-ERR no\r\n"
        );
        assert_eq!(
            &merge(&Merge::OneSucceeded, &with_err, false, &[], &[])[..],
            b"+OK\r\n"
        );
        let arrays = [
            Bytes::from_static(b"*2\r\n:1\r\n:0\r\n"),
            Bytes::from_static(b"*2\r\n:1\r\n:1\r\n"),
        ];
        assert_eq!(
            &merge(&Merge::LogicalAnd, &arrays, false, &[], &[])[..],
            b"*2\r\n:1\r\n:0\r\n"
        );
        assert_eq!(
            &merge(&Merge::Concat, &arrays, false, &[], &[])[..],
            b"*4\r\n:1\r\n:0\r\n:1\r\n:1\r\n"
        );
        let texts = [
            Bytes::from_static(b"$3\r\na:1\r\n"),
            Bytes::from_static(b"$3\r\na:2\r\n"),
        ];
        let joined = merge(
            &Merge::JoinText,
            &texts,
            false,
            &[],
            &["s1".into(), "s2".into()],
        );
        assert!(joined.starts_with(b"$"));
        assert!(String::from_utf8_lossy(&joined).contains("# attache_server:s2\r\na:2"));
    }

    #[test]
    fn garbage_replies_never_panic() {
        let junk = [
            Bytes::from_static(b"*3\r\n:1\r\n"),
            Bytes::from_static(b"$5\r\nab"),
        ];
        for m in [
            Merge::Sum,
            Merge::KeyOrder { keys: 2 },
            Merge::Concat,
            Merge::LogicalOr,
            Merge::JoinText,
        ] {
            let out = merge(&m, &junk, false, &[vec![0], vec![1]], &[]);
            assert!(!out.is_empty());
        }
    }
}

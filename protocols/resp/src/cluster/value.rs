//! Cluster replies decoded into one small tree, whichever protocol carried
//! them, so the topology parsers see only strings, integers, lists and maps.

use redis_protocol::{resp2, resp3};

use super::TopologyError;

/// Deepest nesting a topology reply may have. Real ones nest four levels
/// (`CLUSTER SHARDS` → shard → nodes → node); the limit keeps the recursive
/// decoder from overflowing the stack on hostile input.
const MAX_DEPTH: usize = 8;

/// One decoded reply element.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// Simple, bulk and verbatim strings.
    Str(Vec<u8>),
    Int(i64),
    /// Arrays, sets and pushes.
    List(Vec<Value>),
    /// RESP3 maps, in no particular order.
    Map(Vec<(Value, Value)>),
    Null,
    Error(String),
    /// Booleans, doubles, big numbers: nothing a topology reply holds.
    Other,
}

impl Value {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// An integer, or a string of digits (as some proxies send ports).
    pub(super) fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            other => other.as_str()?.parse().ok(),
        }
    }

    pub(super) fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a RESP3 map, or of a RESP2 flat `[key, value, …]` list.
    pub(super) fn pairs(&self) -> Option<Vec<(&Value, &Value)>> {
        match self {
            Value::Map(entries) => Some(entries.iter().map(|(k, v)| (k, v)).collect()),
            Value::List(items) if items.len() % 2 == 0 => {
                Some(items.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect())
            }
            _ => None,
        }
    }
}

/// Decodes exactly one reply (RESP2 or RESP3) from `reply`.
pub(super) fn decode(reply: &[u8], command: &'static str) -> Result<Value, TopologyError> {
    if depth_exceeds(reply, MAX_DEPTH) {
        return Err(TopologyError::TooDeep {
            command,
            max: MAX_DEPTH,
        });
    }
    // RESP2 first: the RESP3 decoder reads RESP2's null `$-1` as the start of
    // a streamed string. A RESP3-only type byte makes the RESP2 decoder fail.
    let (value, used) = match resp2::decode::decode(reply) {
        Ok(Some((frame, used))) => (from_resp2(frame), used),
        Ok(None) => return Err(TopologyError::Incomplete { command }),
        Err(_) => match resp3::decode::complete::decode(reply) {
            Ok(Some((frame, used))) => (from_resp3(frame), used),
            Ok(None) => return Err(TopologyError::Incomplete { command }),
            Err(e) => {
                let reason = e.to_string();
                return Err(TopologyError::Decode { command, reason });
            }
        },
    };
    if used != reply.len() {
        let extra = reply.len() - used;
        return Err(TopologyError::Trailing { command, extra });
    }
    match value {
        Value::Error(message) => Err(TopologyError::Server { command, message }),
        value => Ok(value),
    }
}

fn from_resp2(frame: resp2::types::OwnedFrame) -> Value {
    use resp2::types::OwnedFrame as F;
    match frame {
        F::SimpleString(s) | F::BulkString(s) => Value::Str(s),
        F::Error(e) => Value::Error(e),
        F::Integer(i) => Value::Int(i),
        F::Array(items) => Value::List(items.into_iter().map(from_resp2).collect()),
        F::Null => Value::Null,
    }
}

fn from_resp3(frame: resp3::types::OwnedFrame) -> Value {
    use resp3::types::OwnedFrame as F;
    match frame {
        F::BlobString { data, .. } | F::SimpleString { data, .. } => Value::Str(data),
        F::VerbatimString { data, .. } => Value::Str(data),
        F::SimpleError { data, .. } => Value::Error(data),
        F::BlobError { data, .. } => Value::Error(String::from_utf8_lossy(&data).into_owned()),
        F::Number { data, .. } => Value::Int(data),
        F::Array { data, .. } | F::Push { data, .. } => {
            Value::List(data.into_iter().map(from_resp3).collect())
        }
        F::Set { data, .. } => Value::List(data.into_iter().map(from_resp3).collect()),
        F::Map { data, .. } => Value::Map(
            data.into_iter()
                .map(|(k, v)| (from_resp3(k), from_resp3(v)))
                .collect(),
        ),
        F::Null => Value::Null,
        _ => Value::Other,
    }
}

/// Whether the first frame in `buf` nests more than `max` aggregates deep.
///
/// A cheap iterative walk over the headers: it only counts children, and
/// leaves every other judgement (bad lengths, incomplete input) to the
/// decoder, so it answers `false` when it cannot tell.
fn depth_exceeds(buf: &[u8], max: usize) -> bool {
    // Children still expected by each open aggregate; the root expects one frame.
    let mut open: Vec<u64> = vec![1];
    let mut pos = 0usize;
    while !open.is_empty() {
        let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) else {
            return false;
        };
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let kind = rest[0];
        let len = rest
            .get(1..eol)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|s| s.parse::<i64>().ok());
        pos += eol + 2;
        let children = match (kind, len) {
            (b'*' | b'~' | b'>', Some(n)) if n > 0 => n as u64,
            (b'%' | b'|', Some(n)) if n > 0 => (n as u64).saturating_mul(2),
            (b'$' | b'!' | b'=', Some(n)) if n >= 0 => {
                pos = pos.saturating_add(n as usize).saturating_add(2);
                0
            }
            _ => 0,
        };
        // An attribute (`|`) annotates the next frame instead of taking a place.
        if kind != b'|' {
            if let Some(top) = open.last_mut() {
                *top -= 1;
            }
        }
        if children > 0 {
            open.push(children);
            if open.len() > max + 1 {
                return true;
            }
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth() {
        assert!(!depth_exceeds(b"*1\r\n*1\r\n:1\r\n", 2));
        assert!(depth_exceeds(b"*1\r\n*1\r\n*1\r\n:1\r\n", 2));
        // Siblings do not add depth.
        assert!(!depth_exceeds(
            b"*3\r\n*1\r\n:1\r\n*1\r\n:2\r\n$1\r\n*\r\n",
            2
        ));
        assert!(!depth_exceeds(b"%1\r\n+k\r\n*1\r\n:1\r\n", 2));
        assert!(!depth_exceeds(b"", 2));
        assert!(!depth_exceeds(b"*2\r\n$-1\r\n*-1\r\n", 1));
    }

    #[test]
    fn both_protocols() {
        let v = decode(b"*2\r\n$-1\r\n:7\r\n", "T").unwrap();
        assert_eq!(v, Value::List(vec![Value::Null, Value::Int(7)]));
        let v = decode(b"*2\r\n_\r\n%1\r\n+ip\r\n$1\r\n?\r\n", "T").unwrap();
        let map = Value::Map(vec![(
            Value::Str(b"ip".to_vec()),
            Value::Str(b"?".to_vec()),
        )]);
        assert_eq!(v, Value::List(vec![Value::Null, map]));
        assert_eq!(v.as_list().unwrap()[1].pairs().unwrap().len(), 1);
    }
}

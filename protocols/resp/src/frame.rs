//! Finding frames in a byte buffer, and the replies attache writes itself.
//!
//! Requests and replies pass through attache unchanged: the proxy only needs
//! to know where a frame ends and, for requests, where each argument is.
//! Requests (arrays of bulk strings) are walked header by header here;
//! replies by the scan in `scan`, which hands anything unusual to
//! `redis-protocol`'s decoder. Nothing here copies or re-encodes a frame.
//!
//! Size limits are checked on the *declared* lengths of an incomplete request
//! (`*<count>` and `$<len>` headers), so a client that announces a 4 GiB bulk
//! string is refused before attache buffers any of it.

use std::ops::Range;

use redis_protocol::{resp2, resp3};
use smallvec::SmallVec;

use crate::{inline, scan};

/// Longest inline command line (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;

/// Why a request could not be decoded. An incomplete frame is not an error:
/// [`parse_request`] returns `Ok(None)` for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes are not RESP.
    #[error("Protocol error: {0}")]
    Invalid(String),
    /// A declared length exceeds the configured limit. Worded as Redis
    /// words its own refusal ("invalid bulk length"), with the numbers.
    #[error("Protocol error: {}", too_large(what, *declared, *limit))]
    TooLarge {
        /// What was too large ("request", "bulk length", "multibulk length").
        what: &'static str,
        /// The length the client declared (or has sent so far).
        declared: u64,
        /// The configured `max_request_bytes`.
        limit: u64,
    },
}

fn too_large(what: &str, declared: u64, limit: u64) -> String {
    match what {
        "multibulk length" => format!(
            "invalid multibulk length ({declared} elements cannot fit the limit of {limit} bytes)"
        ),
        "bulk length" => {
            format!("invalid bulk length ({declared} bytes exceeds the limit of {limit} bytes)")
        }
        _ => format!("{what} of {declared} bytes exceeds the limit of {limit} bytes"),
    }
}

/// Arguments a [`Request`] holds without allocating.
pub const INLINE_ARGS: usize = 4;

/// Where a request's arguments lie.
pub type Args = SmallVec<[Range<usize>; INLINE_ARGS]>;

/// One complete request found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes the request occupies at the start of the buffer.
    pub len: usize,
    /// Where each argument lies in the buffer (argument 0 is the command name).
    /// Empty for an empty request (`*0`, or a blank inline line), which Redis
    /// ignores without a reply. Up to [`INLINE_ARGS`] are held without an
    /// allocation (a GET, a SET).
    pub args: Args,
    /// The request was an inline command (`PING\r\n`) rather than a RESP array.
    pub inline: bool,
}

impl Request {
    /// Argument `i` as bytes of `buf` (the buffer the request was parsed from).
    pub fn arg<'a>(&self, buf: &'a [u8], i: usize) -> Option<&'a [u8]> {
        self.args.get(i).and_then(|r| buf.get(r.clone()))
    }
}

/// Finds the first request in `buf`.
///
/// Returns `Ok(None)` while the request is incomplete, after checking that
/// nothing it has declared so far exceeds `max_bytes`.
pub fn parse_request(buf: &[u8], max_bytes: usize) -> Result<Option<Request>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, max_bytes),
        Some(_) => parse_inline(buf),
    }
}

fn parse_array(buf: &[u8], max_bytes: usize) -> Result<Option<Request>, ProtocolError> {
    // Check the declared element count before sizing anything by it.
    let Some((count, header_len)) = read_length_line(buf, "invalid multibulk length")? else {
        return Ok(None);
    };
    if count > 0 && (count as u64).saturating_mul(4) > max_bytes as u64 {
        return Err(ProtocolError::TooLarge {
            what: "multibulk length",
            declared: count as u64,
            limit: max_bytes as u64,
        });
    }
    if count <= 0 {
        return Ok(Some(Request {
            len: header_len,
            args: Args::new(),
            inline: false,
        }));
    }
    // One pass over the bulk headers: a declared length over the limit is
    // refused as soon as its header is in, before its payload is buffered.
    let incomplete = || {
        if buf.len() > max_bytes {
            return Err(ProtocolError::TooLarge {
                what: "request",
                declared: buf.len() as u64,
                limit: max_bytes as u64,
            });
        }
        Ok(None)
    };
    let mut args = Args::with_capacity((count as usize).min(16));
    let mut pos = header_len;
    for _ in 0..count {
        match buf.get(pos) {
            None => return incomplete(),
            Some(b'$') => {}
            Some(&other) => {
                return Err(invalid(format!(
                    "expected '$', got '{}'",
                    char::from(other).escape_default()
                )))
            }
        }
        let Some((len, line)) = read_length_line(&buf[pos..], "invalid bulk length")? else {
            return incomplete();
        };
        if len < 0 {
            return Err(invalid("invalid bulk length"));
        }
        if len as u64 > max_bytes as u64 {
            return Err(ProtocolError::TooLarge {
                what: "bulk length",
                declared: len as u64,
                limit: max_bytes as u64,
            });
        }
        let start = pos + line;
        let end = start + len as usize;
        // Like Redis, the two bytes after the payload are skipped unread.
        if buf.len() < end + 2 {
            return incomplete();
        }
        args.push(start..end);
        pos = end + 2;
    }
    Ok(Some(Request {
        len: pos,
        args,
        inline: false,
    }))
}

/// Reads `<type byte><integer>\r\n`, returning the integer and the line's
/// length. The integer is read as Redis reads it (`string2ll`): no leading
/// zero, no `-0`, no sign but `-`; anything else is refused with Redis's
/// message, `invalid`. (Forwarded, such a line would make the server close
/// a shared connection, failing other apps' commands on it.)
fn read_length_line(
    buf: &[u8],
    invalid_length: &'static str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    // The usual case (digits then CRLF) in one pass; anything else is left
    // to the careful reading.
    if let Some((len, n)) = scan::length_line(buf) {
        if buf[1] != b'0' || len == 4 {
            return Ok(Some((n, len)));
        }
    }
    read_length_line_slowly(buf).map_err(|()| invalid(invalid_length))
}

fn read_length_line_slowly(buf: &[u8]) -> Result<Option<(i64, usize)>, ()> {
    // One type byte (`*`, `$`) before the digits.
    let skip = 1;
    let Some(nl) = buf.iter().take(32).position(|&b| b == b'\n') else {
        if buf.len() >= 32 {
            return Err(());
        }
        return Ok(None);
    };
    if nl < skip + 1 || buf[nl - 1] != b'\r' {
        return Err(());
    }
    let digits = &buf[skip..nl - 1];
    let unsigned = digits.strip_prefix(b"-").unwrap_or(digits);
    if unsigned.first() == Some(&b'0') && digits != b"0" {
        return Err(());
    }
    let n = scan::integer(digits).ok_or(())?;
    Ok(Some((n, nl + 1)))
}

fn parse_inline(buf: &[u8]) -> Result<Option<Request>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE_BYTES {
            return Err(invalid("too big inline request"));
        }
        return Ok(None);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let mut args = Args::new();
    let mut i = 0;
    // As Redis's `sdssplitargs` (quotes aside: see `inline`).
    while i < line_end {
        while i < line_end && inline::is_space(buf[i]) {
            i += 1;
        }
        let start = i;
        while i < line_end && !inline::ends_argument(buf[i]) {
            i += 1;
        }
        if i > start {
            args.push(start..i);
        }
        if buf.get(i) == Some(&0) {
            // A NUL ends the line, as it ends Redis's C string.
            break;
        }
    }
    Ok(Some(Request {
        len: nl + 1,
        args,
        inline: true,
    }))
}

fn invalid(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::Invalid(msg.into())
}

/// Length of the first complete reply frame in `buf`, or `None` while it is
/// incomplete. `resp3` selects the decoder: a connection that said `HELLO 3`
/// receives RESP3 types (maps, sets, pushes, doubles, …).
pub fn reply_len(buf: &[u8], resp3: bool) -> Result<Option<usize>, ProtocolError> {
    match scan::reply(buf, resp3) {
        scan::Scan::Complete(len) => return Ok(Some(len)),
        scan::Scan::Incomplete => return Ok(None),
        scan::Scan::Unsure => {}
    }
    let decoded = if resp3 {
        resp3::decode::complete::decode_range(buf).map(|f| f.map(|(_, len)| len))
    } else {
        resp2::decode::decode_range(buf).map(|f| f.map(|(_, len)| len))
    };
    decoded.map_err(|e| invalid(e.details()))
}

/// The first reply in `buf` is an out-of-band RESP3 push (`>`), such as a
/// pub/sub message or a client-tracking invalidation.
pub fn is_push(buf: &[u8]) -> bool {
    buf.first() == Some(&b'>')
}

/// The first reply in `buf` is an error (`-` or RESP3 `!`).
pub fn is_error(buf: &[u8]) -> bool {
    matches!(buf.first(), Some(b'-') | Some(b'!'))
}

/// Replies attache writes itself, already encoded.
pub mod reply {
    use bytes::{BufMut, Bytes, BytesMut};

    /// `+OK`
    pub const OK: &[u8] = b"+OK\r\n";
    /// `+RESET`, the reply to `RESET`.
    pub const RESET: &[u8] = b"+RESET\r\n";

    /// An error reply. `msg` must start with the error code (`ERR`, `NOPROTO`,
    /// …); line breaks in it are replaced so the frame stays valid.
    pub fn error(msg: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(msg.len() + 3);
        out.put_u8(b'-');
        for b in msg.bytes() {
            out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }

    /// A bulk string reply.
    pub fn bulk(data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(data.len() + 16);
        out.put_u8(b'$');
        out.put_slice(data.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(data);
        out.put_slice(b"\r\n");
        out.freeze()
    }

    /// The null reply in the client's protocol version.
    pub fn null(resp3: bool) -> Bytes {
        Bytes::from_static(if resp3 { b"_\r\n" } else { b"$-1\r\n" })
    }

    /// A request encoded as a RESP array of bulk strings.
    pub fn command(args: &[&[u8]]) -> Bytes {
        let mut out =
            BytesMut::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        out.put_u8(b'*');
        out.put_slice(args.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
        for arg in args {
            out.put_u8(b'$');
            out.put_slice(arg.len().to_string().as_bytes());
            out.put_slice(b"\r\n");
            out.put_slice(arg);
            out.put_slice(b"\r\n");
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 512 * 1024 * 1024;

    fn args(buf: &[u8]) -> Vec<&[u8]> {
        let req = parse_request(buf, MAX).unwrap().unwrap();
        req.args.iter().map(|r| &buf[r.clone()]).collect()
    }

    #[test]
    fn parses_a_complete_array() {
        let buf = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n$4\r\nPING\r\n";
        let req = parse_request(buf, MAX).unwrap().unwrap();
        assert_eq!(req.len, 22);
        assert_eq!(args(buf), vec![&b"GET"[..], b"key"]);
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let full = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_request(&full[..cut], MAX), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn inline_commands_split_on_whitespace() {
        assert_eq!(args(b"SET  a b\r\n"), vec![&b"SET"[..], b"a", b"b"]);
        // As Redis: \v and \f separate arguments but do not end one.
        assert_eq!(args(b"SET\x0ba\x0c1\r\n"), vec![&b"SET\x0ba\x0c1"[..]]);
        assert_eq!(args(b"\x0cSET\t a\r\n"), vec![&b"SET"[..], b"a"]);
        assert_eq!(args(b"ECHO a\0b c\r\n"), vec![&b"ECHO"[..], b"a"]);
        assert_eq!(args(b"\0\r\n"), Vec::<&[u8]>::new());
        let blank = parse_request(b"\r\n", MAX).unwrap().unwrap();
        assert!(blank.args.is_empty());
        assert_eq!(blank.len, 2);
    }

    #[test]
    fn oversized_declarations_are_refused_before_buffering() {
        let err = parse_request(b"*2\r\n$3\r\nSET\r\n$4294967296\r\n", 1024).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::TooLarge {
                what: "bulk length",
                ..
            }
        ));
        // Redis's own wording, which clients and Redis's tests match.
        assert_eq!(
            err.to_string(),
            "Protocol error: invalid bulk length (4294967296 bytes exceeds the limit of 1024 bytes)"
        );
        let err = parse_request(b"*100000\r\n", 1024).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::TooLarge {
                what: "multibulk length",
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "Protocol error: invalid multibulk length (100000 elements cannot fit the limit of 1024 bytes)"
        );
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(parse_request(b"*2\r\n+GET\r\n$1\r\nx\r\n", MAX).is_err());
        assert!(parse_request(b"*abc\r\n", MAX).is_err());
        assert!(parse_request(b"*2\r\n:1\r\n", MAX).is_err());
    }

    /// Lengths as Redis reads them, with its messages: no leading zero, no
    /// `-0`, no `+`. A negative count is an empty request, as in Redis.
    #[test]
    fn lengths_are_read_as_redis_reads_them() {
        let refused = |buf: &[u8]| parse_request(buf, MAX).unwrap_err().to_string();
        for bad in [
            &b"*01\r\n"[..],
            b"*00\r\n",
            b"*-0\r\n",
            b"*+1\r\n",
            b"* 1\r\n",
            b"*x\r\n",
        ] {
            let shown = String::from_utf8_lossy(bad);
            assert_eq!(
                refused(bad),
                "Protocol error: invalid multibulk length",
                "{shown}"
            );
        }
        for bad in [
            &b"*1\r\n$04\r\nPING\r\n"[..],
            b"*1\r\n$-0\r\n",
            b"*1\r\n$00\r\n\r\n",
        ] {
            let shown = String::from_utf8_lossy(bad);
            assert_eq!(
                refused(bad),
                "Protocol error: invalid bulk length",
                "{shown}"
            );
        }
        assert_eq!(args(b"*1\r\n$0\r\n\r\n"), vec![&b""[..]]);
        assert_eq!(
            args(b"*1\r\n$10\r\n0123456789\r\n"),
            vec![&b"0123456789"[..]]
        );
        let empty = parse_request(b"*-5\r\n", MAX).unwrap().unwrap();
        assert!(empty.args.is_empty());
        assert!(parse_request(b"*0\r\n", MAX)
            .unwrap()
            .unwrap()
            .args
            .is_empty());
    }

    /// Where the decoder finds a complete array of bulk strings, the
    /// header walk finds the same length and arguments; where it finds
    /// garbage, so does the walk (or it is still waiting for the rest).
    #[test]
    fn the_header_walk_agrees_with_the_decoder() {
        let frames: [&[u8]; 4] = [
            b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\nv\r\n\r\nx\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*2\r\n$4\r\nECHO\r\n$2\r\n\x00\xff\r\n",
        ];
        for frame in frames {
            let mut inputs: Vec<Vec<u8>> = (1..=frame.len()).map(|n| frame[..n].to_vec()).collect();
            for i in 0..frame.len() {
                for b in [b'\r', b'\n', b'x', b'-', b'0', b'9', b'*', b'$'] {
                    let mut corrupt = frame.to_vec();
                    corrupt[i] = b;
                    inputs.push(corrupt);
                }
            }
            for input in inputs.iter().filter(|i| i[0] == b'*') {
                let decoded = resp2::decode::decode_range(input);
                match parse_request(input, MAX) {
                    Ok(Some(req)) => {
                        let Ok(Some((resp2::types::RangeFrame::Array(items), len))) = decoded
                        else {
                            panic!("{input:?}: the decoder found {decoded:?}");
                        };
                        assert_eq!(req.len, len, "{input:?}");
                        let ranges: Vec<_> = items
                            .iter()
                            .map(|item| match item {
                                resp2::types::RangeFrame::BulkString((s, e)) => *s..*e,
                                other => panic!("{input:?}: {other:?}"),
                            })
                            .collect();
                        assert_eq!(&req.args[..], &ranges[..], "{input:?}");
                    }
                    Ok(None) => assert!(
                        !matches!(decoded, Ok(Some(_))) || req_is_odd(&decoded),
                        "{input:?}: the decoder found {decoded:?}"
                    ),
                    Err(_) => assert!(
                        !matches!(decoded, Ok(Some(_))) || req_is_odd(&decoded),
                        "{input:?}: the decoder found {decoded:?}"
                    ),
                }
            }
        }
    }

    /// A frame the decoder accepts that is not a request (not an array of
    /// bulk strings): refusing it, or waiting, is right.
    fn req_is_odd(
        decoded: &Result<
            Option<(resp2::types::RangeFrame, usize)>,
            redis_protocol::error::RedisProtocolError,
        >,
    ) -> bool {
        match decoded {
            Ok(Some((resp2::types::RangeFrame::Array(items), _))) => items
                .iter()
                .any(|i| !matches!(i, resp2::types::RangeFrame::BulkString(_))),
            _ => true,
        }
    }

    #[test]
    fn reply_lengths_in_both_protocols() {
        assert_eq!(reply_len(b"+OK\r\n", false), Ok(Some(5)));
        assert_eq!(reply_len(b"$3\r\nabc\r\n+OK", false), Ok(Some(9)));
        assert_eq!(reply_len(b"$3\r\nab", false), Ok(None));
        assert_eq!(reply_len(b"%1\r\n+a\r\n:1\r\n", true), Ok(Some(12)));
        assert_eq!(reply_len(b"_\r\n", true), Ok(Some(3)));
    }

    #[test]
    fn error_replies_stay_one_line() {
        assert_eq!(&reply::error("ERR a\r\nb")[..], b"-ERR a  b\r\n");
    }
}

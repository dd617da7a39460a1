//! The hot path's check pass: where a frame ends, found by walking its
//! headers, without allocating and without building a frame.
//!
//! Every request and every reply passes here, so this is a plain byte scan
//! rather than `redis-protocol`'s decoder, which builds a frame (a `Vec` for
//! each array) through parser combinators. The scan accepts only the frames
//! Redis actually sends, written the way Redis writes them; anything else
//! (a malformed frame, RESP3 doubles, big numbers, streamed aggregates) is
//! handed to the full decoder, which has the last word. So the scan can
//! make framing faster, never different: `tests` check it against the
//! decoder on every prefix of many frames.

use memchr::memchr;

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// A complete frame of this many bytes.
    Complete(usize),
    /// Well-formed so far, and the buffer ends before the frame does.
    Incomplete,
    /// Not something the scan vouches for: ask the full decoder.
    Unsure,
}

/// Deepest aggregate nesting the scan follows; deeper replies (COMMAND DOCS
/// nests about 6 levels) go to the decoder.
const MAX_DEPTH: usize = 8;

/// The length of the first reply frame in `buf`.
pub(crate) fn reply(buf: &[u8], resp3: bool) -> Scan {
    // Elements still owed by each open aggregate, innermost last.
    let mut owed = [0u64; MAX_DEPTH];
    let mut depth = 0;
    let mut pos = 0;
    loop {
        let Some(&kind) = buf.get(pos) else {
            return Scan::Incomplete;
        };
        let header = match length_line(&buf[pos..]) {
            Some((header, _)) => header,
            None => match line(&buf[pos..]) {
                Line::Found(end) => end,
                Line::Missing => return Scan::Incomplete,
                Line::Invalid => return Scan::Unsure,
            },
        };
        let body = &buf[pos + 1..pos + header - 2];
        // Per type: a payload of `n` bytes follows (blobs: `Some(n)`), or
        // `n` elements do (aggregates, and `0` for a line that is all);
        // `None` where the header's number is not one.
        let (blob, children) = match (kind, resp3) {
            (b'+' | b'-', _) => (None, Some(0)),
            (b':', _) if integer(body).is_some() => (None, Some(0)),
            // The RESP2 nulls (the RESP3 decoder refuses them).
            (b'$' | b'*', false) if body == b"-1" => (None, Some(0)),
            (b'$', _) | (b'!', true) => (Some(integer(body)), None),
            (b'*', _) | (b'~' | b'>', true) => (None, integer(body)),
            (b'%', true) => (None, integer(body).map(|n| n.saturating_mul(2))),
            (b'_', true) if body.is_empty() => (None, Some(0)),
            (b'#', true) if body == b"t" || body == b"f" => (None, Some(0)),
            // Doubles, big numbers, verbatim strings, attributes, streamed
            // types, RESP3 types on a RESP2 connection: rare, or wrong.
            _ => return Scan::Unsure,
        };
        let children = match (blob, children) {
            (Some(Some(len)), _) if len >= 0 => match bulk_end(buf, pos + header, len) {
                Ok(end) => {
                    pos = end;
                    if close(&mut owed, &mut depth) {
                        return Scan::Complete(pos);
                    }
                    continue;
                }
                Err(scan) => return scan,
            },
            (Some(_), _) => return Scan::Unsure,
            (None, Some(n)) if n >= 0 => n as u64,
            (None, _) => return Scan::Unsure,
        };
        pos += header;
        if children > 0 {
            if depth == MAX_DEPTH {
                return Scan::Unsure;
            }
            owed[depth] = children;
            depth += 1;
        } else if close(&mut owed, &mut depth) {
            return Scan::Complete(pos);
        }
    }
}

/// Counts a finished element against the open aggregates, closing those it
/// completes; true when the outermost frame is complete.
fn close(owed: &mut [u64; MAX_DEPTH], depth: &mut usize) -> bool {
    while *depth > 0 {
        owed[*depth - 1] -= 1;
        if owed[*depth - 1] > 0 {
            return false;
        }
        *depth -= 1;
    }
    true
}

/// Where a bulk payload of `len` bytes starting at `start` ends, after its
/// CRLF.
fn bulk_end(buf: &[u8], start: usize, len: i64) -> Result<usize, Scan> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len)?.checked_add(2))
        .ok_or(Scan::Unsure)?;
    match buf.get(end - 2..end) {
        Some(b"\r\n") => Ok(end),
        Some(_) => Err(Scan::Unsure),
        None if buf.len() == end - 1 && buf[end - 2] != b'\r' => Err(Scan::Unsure),
        None => Err(Scan::Incomplete),
    }
}

/// The usual header, a type byte, up to 17 digits and CRLF, read in one
/// pass: its length and its number. `None` for anything else (a sign, an
/// incomplete line, garbage), which a slower reading must decide.
pub(crate) fn length_line(buf: &[u8]) -> Option<(usize, i64)> {
    let mut n: i64 = 0;
    for (i, &b) in buf.iter().enumerate().skip(1).take(18) {
        match b {
            b'0'..=b'9' => n = n * 10 + i64::from(b - b'0'),
            b'\r' if i > 1 && buf.get(i + 1) == Some(&b'\n') => return Some((i + 2, n)),
            _ => return None,
        }
    }
    None
}

/// A header line: its length with the CRLF, when complete.
enum Line {
    Found(usize),
    Missing,
    Invalid,
}

/// The line at the start of `buf`, up to and including its first `\n`,
/// which must follow a `\r` (and no other `\r` may come before it).
fn line(buf: &[u8]) -> Line {
    match memchr(b'\n', buf) {
        None => match memchr(b'\r', buf) {
            // A `\r` that is not the last byte is not followed by `\n`.
            Some(cr) if cr + 1 < buf.len() => Line::Invalid,
            _ => Line::Missing,
        },
        Some(nl) if nl >= 2 && buf[nl - 1] == b'\r' && memchr(b'\r', &buf[..nl - 1]).is_none() => {
            Line::Found(nl + 1)
        }
        Some(_) => Line::Invalid,
    }
}

/// A decimal integer as Redis writes it: an optional `-`, then digits,
/// nothing else, no overflow.
pub(crate) fn integer(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::{resp2, resp3};

    /// What the full decoder says about `buf`.
    fn decoder(buf: &[u8], resp3: bool) -> Result<Option<usize>, ()> {
        let decoded = if resp3 {
            resp3::decode::complete::decode_range(buf).map(|f| f.map(|(_, len)| len))
        } else {
            resp2::decode::decode_range(buf).map(|f| f.map(|(_, len)| len))
        };
        decoded.map_err(|_| ())
    }

    /// Replies Redis sends, in both protocols, including nesting, empty and
    /// null aggregates, binary payloads and pushes.
    const RESP2: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: \r\n",
        b":0\r\n",
        b":-123456789\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"$5\r\nhe\r\no\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*3\r\n$1\r\na\r\n:2\r\n*2\r\n+x\r\n$-1\r\n",
        b"*2\r\n*1\r\n*1\r\n:1\r\n$3\r\n\x00\xff\n\r\n",
    ];
    const RESP3: &[&[u8]] = &[
        b"_\r\n",
        b"#t\r\n",
        b"#f\r\n",
        b"!5\r\nERR x\r\n",
        b"=8\r\ntxt:abcd\r\n",
        b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
        b"~2\r\n:1\r\n:2\r\n",
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nm\r\n",
        b",3.14\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"|1\r\n+ttl\r\n:3\r\n:7\r\n",
        b"*1\r\n%0\r\n",
    ];

    /// On every prefix and some corruptions of each frame, the scan either
    /// agrees with the decoder or leaves the call to it.
    fn agrees(frame: &[u8], resp3: bool) {
        let mut inputs: Vec<Vec<u8>> = (0..=frame.len()).map(|n| frame[..n].to_vec()).collect();
        for i in 0..frame.len() {
            for b in [b'\r', b'\n', b'x', b'-', b'0', b'*'] {
                let mut corrupt = frame.to_vec();
                corrupt[i] = b;
                inputs.push(corrupt);
            }
        }
        let mut followed = frame.to_vec();
        followed.extend_from_slice(b"+next\r\n");
        inputs.push(followed);
        for input in inputs {
            let expected = decoder(&input, resp3);
            match reply(&input, resp3) {
                Scan::Unsure => {}
                Scan::Complete(n) => assert_eq!(expected, Ok(Some(n)), "{input:?}"),
                Scan::Incomplete => assert!(
                    matches!(expected, Ok(None) | Err(())),
                    "{input:?}: the decoder found {expected:?}"
                ),
            }
        }
    }

    #[test]
    fn agrees_with_the_decoder_on_resp2() {
        for frame in RESP2 {
            agrees(frame, false);
            agrees(frame, true);
        }
    }

    #[test]
    fn agrees_with_the_decoder_on_resp3() {
        for frame in RESP3 {
            agrees(frame, true);
        }
    }

    #[test]
    fn common_replies_need_no_decoder() {
        for frame in RESP2 {
            assert_eq!(
                reply(frame, false),
                Scan::Complete(frame.len()),
                "{frame:?}"
            );
        }
        for frame in RESP3[..4].iter().chain(&RESP3[5..8]) {
            assert_eq!(reply(frame, true), Scan::Complete(frame.len()), "{frame:?}");
        }
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(integer(b"42"), Some(42));
        assert_eq!(integer(b"-1"), Some(-1));
        for bad in [&b""[..], b"-", b"+1", b"1 ", b"0x1", b"9999999999999999999"] {
            assert_eq!(integer(bad), None, "{bad:?}");
        }
    }
}

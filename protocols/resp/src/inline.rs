//! Inline commands that quote an argument (`SET greeting "hello world"`),
//! split as Redis splits them (`sdssplitargs`).
//!
//! [`crate::frame::parse_request`] splits an inline line on whitespace
//! only, which is right for every line without a quote and costs no copy.
//! A line with a `"` or `'` is split again here: `"…"` takes the escapes
//! `\n \r \t \b \a \xHH` and a backslash before any other character stands
//! for that character; `'…'` takes `\'`. A closing quote must be followed by
//! whitespace or the end of the line, and an unclosed quote is an error.

use crate::frame::ProtocolError;

/// The arguments of the inline request `request` (its bytes, line end
/// included), or `None` when the line quotes nothing and the whitespace
/// split stands.
pub fn unquote(request: &[u8]) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
    let line = request.strip_suffix(b"\n").unwrap_or(request);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.iter().any(|&b| b == b'"' || b == b'\'') {
        return Ok(None);
    }
    split(line)
        .map(Some)
        .ok_or_else(|| ProtocolError::Invalid("unbalanced quotes in request".into()))
}

/// C's `isspace`: what Redis skips between arguments.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// What ends an unquoted argument for Redis: not `\v` or `\f`.
pub(crate) fn ends_argument(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn split(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        // A NUL ends the line, as it ends Redis's C string.
        if p == line.len() || line[p] == 0 {
            return Some(args);
        }
        let mut arg = Vec::new();
        // Unquoted up to a quote, which quotes the rest of the argument
        // (`a"b c"` is `ab c`), or to its end.
        while let Some(&c) = line.get(p).filter(|&&c| !ends_argument(c)) {
            if c == b'"' || c == b'\'' {
                p = quoted(line, p, &mut arg)?;
                break;
            }
            arg.push(c);
            p += 1;
        }
        args.push(arg);
    }
}

/// Reads the quoted part at `line[open]` (a `"` or `'`) into `arg` and
/// returns where it ends; `None` when it is not closed, or its closing
/// quote does not end the argument.
fn quoted(line: &[u8], open: usize, arg: &mut Vec<u8>) -> Option<usize> {
    let quote = line[open];
    let at = |i: usize| line.get(i).copied();
    let mut p = open + 1;
    loop {
        match (at(p)?, at(p + 1)) {
            (b'\\', Some(b'\'')) if quote == b'\'' => {
                arg.push(b'\'');
                p += 2;
            }
            (b'\\', Some(b'x')) if quote == b'"' => {
                match (at(p + 2).and_then(hex), at(p + 3).and_then(hex)) {
                    (Some(hi), Some(lo)) => {
                        arg.push(hi << 4 | lo);
                        p += 4;
                    }
                    _ => {
                        arg.push(b'x');
                        p += 2;
                    }
                }
            }
            (b'\\', Some(c)) if quote == b'"' => {
                arg.push(match c {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                p += 2;
            }
            (c, next) if c == quote => {
                return next.is_none_or(is_space).then_some(p + 1);
            }
            (c, _) => {
                arg.push(c);
                p += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_ok(line: &[u8]) -> Vec<Vec<u8>> {
        unquote(line).unwrap().unwrap()
    }

    #[test]
    fn lines_without_quotes_keep_the_plain_split() {
        assert_eq!(unquote(b"SET a b\r\n").unwrap(), None);
    }

    #[test]
    fn double_quotes_take_escapes_and_single_quotes_keep_bytes() {
        assert_eq!(
            split_ok(b"SET \"a key\" \"x\\ty\\x41\\\"\"\r\n"),
            vec![b"SET".to_vec(), b"a key".to_vec(), b"x\tyA\"".to_vec()]
        );
        assert_eq!(
            split_ok(b"SET 'it\\'s' '\\n'\n"),
            vec![b"SET".to_vec(), b"it's".to_vec(), b"\\n".to_vec()]
        );
        assert_eq!(split_ok(b"ECHO \"\"\r\n"), vec![b"ECHO".to_vec(), vec![]]);
    }

    #[test]
    fn a_quote_inside_an_argument_joins_it() {
        assert_eq!(
            split_ok(b"ECHO a\"b c\"\r\n"),
            vec![b"ECHO".to_vec(), b"ab c".to_vec()]
        );
    }

    #[test]
    fn unbalanced_quotes_are_refused_as_redis_does() {
        for line in [
            &b"SET \"a b\r\n"[..],
            b"SET 'a\r\n",
            b"SET \"a\"b\r\n",
            b"SET 'a'b\r\n",
        ] {
            let err = unquote(line).unwrap_err();
            assert_eq!(
                err.to_string(),
                "Protocol error: unbalanced quotes in request",
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

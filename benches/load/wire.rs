//! The few RESP bytes the load generator speaks: pre-encoded GET/SET batches
//! whose keys are rewritten in place, and a reply scanner that only counts.
//!
//! Deliberately not `attache-resp`: the generator must cost the same for every
//! target and must not share code (or bugs) with the proxy it measures.

/// Which command every request of a workload sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Set,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Set => "SET",
        }
    }
}

/// Keys are `key:` and a zero-padded index below the keyspace size, so every
/// key of a keyspace has the same length and can be rewritten in place.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keyspace {
    pub(crate) size: u64,
    width: usize,
}

impl Keyspace {
    pub(crate) fn new(size: u64) -> Self {
        let size = size.max(1);
        let width = (size - 1).to_string().len();
        Self { size, width }
    }

    fn key_len(self) -> usize {
        4 + self.width
    }

    fn write_key(self, out: &mut [u8], mut index: u64) {
        for digit in out.iter_mut().rev() {
            *digit = b'0' + (index % 10) as u8;
            index /= 10;
        }
    }
}

/// `depth` pre-encoded commands in one buffer, written with one syscall.
pub(crate) struct Batch {
    pub(crate) bytes: Vec<u8>,
    /// Where each command's key digits start in `bytes`.
    digits_at: Vec<usize>,
    keyspace: Keyspace,
}

impl Batch {
    pub(crate) fn new(op: Op, depth: usize, keyspace: Keyspace, value_size: usize) -> Self {
        let klen = keyspace.key_len();
        let value = vec![b'v'; value_size];
        let mut bytes = Vec::new();
        let mut digits_at = Vec::with_capacity(depth);
        for _ in 0..depth {
            match op {
                Op::Get => bytes.extend_from_slice(b"*2\r\n$3\r\nGET\r\n"),
                Op::Set => bytes.extend_from_slice(b"*3\r\n$3\r\nSET\r\n"),
            }
            bytes.extend_from_slice(format!("${klen}\r\nkey:").as_bytes());
            digits_at.push(bytes.len());
            bytes.resize(bytes.len() + keyspace.width, b'0');
            bytes.extend_from_slice(b"\r\n");
            if op == Op::Set {
                bytes.extend_from_slice(format!("${value_size}\r\n").as_bytes());
                bytes.extend_from_slice(&value);
                bytes.extend_from_slice(b"\r\n");
            }
        }
        Self {
            bytes,
            digits_at,
            keyspace,
        }
    }

    /// Points every command at a fresh uniformly drawn key. No allocation.
    pub(crate) fn draw_keys(&mut self, rng: &mut Rng) {
        let ks = self.keyspace;
        for &at in &self.digits_at {
            let index = rng.below(ks.size);
            ks.write_key(&mut self.bytes[at..at + ks.width], index);
        }
    }

    /// Points command `i` at key `index` (for populating the keyspace).
    pub(crate) fn set_key(&mut self, i: usize, index: u64) {
        let ks = self.keyspace;
        let at = self.digits_at[i];
        ks.write_key(&mut self.bytes[at..at + ks.width], index);
    }
}

/// xorshift64*: a few cycles per draw; quality is ample for picking keys.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        // Multiply-shift maps to 0..n without a division's bias or cost.
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) as u128 * n as u128) >> 64) as u64
    }
}

/// One complete reply at the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) len: usize,
    pub(crate) is_error: bool,
}

/// The generator's commands only get `+`, `-`, `:` and `$` replies back.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply starting {0:?}")]
pub(crate) struct UnexpectedReply(String);

/// The first reply in `buf`, `Ok(None)` while it is incomplete.
pub(crate) fn scan_reply(buf: &[u8]) -> Result<Option<Reply>, UnexpectedReply> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line = lf + 1;
    let reply = |len| {
        Ok(Some(Reply {
            len,
            is_error: kind == b'-',
        }))
    };
    match kind {
        b'+' | b'-' | b':' => reply(line),
        b'$' => {
            let n = std::str::from_utf8(&buf[1..lf.saturating_sub(1)])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| unexpected(buf))?;
            if n < 0 {
                return reply(line);
            }
            let len = line + n as usize + 2;
            if buf.len() < len {
                Ok(None)
            } else {
                reply(len)
            }
        }
        _ => Err(unexpected(buf)),
    }
}

fn unexpected(buf: &[u8]) -> UnexpectedReply {
    UnexpectedReply(String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned())
}

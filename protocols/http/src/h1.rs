//! HTTP/1.1 towards the upstream, without I/O: the request head attache
//! writes, the response head it reads, and how the response body is
//! delimited (RFC 9112 §6). The runtime (`src/http/h1.rs`) owns the socket.
//!
//! Why not hyper's client here: a proxied request already has its headers
//! in a `HeaderMap`, and the response's go straight back out; hyper's
//! client connection adds a channel, a dispatcher and a second pass over
//! every header, which cost more than the rest of the request path (and
//! than nginx's whole proxy). The app's side is [`app`]: plain HTTP/1.1
//! requests are read there, and everything else is left to hyper's
//! server.
//!
//! - The request's framing is attache's: the app's `Content-Length` and
//!   `Transfer-Encoding` are not copied, the body's known length (or
//!   chunked encoding) is written instead.
//! - Response headers are read in one pass into the map the app gets,
//!   values sharing the read buffer's bytes, hop-by-hop headers left out.
//! - Interim responses (`100 Continue`, `103 Early Hints`) are skipped.

pub mod app;

use std::io::Write as _;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

use crate::headers::is_hop_by_hop;

/// The largest response head (status line and headers) accepted, and the
/// largest trailer section.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
pub const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How a request's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no `Content-Length` either.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (length unknown).
    Chunked,
}

impl RequestFraming {
    /// The framing of a body whose exact length is `exact` (`None`:
    /// unknown). An empty body gets `Content-Length: 0` only where a body
    /// is expected (POST, PUT, PATCH) or the app sent one, as clients do.
    pub fn for_body(method: &Method, exact: Option<u64>, app_sent_length: bool) -> Self {
        match exact {
            None => Self::Chunked,
            Some(0)
                if !app_sent_length
                    && !matches!(*method, Method::POST | Method::PUT | Method::PATCH) =>
            {
                Self::None
            }
            Some(n) => Self::Length(n),
        }
    }
}

/// Appends the head of a request to `out`: `METHOD target HTTP/1.1`, the
/// headers but the app's framing ones, then `framing`'s.
pub fn encode_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if *name != CONTENT_LENGTH && *name != TRANSFER_ENCODING {
            encode_field(name, value, out);
        }
    }
    match framing {
        RequestFraming::None => {}
        // Writing to a Vec cannot fail.
        RequestFraming::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one header field: `name: value` and its CRLF.
fn encode_field(name: &HeaderName, value: &HeaderValue, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked request body (`data` must not be empty:
/// an empty chunk ends the body, see [`LAST_CHUNK`]).
pub fn encode_chunk_header(len: usize, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

/// What ends a chunked request body without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the end of a chunked request body: the last chunk, then the
/// trailer fields (hop-by-hop ones left out).
pub fn encode_last_chunk(trailers: &HeaderMap, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        if !is_hop_by_hop(name) {
            encode_field(name, value, out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: a response to HEAD, a 204 or 304, or `Content-Length: 0`.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked: see [`ChunkedDecoder`].
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A response head, ready to go back to the app.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// Without hop-by-hop headers and those `Connection` names.
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// A response head attache cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("invalid response head: {0}")]
    Invalid(&'static str),
    #[error("response head larger than {MAX_HEAD} bytes or {MAX_HEADERS} headers")]
    TooLarge,
}

impl From<httparse::Error> for HeadError {
    fn from(error: httparse::Error) -> Self {
        match error {
            httparse::Error::TooManyHeaders => Self::TooLarge,
            httparse::Error::Status => Self::Invalid("status"),
            httparse::Error::Version => Self::Invalid("version"),
            httparse::Error::HeaderName => Self::Invalid("header name"),
            httparse::Error::HeaderValue => Self::Invalid("header value"),
            httparse::Error::NewLine => Self::Invalid("line ending"),
            httparse::Error::Token => Self::Invalid("token"),
        }
    }
}

/// Reads the response head at the start of `buf`, removing it (and any
/// interim 1xx responses before it) from `buf`. `Ok(None)`: incomplete,
/// read more. `method` is the request's (a response to HEAD has no body).
/// A `101` is refused: upgrades go through hyper's client, not this one.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        // Uninitialised: a head has a handful of fields, not MAX_HEADERS.
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        );
        let len = match parsed? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
            httparse::Status::Partial => return Ok(None),
        };
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| HeadError::Invalid("status"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(HeadError::Invalid("101 to a request that asked no upgrade"));
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let (spans, count) = field_spans(buf, response.headers);
        let head = buf.split_to(len).freeze();
        return read_head(&head, &spans[..count], status, version, method).map(Some);
    }
}

/// Where a field's name and value are in a head: name start and end,
/// value start and end.
type Span = (u32, u32, u32, u32);

/// Where each of `fields` (parsed from `buf`) is in `buf`, so that the
/// values can share its bytes once the head is split off; and how many.
fn field_spans(buf: &[u8], fields: &[httparse::Header<'_>]) -> ([Span; MAX_HEADERS], usize) {
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    for (span, field) in spans.iter_mut().zip(fields) {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        *span = (
            name as u32,
            (name + field.name.len()) as u32,
            value as u32,
            (value + field.value.len()) as u32,
        );
    }
    (spans, fields.len().min(MAX_HEADERS))
}

/// The head's fields into a [`ResponseHead`].
fn read_head(
    head: &Bytes,
    spans: &[Span],
    status: StatusCode,
    version: Version,
    method: &Method,
) -> Result<ResponseHead, HeadError> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut keep_alive = version == Version::HTTP_11;
    // Headers `Connection` names: they describe the upstream's connection,
    // not the response (rare, so a Vec only when there are some).
    let mut named = Vec::new();
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for &(name_start, name_end, value_start, value_end) in spans {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
            .map_err(|_| HeadError::Invalid("header name"))?;
        let value = &head[value_start as usize..value_end as usize];
        if name == CONNECTION {
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = keep_alive || version == Version::HTTP_10;
                } else if let Ok(name) = HeaderName::from_bytes(option) {
                    named.push(name);
                }
            }
            continue;
        }
        if name == TRANSFER_ENCODING {
            // Only the last coding counts (RFC 9112 §6.3).
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            continue;
        }
        if is_hop_by_hop(&name) {
            continue;
        }
        if name == CONTENT_LENGTH {
            let n = parse_length(value).ok_or(HeadError::Invalid("Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(HeadError::Invalid("two different Content-Length values"));
            }
            if length.is_some() {
                continue;
            }
            length = Some(n);
        }
        let value =
            HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))
                .map_err(|_| HeadError::Invalid("header value"))?;
        headers.append(name, value);
    }
    for name in named {
        headers.remove(name);
    }
    let no_body = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        ResponseFraming::Empty
    } else if let Some(chunked) = chunked {
        // Transfer-Encoding wins over Content-Length, and such a message
        // is the last on its connection (RFC 9112 §6.3).
        if length.is_some() {
            headers.remove(CONTENT_LENGTH);
            keep_alive = false;
        }
        if chunked {
            ResponseFraming::Chunked
        } else {
            keep_alive = false;
            ResponseFraming::UntilClose
        }
    } else {
        match length {
            Some(0) => ResponseFraming::Empty,
            Some(n) => ResponseFraming::Length(n),
            None => {
                keep_alive = false;
                ResponseFraming::UntilClose
            }
        }
    };
    Ok(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    })
}

/// A `Content-Length` value: digits only (no sign, no spaces inside).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Reads a message body, whatever its framing, from the front of a
/// buffer as its bytes arrive (both sides: the app's request bodies and
/// the upstream's response bodies).
#[derive(Debug, PartialEq, Eq)]
pub enum BodyDecoder {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Everything until the connection closes (the caller sees the close).
    UntilClose,
    Done,
}

impl BodyDecoder {
    /// The decoder of a response body framed so.
    pub fn of(framing: ResponseFraming) -> Self {
        match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => Self::Done,
            ResponseFraming::Length(n) => Self::Length(n),
            ResponseFraming::Chunked => Self::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => Self::UntilClose,
        }
    }

    /// Takes what it can from the front of `buf`: body bytes, the
    /// trailers, the end, or [`Chunk::Incomplete`] (read more). After the
    /// last bytes, the trailers or the end, [`BodyDecoder::is_done`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, ChunkError> {
        match self {
            Self::Done => Ok(Chunk::End),
            Self::Length(_) | Self::UntilClose if buf.is_empty() => Ok(Chunk::Incomplete),
            Self::Length(left) => {
                let take = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                *left -= take as u64;
                if *left == 0 {
                    *self = Self::Done;
                }
                Ok(Chunk::Data(buf.split_to(take).freeze()))
            }
            Self::UntilClose => Ok(Chunk::Data(buf.split().freeze())),
            Self::Chunked(decoder) => {
                let chunk = decoder.decode(buf)?;
                if matches!(chunk, Chunk::Trailers(_) | Chunk::End) {
                    *self = Self::Done;
                }
                Ok(chunk)
            }
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }

    /// The number of bytes still to come, when known.
    pub fn exact(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Done => Some(0),
            Self::Chunked(_) | Self::UntilClose => None,
        }
    }
}

/// What [`ChunkedDecoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields (only when there are some), then [`Chunk::End`].
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// More bytes are needed.
    Incomplete,
}

/// A chunked body that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub struct ChunkError(&'static str);

/// Decodes a chunked body (RFC 9112 §7.1) as its bytes arrive. Chunk
/// extensions are ignored; trailer fields are passed on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Takes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, ChunkError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(ChunkError("chunk-size line too long"));
                        }
                        return Ok(Chunk::Incomplete);
                    };
                    let size = parse_chunk_size(&buf[..line])?;
                    buf.advance(line + 1);
                    self.state = match size {
                        0 => ChunkState::Trailers,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Chunk::Incomplete);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Chunk::Data(buf.split_to(take).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Chunk::Incomplete);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError("no CRLF after chunk data"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => return self.trailers(buf),
                ChunkState::Done => return Ok(Chunk::End),
            }
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Chunk, ChunkError> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = ChunkState::Done;
            return Ok(Chunk::End);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, fields) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(ChunkError("trailer section too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(Chunk::Incomplete),
            Err(_) => return Err(ChunkError("invalid trailer field")),
        };
        let mut trailers = HeaderMap::with_capacity(fields.len());
        for field in fields.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes());
            let value = HeaderValue::from_bytes(field.value);
            if let (Ok(name), Ok(value)) = (name, value) {
                if !is_hop_by_hop(&name) {
                    trailers.append(name, value);
                }
            }
        }
        buf.advance(len);
        self.state = ChunkState::Done;
        Ok(if trailers.is_empty() {
            Chunk::End
        } else {
            Chunk::Trailers(trailers)
        })
    }
}

/// The size on a chunk-size line (without its `\n`): hex digits, then
/// optional extensions after `;`, then `\r`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let line = line
        .strip_suffix(b"\r")
        .ok_or(ChunkError("chunk-size line without CR"))?;
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return Err(ChunkError("chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(ChunkError("chunk size"));
    }
    let size = line[..digits].iter().fold(0u64, |n, &d| {
        let digit = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n * 16 + u64::from(digit)
    });
    Ok(size)
}

#[cfg(test)]
mod tests;

//! HTTP/1.1 towards the app, without I/O: the request heads attache reads
//! itself, and the heads of the responses it writes back. The runtime
//! (`src/http/serve.rs`) owns the socket.
//!
//! Only plain requests are taken here: an HTTP/1.1 request in origin form
//! (`GET /path`), framed by one `Content-Length` or by `Transfer-Encoding:
//! chunked` alone, asking no upgrade and expecting no `100 Continue`.
//! Anything else is [`Parsed::Other`], and hyper's server, which knows
//! every corner of the protocol, takes the connection from that request on:
//! HTTP/1.0, HTTP/2 with prior knowledge, upgrades, `Expect`, other
//! target forms (which the gate then refuses), and every head that is
//! malformed, ambiguous (`Content-Length` with `Transfer-Encoding`, two
//! lengths) or too large. So the answers to broken or hostile input are
//! hyper's, as before; this path only makes the common case cheap.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TE, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{HeaderMap, Method, StatusCode, Uri};

use super::{field_spans, parse_length, Span, MAX_HEAD, MAX_HEADERS};

/// A plain request head, its body still to be read.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// In origin form (`/path?query`).
    pub uri: Uri,
    /// Every field as the app sent it (the gate and the header rules
    /// decide what goes on).
    pub headers: HeaderMap,
    pub body: BodyFraming,
    /// The app did not say `Connection: close`.
    pub keep_alive: bool,
    /// The app accepts trailers (`TE: trailers`).
    pub trailers: bool,
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
}

/// What [`parse_request_head`] found at the start of the buffer.
#[derive(Debug)]
// Returned and matched at once, never stored: boxing the head would cost
// an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A plain request, its head removed from the buffer.
    Head(RequestHead),
    /// Not a whole head yet: read more.
    Partial,
    /// Something this path does not take (see the module's doc); the
    /// buffer is untouched, for hyper to read from its start.
    Other,
}

/// Reads the request head at the start of `buf`.
pub fn parse_request_head(buf: &mut BytesMut) -> Parsed {
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut fields,
    ) {
        // The same limit whether the head came in one read or in pieces.
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        Ok(_) | Err(_) => return Parsed::Other,
    };
    if request.version != Some(1) {
        return Parsed::Other;
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Parsed::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if method == Method::CONNECT || !target.starts_with('/') {
        return Parsed::Other;
    }
    // Where the target and each field are in `buf`, so that they can share
    // its bytes once the head is split off.
    let target = (
        target.as_ptr() as usize - buf.as_ptr() as usize,
        target.len(),
    );
    let (spans, count) = field_spans(buf, request.headers);
    let head = buf.split_to(len).freeze();
    match read_head(method, &head, target, &spans[..count]) {
        Some(request) => Parsed::Head(request),
        None => {
            // Back in front of what follows, for hyper.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Other
        }
    }
}

/// The target and fields of a head into a [`RequestHead`], values sharing
/// `head`'s bytes; `None` when the request is not a plain one.
fn read_head(
    method: Method,
    head: &Bytes,
    target: (usize, usize),
    spans: &[Span],
) -> Option<RequestHead> {
    // The http crate refuses some targets httparse takes (longer than
    // 65,534 bytes): hyper answers those.
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1)).ok()?;
    // Room for what the header rules add (a token, forwarding headers):
    // a map that grows rehashes.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = true;
    let mut trailers = false;
    for &(name_start, name_end, value_start, value_end) in spans {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize]).ok()?;
        let value = &head[value_start as usize..value_end as usize];
        if name == CONTENT_LENGTH {
            let n = parse_length(value)?;
            if length.is_some_and(|m| m != n) {
                return None;
            }
            length = Some(n);
        } else if name == TRANSFER_ENCODING {
            // One field, exactly `chunked`: anything else is hyper's.
            if chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return None;
            }
            chunked = true;
        } else if name == CONNECTION {
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                    return None;
                }
            }
        } else if name == UPGRADE || name == EXPECT {
            return None;
        } else if name == TE {
            trailers |= value
                .split(|&b| b == b',')
                .any(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        let value =
            HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))
                .ok()?;
        headers.append(name, value);
    }
    let body = match (length, chunked) {
        (Some(_), true) => return None,
        (_, true) => BodyFraming::Chunked,
        (None | Some(0), false) => BodyFraming::Empty,
        (Some(n), false) => BodyFraming::Length(n),
    };
    Some(RequestHead {
        method,
        uri,
        headers,
        body,
        keep_alive,
        trailers,
    })
}

/// How a response body goes to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// Nothing is written: a response to HEAD, a 1xx, 204 or 304. Its
    /// `Content-Length`, if any, is kept (it describes the resource).
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
}

impl ResponseBody {
    /// The framing of a response with `headers` to a `method` request,
    /// its body's exact length being `exact` (`None`: unknown).
    pub fn of(
        method: &Method,
        status: StatusCode,
        headers: &HeaderMap,
        exact: Option<u64>,
    ) -> Self {
        if *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Self::None;
        }
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| parse_length(v.as_bytes()));
        match declared.or(exact) {
            Some(n) => Self::Length(n),
            None => Self::Chunked,
        }
    }
}

/// Appends a response head: the status line, the headers but the framing
/// ones, then `body`'s framing, `connection: close` if `close`, and
/// `date` when the response has none.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    body: ResponseBody,
    close: bool,
    date: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let keep_length = body == ResponseBody::None && status != StatusCode::NO_CONTENT;
    for (name, value) in headers {
        let framing = *name == TRANSFER_ENCODING
            || *name == CONNECTION
            || (*name == CONTENT_LENGTH && !keep_length);
        if !framing {
            super::encode_field(name, value, out);
        }
    }
    match body {
        ResponseBody::None => {}
        ResponseBody::Length(n) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        ResponseBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;

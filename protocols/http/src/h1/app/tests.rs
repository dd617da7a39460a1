use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, DATE, HOST};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;

fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let parsed = parse_request_head(&mut buf);
    (parsed, buf)
}

fn head(bytes: &[u8]) -> (RequestHead, BytesMut) {
    match parse(bytes) {
        (Parsed::Head(head), rest) => (head, rest),
        (other, _) => panic!("not a plain head: {other:?}"),
    }
}

fn is_other(bytes: &[u8]) -> bool {
    let (parsed, rest) = parse(bytes);
    // Left whole for hyper.
    matches!(parsed, Parsed::Other) && rest[..] == *bytes
}

#[test]
fn a_plain_get_is_read_and_what_follows_stays() {
    let (head, rest) =
        head(b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next");
    assert_eq!(head.method, Method::GET);
    assert_eq!(head.uri, "/a/b?c=d");
    assert_eq!(head.headers[HOST], "x");
    assert_eq!(head.headers.get_all("x-two").iter().count(), 2);
    assert_eq!(head.body, BodyFraming::Empty);
    assert!(head.keep_alive);
    assert!(!head.trailers);
    assert_eq!(&rest[..], b"GET /next");
}

#[test]
fn framing_and_connection_options_are_read() {
    let (post, rest) =
        head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello");
    assert_eq!(post.body, BodyFraming::Length(5));
    assert_eq!(&rest[..], b"hello");
    let (zero, _) = head(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(zero.body, BodyFraming::Empty);
    let (chunked, _) =
        head(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nConnection: foo, Close\r\nTE: trailers\r\n\r\n");
    assert_eq!(chunked.body, BodyFraming::Chunked);
    assert!(!chunked.keep_alive);
    assert!(chunked.trailers);
}

#[test]
fn a_head_in_pieces_is_partial_until_whole() {
    let whole = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for cut in 0..whole.len() {
        assert!(
            matches!(parse(&whole[..cut]).0, Parsed::Partial),
            "cut at {cut}"
        );
    }
    assert!(matches!(parse(whole).0, Parsed::Head(_)));
}

#[test]
fn everything_but_a_plain_request_is_left_to_hyper() {
    let others: &[&[u8]] = &[
        // HTTP/2 with prior knowledge, HTTP/1.0, garbage.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        // Other target forms and CONNECT.
        b"GET http://evil.example/ HTTP/1.1\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
        b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n",
        // Ambiguous or unusual framing.
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        // Upgrades and expectations.
        b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
        b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    ];
    for other in others {
        assert!(is_other(other), "{}", String::from_utf8_lossy(other));
    }
}

#[test]
fn a_head_too_large_or_with_too_many_fields_is_left_to_hyper() {
    let mut large = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
    large.resize(MAX_HEAD + 1, b'a');
    assert!(is_other(&large));
    // Whole in one read too: the limit does not depend on how it came.
    large.extend_from_slice(b"\r\n\r\n");
    assert!(is_other(&large));
    let mut at_limit = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
    at_limit.resize(MAX_HEAD - 4, b'a');
    at_limit.extend_from_slice(b"\r\n\r\n");
    assert!(matches!(parse(&at_limit).0, Parsed::Head(_)));
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(is_other(&many));
}

fn encoded(status: u16, headers: &HeaderMap, body: ResponseBody, close: bool) -> String {
    let mut out = Vec::new();
    let status = StatusCode::from_u16(status).unwrap();
    encode_response_head(
        status,
        headers,
        body,
        close,
        b"Tue, 24 Nov 2026 07:00:00 GMT",
        &mut out,
    );
    String::from_utf8(out).unwrap()
}

#[test]
fn response_heads_carry_their_framing_and_a_date() {
    let mut headers = HeaderMap::new();
    headers.insert("x-a", HeaderValue::from_static("1"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
    headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    assert_eq!(
        encoded(200, &headers, ResponseBody::Length(2), false),
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 2\r\ndate: Tue, 24 Nov 2026 07:00:00 GMT\r\n\r\n"
    );
    headers.remove(CONTENT_LENGTH);
    headers.insert(DATE, HeaderValue::from_static("upstream's"));
    assert_eq!(
        encoded(599, &headers, ResponseBody::Chunked, true),
        "HTTP/1.1 599 \r\nx-a: 1\r\ndate: upstream's\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
}

#[test]
fn bodiless_responses_keep_their_length_but_a_204() {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("10"));
    headers.insert(DATE, HeaderValue::from_static("d"));
    let get = Method::GET;
    let head = Method::HEAD;
    assert_eq!(
        ResponseBody::of(&head, StatusCode::OK, &headers, Some(0)),
        ResponseBody::None
    );
    assert_eq!(
        ResponseBody::of(&get, StatusCode::NOT_MODIFIED, &headers, None),
        ResponseBody::None
    );
    assert_eq!(
        ResponseBody::of(&get, StatusCode::NO_CONTENT, &headers, None),
        ResponseBody::None
    );
    assert_eq!(
        ResponseBody::of(&get, StatusCode::OK, &headers, Some(3)),
        ResponseBody::Length(10)
    );
    assert_eq!(
        ResponseBody::of(&get, StatusCode::OK, &HeaderMap::new(), Some(3)),
        ResponseBody::Length(3)
    );
    assert_eq!(
        ResponseBody::of(&get, StatusCode::OK, &HeaderMap::new(), None),
        ResponseBody::Chunked
    );
    assert_eq!(
        encoded(304, &headers, ResponseBody::None, false),
        "HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\ndate: d\r\n\r\n"
    );
    assert_eq!(
        encoded(204, &headers, ResponseBody::None, false),
        "HTTP/1.1 204 No Content\r\ndate: d\r\n\r\n"
    );
}

#[test]
fn a_target_the_http_crate_refuses_goes_back_whole() {
    let mut long = b"GET /".to_vec();
    long.resize(70_000, b'u');
    long.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\nnext");
    assert!(is_other(&long));
}

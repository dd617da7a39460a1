use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::*;

fn parse(text: &str, method: Method) -> Result<Option<ResponseHead>, HeadError> {
    let mut buf = BytesMut::from(text);
    parse_response_head(&mut buf, &method)
}

fn head(text: &str) -> ResponseHead {
    parse(text, Method::GET).unwrap().unwrap()
}

#[test]
fn request_head_has_attache_framing_not_the_apps() {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("api.example"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
    headers.insert("x-trace", HeaderValue::from_static("abc"));
    let mut out = Vec::new();
    encode_request_head(
        &Method::PUT,
        "/v1/items?x=1",
        &headers,
        RequestFraming::Length(3),
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "PUT /v1/items?x=1 HTTP/1.1\r\nhost: api.example\r\nx-trace: abc\r\n\
         content-length: 3\r\n\r\n"
    );
    let mut out = Vec::new();
    encode_request_head(
        &Method::POST,
        "/",
        &HeaderMap::new(),
        RequestFraming::Chunked,
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn empty_bodies_get_a_length_only_where_one_is_expected() {
    assert_eq!(
        RequestFraming::for_body(&Method::GET, Some(0), false),
        RequestFraming::None
    );
    assert_eq!(
        RequestFraming::for_body(&Method::GET, Some(0), true),
        RequestFraming::Length(0)
    );
    assert_eq!(
        RequestFraming::for_body(&Method::POST, Some(0), false),
        RequestFraming::Length(0)
    );
    assert_eq!(
        RequestFraming::for_body(&Method::GET, Some(5), false),
        RequestFraming::Length(5)
    );
    assert_eq!(
        RequestFraming::for_body(&Method::PUT, None, true),
        RequestFraming::Chunked
    );
}

#[test]
fn a_response_head_is_read_without_hop_by_hop_headers() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\
         Keep-Alive: timeout=5\r\nETag: \"x\"\r\n\r\nhello",
    );
    let head = parse_response_head(&mut buf, &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.framing, ResponseFraming::Length(5));
    assert!(head.keep_alive);
    assert_eq!(&buf[..], b"hello", "only the head is taken");
    let names: Vec<&str> = head.headers.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["server", "content-length", "etag"]);
}

#[test]
fn an_incomplete_head_asks_for_more() {
    assert!(parse("HTTP/1.1 200 OK\r\nServer: x\r\n", Method::GET)
        .unwrap()
        .is_none());
    assert!(parse("HTTP/1.1 2", Method::GET).unwrap().is_none());
}

#[test]
fn interim_responses_are_skipped() {
    let head = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.status, StatusCode::CREATED);
    assert!(head.headers.get("link").is_none());
    assert_eq!(head.framing, ResponseFraming::Empty);
}

#[test]
fn framing_follows_rfc_9112() {
    assert_eq!(
        head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing,
        ResponseFraming::Chunked
    );
    let both = head("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(both.framing, ResponseFraming::Chunked);
    assert!(both.headers.get(CONTENT_LENGTH).is_none());
    assert!(
        !both.keep_alive,
        "a message with both is the connection's last"
    );
    let until_close = head("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");
    assert_eq!(until_close.framing, ResponseFraming::UntilClose);
    assert!(!until_close.keep_alive);
    let not_chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
    assert_eq!(not_chunked.framing, ResponseFraming::UntilClose);
    for (text, method) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            Method::HEAD,
        ),
        ("HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            Method::GET,
        ),
    ] {
        let head = parse(text, method).unwrap().unwrap();
        assert_eq!(head.framing, ResponseFraming::Empty, "{text}");
        assert!(head.keep_alive, "{text}");
    }
}

#[test]
fn connection_options_decide_reuse_and_name_headers_to_drop() {
    assert!(!head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive);
    assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
    assert!(
        head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").keep_alive
    );
    let named = head("HTTP/1.1 200 OK\r\nX-Hop: 1\r\nX-Kept: 2\r\nConnection: x-hop, Close\r\nContent-Length: 0\r\n\r\n");
    assert!(named.headers.get("x-hop").is_none());
    assert!(named.headers.get("x-kept").is_some());
    assert!(!named.keep_alive);
}

#[test]
fn bad_heads_are_refused() {
    for text in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert!(
            matches!(parse(text, Method::GET), Err(HeadError::Invalid(_))),
            "{text}"
        );
    }
    let same_twice = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(same_twice.framing, ResponseFraming::Length(3));
    assert_eq!(same_twice.headers.get_all(CONTENT_LENGTH).iter().count(), 1);
    let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(parse(&huge, Method::GET).unwrap_err(), HeadError::TooLarge);
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
    let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert_eq!(parse(&many, Method::GET).unwrap_err(), HeadError::TooLarge);
}

/// Decodes `wire` fed `step` bytes at a time; the body and trailers.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut trailers = None;
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Chunk::Data(data) => body.extend_from_slice(&data),
            Chunk::Trailers(t) => trailers = Some(t),
            Chunk::End => return Ok((body, trailers)),
            Chunk::Incomplete => {
                assert!(fed < wire.len(), "wants more than the whole body");
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_however_they_arrive() {
    let wire = b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\n\r\n";
    for step in [1, 2, 3, 7, wire.len()] {
        let (body, trailers) = dechunk(wire, step).unwrap();
        assert_eq!(body, b"hello, world!!!", "step {step}");
        assert!(trailers.is_none());
    }
    let (body, trailers) = dechunk(b"3\r\nabc\r\n0\r\nX-Checksum: 9\r\n\r\n", 1).unwrap();
    assert_eq!(body, b"abc");
    assert_eq!(trailers.unwrap().get("x-checksum").unwrap(), "9");
}

#[test]
fn bad_chunked_bodies_are_refused() {
    for wire in [
        &b"g\r\n"[..],
        b"\r\n",
        b"5\nhello\r\n",
        b"3\r\nabcXY0\r\n\r\n",
        b"1234567890abcdef\r\n",
        b"3 x\r\n",
    ] {
        assert!(
            dechunk(wire, wire.len()).is_err(),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    let long = vec![b'1'; MAX_CHUNK_LINE + 1];
    assert!(ChunkedDecoder::default()
        .decode(&mut BytesMut::from(&long[..]))
        .is_err());
}

#[test]
fn a_chunked_body_ends_with_its_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("9"));
    trailers.insert("te", HeaderValue::from_static("trailers"));
    let mut out = Vec::new();
    encode_last_chunk(&trailers, &mut out);
    assert_eq!(out, b"0\r\nx-checksum: 9\r\n\r\n");
    let mut out = Vec::new();
    encode_last_chunk(&HeaderMap::new(), &mut out);
    assert_eq!(out, LAST_CHUNK);
}

#[test]
fn the_body_decoder_reads_each_framing_to_its_end() {
    // By length, across reads, leaving what follows.
    let mut decoder = BodyDecoder::Length(5);
    let mut buf = BytesMut::from(&b"hel"[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Chunk::Data(Bytes::from_static(b"hel")))
    );
    assert_eq!(decoder.exact(), Some(2));
    assert_eq!(decoder.decode(&mut buf), Ok(Chunk::Incomplete));
    buf.extend_from_slice(b"loNEXT");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Chunk::Data(Bytes::from_static(b"lo")))
    );
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(&mut buf), Ok(Chunk::End));
    assert_eq!(&buf[..], b"NEXT");
    // Chunked, with trailers: done after them.
    let mut decoder = BodyDecoder::of(ResponseFraming::Chunked);
    let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\nx-t: 1\r\n\r\n"[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Chunk::Data(Bytes::from_static(b"ok")))
    );
    assert!(matches!(decoder.decode(&mut buf), Ok(Chunk::Trailers(_))));
    assert!(decoder.is_done() && buf.is_empty());
    // Until the close: whatever arrives, never done by itself.
    let mut decoder = BodyDecoder::of(ResponseFraming::UntilClose);
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Chunk::Data(Bytes::from_static(b"abc")))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(Chunk::Incomplete));
    assert_eq!(decoder.exact(), None);
    assert!(BodyDecoder::of(ResponseFraming::Empty).is_done());
}

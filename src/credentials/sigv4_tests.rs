use super::*;

/// The example credentials AWS's documentation signs with.
fn aws_doc_credentials() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        session_token: None,
    }
}

/// Known answer: Amazon S3 API Reference, "Authenticating Requests: Using
/// Query Parameters (AWS Signature Version 4)", section "An example"
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>):
/// a presigned `GET /test.txt` of `examplebucket`, 2013-05-24, valid 86400 s.
/// The canonical request's hash and the signature are the ones printed there.
#[test]
fn presigned_url_matches_the_aws_documented_example() {
    let presigned = presign(
        &Presign {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            params: Vec::new(),
            region: "us-east-1",
            service: "s3",
            expires: Duration::from_secs(86400),
            payload_hash: "UNSIGNED-PAYLOAD",
        },
        &aws_doc_credentials(),
        "20130524T000000Z",
    );
    assert_eq!(
        presigned.canonical_request,
        "GET\n/test.txt\n\
         X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n\
         host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
    );
    assert_eq!(
        hex::encode(Sha256::digest(presigned.canonical_request.as_bytes())),
        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
    );
    assert!(
        presigned.query.ends_with(
            "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        ),
        "{}",
        presigned.query
    );
}

/// Known answer with the empty-payload hash ElastiCache signs: Amazon S3 API
/// Reference, "Signature Calculations for the Authorization Header:
/// Transferring Payload in a Single Chunk", example "GET Object"
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>).
/// The canonical request, the string to sign's hash and the signature are
/// the ones printed there.
#[test]
fn header_signed_get_matches_the_aws_documented_example() {
    let canonical = canonical_request(
        "GET",
        "/test.txt",
        "",
        &[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
        ],
        EMPTY_PAYLOAD_SHA256,
    );
    assert_eq!(
        canonical,
        "GET\n/test.txt\n\n\
         host:examplebucket.s3.amazonaws.com\n\
         range:bytes=0-9\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\n\
         host;range;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let to_sign = string_to_sign(
        "20130524T000000Z",
        "20130524/us-east-1/s3/aws4_request",
        &canonical,
    );
    assert_eq!(
        to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    );
    let key = signing_key(
        aws_doc_credentials().secret_access_key.expose(),
        "20130524",
        "us-east-1",
        "s3",
    );
    assert_eq!(
        hex::encode(hmac(&key, to_sign.as_bytes())),
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}

#[test]
fn elasticache_canonical_request_shape() {
    let creds = AwsCredentials {
        session_token: Some(Secret::new("FwoG/ZXIv+YXdz=")),
        ..aws_doc_credentials()
    };
    let at = parse_utc("2024-01-02T03:04:05Z").unwrap();
    let presigned = elasticache_presigned("my-cache", "app user", "us-east-1", true, &creds, at);
    let query = "Action=connect&ResourceType=ServerlessCache&User=app%20user\
         &X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240102%2Fus-east-1%2Felasticache%2Faws4_request\
         &X-Amz-Date=20240102T030405Z&X-Amz-Expires=900\
         &X-Amz-Security-Token=FwoG%2FZXIv%2BYXdz%3D&X-Amz-SignedHeaders=host";
    assert_eq!(
        presigned.canonical_request,
        format!("GET\n/\n{query}\nhost:my-cache\n\nhost\n{EMPTY_PAYLOAD_SHA256}")
    );
    let token = elasticache_token("my-cache", "app user", "us-east-1", true, &creds, at);
    let signature = token
        .expose()
        .strip_prefix(&format!("my-cache/?{query}&X-Amz-Signature="))
        .unwrap_or_else(|| panic!("{}", token.expose()));
    assert_eq!(signature.len(), 64);
    assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));

    let plain = elasticache_presigned(
        "my-cache",
        "app",
        "eu-west-1",
        false,
        &aws_doc_credentials(),
        at,
    );
    assert!(plain
        .query
        .starts_with("Action=connect&User=app&X-Amz-Algorithm="));
    assert!(!plain.query.contains("ResourceType") && !plain.query.contains("Security-Token"));
}

#[test]
fn dates() {
    let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
    assert_eq!(amz_date(at(1_369_353_600)), "20130524T000000Z");
    assert_eq!(amz_date(at(951_782_400 + 3661)), "20000229T010101Z");
    assert_eq!(parse_utc("2013-05-24T00:00:00Z"), Some(at(1_369_353_600)));
    assert_eq!(
        parse_utc("2000-02-29T01:01:01.123Z"),
        Some(at(951_782_400 + 3661))
    );
    assert_eq!(parse_utc("2000-02-29T01:01:01+01:00"), None);
    assert_eq!(parse_utc("yesterday"), None);
    for secs in [0, 86_399, 1_700_000_000, 4_102_444_800] {
        let text = amz_date(at(secs));
        let iso = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &text[0..4],
            &text[4..6],
            &text[6..8],
            &text[9..11],
            &text[11..13],
            &text[13..15]
        );
        assert_eq!(parse_utc(&iso), Some(at(secs)), "{iso}");
    }
}

#[test]
fn uri_encoding_keeps_only_unreserved() {
    assert_eq!(uri_encode("aZ09-._~ /+=é"), "aZ09-._~%20%2F%2B%3D%C3%A9");
}

//! AWS Signature Version 4, the parts ElastiCache IAM auth needs: query
//! string presigning (`X-Amz-*` parameters) with `host` as the one signed
//! header. Pure functions: the time and the credentials are arguments.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::Secret;

/// SHA-256 of the empty payload, hex.
pub(crate) const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// How long an ElastiCache IAM token is accepted (the service's maximum).
pub(crate) const ELASTICACHE_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Credentials to sign with. `Debug` redacts the secret parts.
#[derive(Debug, Clone)]
pub(crate) struct AwsCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: Secret,
    pub(crate) session_token: Option<Secret>,
}

/// A request to presign.
pub(crate) struct Presign<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    /// The request's own query parameters (not yet encoded).
    pub(crate) params: Vec<(&'a str, &'a str)>,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) expires: Duration,
    /// Hex SHA-256 of the payload, or `UNSIGNED-PAYLOAD`.
    pub(crate) payload_hash: &'a str,
}

/// A presigned request's canonical request (what was hashed) and its full
/// query string, `X-Amz-Signature` last.
pub(crate) struct Presigned {
    // Read by the known-answer tests only: never logged, as it holds the
    // session token.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) canonical_request: String,
    pub(crate) query: String,
}

/// Presigns `request` at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub(crate) fn presign(request: &Presign<'_>, creds: &AwsCredentials, amz_date: &str) -> Presigned {
    let scope = credential_scope(amz_date, request.region, request.service);
    let credential = format!("{}/{scope}", creds.access_key_id);
    let expires = request.expires.as_secs().to_string();
    let mut params = request.params.clone();
    params.extend([
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", expires.as_str()),
        ("X-Amz-SignedHeaders", "host"),
    ]);
    if let Some(token) = &creds.session_token {
        params.push(("X-Amz-Security-Token", token.expose()));
    }
    let query = canonical_query(&params);
    let canonical_request = canonical_request(
        request.method,
        request.path,
        &query,
        &[("host", request.host)],
        request.payload_hash,
    );
    let to_sign = string_to_sign(amz_date, &scope, &canonical_request);
    let key = signing_key(
        creds.secret_access_key.expose(),
        &amz_date[..8],
        request.region,
        request.service,
    );
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    Presigned {
        canonical_request,
        query: format!("{query}&X-Amz-Signature={signature}"),
    }
}

/// The ElastiCache IAM auth token: `GET https://{cache_name}/?Action=connect
/// &User={user_id}[&ResourceType=ServerlessCache]` presigned for 15
/// minutes, service `elasticache`, without its `https://`.
pub(crate) fn elasticache_token(
    cache_name: &str,
    user_id: &str,
    region: &str,
    serverless: bool,
    creds: &AwsCredentials,
    at: SystemTime,
) -> Secret {
    let presigned = elasticache_presigned(cache_name, user_id, region, serverless, creds, at);
    Secret::new(format!("{cache_name}/?{}", presigned.query))
}

fn elasticache_presigned(
    cache_name: &str,
    user_id: &str,
    region: &str,
    serverless: bool,
    creds: &AwsCredentials,
    at: SystemTime,
) -> Presigned {
    let mut params = vec![("Action", "connect"), ("User", user_id)];
    if serverless {
        params.push(("ResourceType", "ServerlessCache"));
    }
    presign(
        &Presign {
            method: "GET",
            host: cache_name,
            path: "/",
            params,
            region,
            service: "elasticache",
            expires: ELASTICACHE_TOKEN_LIFETIME,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        },
        creds,
        &amz_date(at),
    )
}

fn credential_scope(amz_date: &str, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", &amz_date[..8])
}

/// Every parameter URI-encoded, sorted by name then value, `&`-joined.
pub(crate) fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    encoded.sort();
    let pairs: Vec<String> = encoded
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.join("&")
}

/// Method, path, query, `name:value` headers (lowercase, sorted), the
/// signed header names, and the payload hash, newline-separated.
pub(crate) fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> String {
    let mut headers: Vec<(String, &str)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .collect();
    headers.sort();
    let mut canonical = format!("{method}\n{path}\n{query}\n");
    for (name, value) in &headers {
        let _ = writeln!(canonical, "{name}:{value}");
    }
    let signed: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let _ = write!(canonical, "\n{}\n{payload_hash}", signed.join(";"));
    canonical
}

pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hash}")
}

pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let key = hmac(&key, region.as_bytes());
    let key = hmac(&key, service.as_bytes());
    hmac(&key, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` (UTC).
pub(crate) fn amz_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `2024-01-02T03:04:05Z` (fractional seconds ignored) as a time, for STS
/// `Expiration`.
pub(crate) fn parse_utc(text: &str) -> Option<SystemTime> {
    let t = text.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(t.get(range)?).ok()?.parse().ok()
    };
    if t.len() < 20 || t[4] != b'-' || t[7] != b'-' || t[10] != b'T' || t[13] != b':' {
        return None;
    }
    if !t.ends_with(b"Z") {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

// Howard Hinnant's days <-> civil date algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;

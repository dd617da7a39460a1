//! Reading a claim from a JWT's payload. attache does not verify the
//! signature: the token came straight from the issuer over TLS, and the
//! upstream that accepts it does verify. A claim only tells attache which
//! username to present (`oid`) or when the token expires (`exp`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

/// Claim `name` of the JWT `token`, if it is one and has it.
pub(crate) fn claim(token: &str, name: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(mut claims) => claims.remove(name),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An unsigned JWT with `claims`.
    pub(crate) fn mint(claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.")
    }

    #[test]
    fn reads_claims() {
        let token = mint(&serde_json::json!({ "oid": "1234-abcd", "exp": 1700000000 }));
        assert_eq!(claim(&token, "oid"), Some(Value::from("1234-abcd")));
        assert_eq!(claim(&token, "exp"), Some(Value::from(1700000000)));
        assert_eq!(claim(&token, "tid"), None);
        assert_eq!(claim("opaque-token", "oid"), None);
        assert_eq!(claim("a.!!!.c", "oid"), None);
    }
}

//! Registration tokens (Part 5 of the relay's PROTOCOL.md): an HS256 JWT whose `sub` is
//! the key and whose `exp` says until when it may be used. A web app mints one per page
//! with the relay's `--auth-secret`; this is the same thing for Rust programs and the CLI.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The JOSE header every token carries.
const HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// A token for `key`, signed with `secret`, valid for `ttl` from now.
pub fn registration_token(secret: &[u8], key: &str, ttl: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    sign(secret, key, (now + ttl).as_secs())
}

/// A token for `key`, signed with `secret`, valid until `exp` (seconds since the epoch).
pub fn sign(secret: &[u8], key: &str, exp: u64) -> String {
    let claims = serde_json::json!({ "sub": key, "exp": exp });
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(HEADER),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        unreachable!("HMAC-SHA256 accepts keys of any length")
    };
    mac.update(signed.as_bytes());
    let signature = mac.finalize().into_bytes();
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

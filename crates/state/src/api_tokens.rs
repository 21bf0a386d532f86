//! API tokens: how they are made, and the only form of them the store keeps (their SHA-256).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::Digest as _;

/// Every token starts with this, so a leaked one is recognisable (and secret scanners can
/// match it); a presented token without it is rejected without a query.
pub(crate) const TOKEN_PREFIX: &str = "ferry_";

/// How many characters of a token listings show: `ferry_` and 6 random characters.
pub(crate) const LISTED_PREFIX_LENGTH: usize = 12;

/// A token's `last_used_at` is refreshed at most this often, so a busy server does not write
/// to the store on every request.
pub(crate) const LAST_USED_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// A new token: `ferry_` + the unpadded base64url of 32 random bytes (43 characters).
pub(crate) fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("{TOKEN_PREFIX}{encoded}")
}

/// What the store keeps of a token: the lowercase hex of its SHA-256. A token holds 256 random
/// bits, so an unsalted fast hash is enough: there is nothing to guess.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// The part of a token listings show.
pub(crate) fn listed_prefix(token: &str) -> String {
    token.chars().take(LISTED_PREFIX_LENGTH).collect()
}

/// Whether a token last used at `last_used_at` should have it set to `now`.
pub(crate) fn last_used_is_stale(last_used_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_used_at.is_none_or(|last| now - last >= LAST_USED_RESOLUTION || last > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_ferry_and_43_base64url_characters() {
        let token = new_token();
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 43);
        assert!(token.starts_with(TOKEN_PREFIX));
        assert!(token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(token, new_token());
        assert_eq!(listed_prefix(&token), token[..12]);
    }

    #[test]
    fn the_hash_is_lowercase_hex_sha256() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn last_used_is_refreshed_at_most_once_a_minute() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert!(last_used_is_stale(None, now));
        assert!(!last_used_is_stale(Some(now), now));
        assert!(!last_used_is_stale(
            Some(now - chrono::TimeDelta::seconds(59)),
            now
        ));
        assert!(last_used_is_stale(
            Some(now - chrono::TimeDelta::seconds(60)),
            now
        ));
        // A clock that stepped back does not freeze the reading.
        assert!(last_used_is_stale(
            Some(now + chrono::TimeDelta::seconds(5)),
            now
        ));
    }
}

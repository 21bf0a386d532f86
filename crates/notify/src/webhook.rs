//! A webhook: each event is POSTed as JSON, signed so the receiver can tell it came from ferry
//! and was not replayed. The signature is Stripe's scheme, which receivers already know how to
//! check: `Ferry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed with
//! the channel's signing secret. `Ferry-Event` names the event and `Ferry-Delivery` the
//! delivery (the same on every attempt, so a receiver can drop a repeat).

use crate::{http_answer, ChannelAnswer, ChannelError};
use ferry_core::Secret;
use ferry_http::{HttpClient, OutboundRequest};
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderName, HeaderValue};

pub const SIGNATURE_HEADER: &str = "ferry-signature";
pub const EVENT_HEADER: &str = "ferry-event";
pub const DELIVERY_HEADER: &str = "ferry-delivery";

/// The `Ferry-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &Secret, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Checks a webhook's URL: http or https, with a host. Plain http is allowed (a receiver on
/// the same machine or network); the body is signed either way.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|problem| {
        format!("`{url}` is not a URL ({problem}); write it as https://host/path")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "`{url}` is not an http(s) URL; write it as https://host/path"
        ));
    }
    Ok(parsed)
}

/// One delivery of one event.
pub struct WebhookDelivery<'a> {
    pub url: &'a str,
    pub signing_secret: &'a Secret,
    pub event_type: &'a str,
    pub delivery_id: &'a str,
    pub body: &'a str,
}

/// POSTs the event. The signature's time is now, so a retry a day later is signed afresh
/// and a receiver may refuse old signatures.
pub async fn send_webhook(
    client: &HttpClient,
    delivery: &WebhookDelivery<'_>,
) -> Result<ChannelAnswer, ChannelError> {
    let url = check_url(delivery.url).map_err(ChannelError::permanent)?;
    let header = |name: &'static str, value: &str| {
        HeaderValue::from_str(value)
            .map(|value| (HeaderName::from_static(name), value))
            .map_err(|_| ChannelError::permanent(format!("`{value}` cannot be sent in {name}")))
    };
    let timestamp = chrono::Utc::now().timestamp();
    let request = OutboundRequest {
        method: reqwest::Method::POST,
        url,
        endpoint: "POST webhook".to_string(),
        headers: vec![
            header(
                SIGNATURE_HEADER,
                &signature(delivery.signing_secret, timestamp, delivery.body),
            )?,
            header(EVENT_HEADER, delivery.event_type)?,
            header(DELIVERY_HEADER, delivery.delivery_id)?,
        ],
        body: Some((delivery.body.to_string(), "application/json")),
    };
    http_answer(
        &format!("the webhook {}", delivery.url),
        client.send(&request).await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripes_scheme() {
        // Checked against Python: hmac.new(b"whsec_test", b"1733212800.{\"a\":1}", sha256).hexdigest()
        let signed = signature(&Secret::new("whsec_test"), 1_733_212_800, r#"{"a":1}"#);
        assert_eq!(
            signed,
            "t=1733212800,v1=841d3508de7e3836407f93ada3011a47a5438626884f1c98929b52140958f8c4"
        );
        let other = signature(&Secret::new("whsec_other"), 1_733_212_800, r#"{"a":1}"#);
        assert_ne!(signed, other);
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://hooks.example.com/ferry").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(check_url("ftp://example.com")
            .unwrap_err()
            .contains("http(s)"));
        assert!(check_url("example.com/hook").is_err());
    }
}

//! Slack, through an incoming webhook: one message per notice, its first line in bold, then
//! its details, then a link to the run when ferry knows its own address. The webhook's URL is
//! the secret (whoever has it can post to the channel): it never appears in an error.

use crate::{http_answer, ChannelAnswer, ChannelError};
use ferry_core::Secret;
use ferry_http::{HttpClient, OutboundRequest};

/// A notice as Slack shows it.
pub struct SlackMessage<'a> {
    /// The notice in one line: `Sync customers failed`.
    pub title: &'a str,
    /// What a person needs to know next, a line each.
    pub details: &'a [String],
    /// Where to look: the run's page in ferry's web UI.
    pub link: Option<&'a str>,
}

/// The JSON Slack takes: `text` for notifications and clients without blocks, and the same in
/// blocks. Slack's markup characters in names and messages are escaped.
pub fn slack_body(message: &SlackMessage<'_>) -> String {
    let mut text = format!("*{}*", escape(message.title));
    for line in message.details {
        text.push('\n');
        text.push_str(&escape(line));
    }
    if let Some(link) = message.link {
        text.push_str(&format!("\n<{link}|Open in ferry>"));
    }
    serde_json::json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
    .to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Posts `body` (from [`slack_body`]) to the incoming webhook.
pub async fn send_slack(
    client: &HttpClient,
    webhook_url: &Secret,
    body: &str,
) -> Result<ChannelAnswer, ChannelError> {
    let url = crate::webhook::check_url(webhook_url.expose()).map_err(|_| {
        ChannelError::permanent(
            "the Slack webhook URL is not an http(s) URL; copy it again from Slack's \
             Incoming Webhooks page (https://hooks.slack.com/services/…)",
        )
    })?;
    let request = OutboundRequest {
        method: reqwest::Method::POST,
        url,
        endpoint: "POST slack".to_string(),
        headers: Vec::new(),
        body: Some((body.to_string(), "application/json")),
    };
    http_answer("Slack", client.send(&request).await).map_err(|error| ChannelError {
        message: hide(&error.message, webhook_url),
        ..error
    })
}

/// The message with the webhook's URL (which an HTTP library's error may quote) taken out.
fn hide(message: &str, webhook_url: &Secret) -> String {
    let url = webhook_url.expose();
    let mut hidden = message.replace(url, "the Slack webhook");
    if let Ok(parsed) = reqwest::Url::parse(url) {
        if parsed.path().len() > 1 {
            hidden = hidden.replace(parsed.path(), "/…");
        }
    }
    hidden
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_escapes_slack_markup_and_links_the_run() {
        let body = slack_body(&SlackMessage {
            title: "Sync <customers> failed",
            details: &["the run failed: a & b".to_string()],
            link: Some("http://127.0.0.1:8080/runs/run_1"),
        });
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["text"],
            "*Sync &lt;customers&gt; failed*\nthe run failed: a &amp; b\n<http://127.0.0.1:8080/runs/run_1|Open in ferry>"
        );
        assert_eq!(json["blocks"][0]["text"]["text"], json["text"]);
    }

    #[test]
    fn the_url_never_shows_in_an_error() {
        let secret = Secret::new("https://hooks.slack.com/services/T000/B000/XXXXsecret");
        let message =
            "error sending request for url (https://hooks.slack.com/services/T000/B000/XXXXsecret)";
        let hidden = hide(message, &secret);
        assert!(!hidden.contains("XXXXsecret"), "{hidden}");
    }
}

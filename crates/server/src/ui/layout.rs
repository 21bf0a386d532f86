//! The page shell and the small pieces every page uses.

use crate::auth::{Caller, CSRF_FIELD};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

/// Which section of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Home,
    Syncs,
    Sequences,
    Models,
    Sources,
    Destinations,
    Runs,
    Alerts,
}

pub fn shell(caller: &Caller, section: Section, title: &str, body: Markup) -> Markup {
    let nav = [
        (Section::Syncs, "/syncs", "Syncs"),
        (Section::Sequences, "/sequences", "Sequences"),
        (Section::Models, "/models", "Models"),
        (Section::Sources, "/sources", "Sources"),
        (Section::Destinations, "/destinations", "Destinations"),
        (Section::Runs, "/runs", "Run history"),
        (Section::Alerts, "/alerts", "Alerts"),
    ];
    let csrf_header = serde_json::json!({ "X-CSRF-Token": caller.csrf }).to_string();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, true))
            body hx-headers=(csrf_header) {
                header.topbar {
                    a.brand href="/" { span.logo { "f" } "ferry" }
                    nav {
                        @for (item, href, label) in nav {
                            a href=(href) class=[(item == section).then_some("active")] { (label) }
                        }
                    }
                    form.signout method="post" action="/logout" {
                        span.who title="The API token this session signed in with" { (caller.token_name) }
                        (csrf_field(caller))
                        button.link type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The `<head>` of every page: the stylesheet, and htmx where the page uses it.
pub fn head(title: &str, with_htmx: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · ferry" }
            link rel="stylesheet" href="/assets/style.css";
            @if with_htmx {
                // Swap error answers too (htmx 2 drops 4xx/5xx by default), so a refused form
                // or a failed check shows its message instead of doing nothing.
                meta name="htmx-config" content=r#"{"responseHandling":[{"code":"204","swap":false},{"code":"...","swap":true}]}"#;
                script src="/assets/htmx.min.js" defer {}
            }
        }
    }
}

/// `ferry_state::NAME_PATTERN` for an `<input pattern>`, which is anchored already and is
/// compiled in the `v` mode of regular expressions, where a literal `-` in a class is escaped.
pub const NAME_INPUT_PATTERN: &str = r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}";

/// What the browser says when a name does not fit the pattern.
pub const NAME_INPUT_TITLE: &str = "1 to 64 letters, digits, '_' and '-', not starting with '-'";

pub fn csrf_field(caller: &Caller) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(caller.csrf); }
}

pub fn page_header(title: &str, subtitle: Option<&str>, actions: Markup) -> Markup {
    html! {
        div.page-header {
            div {
                h1 { (title) }
                @if let Some(subtitle) = subtitle { p.subtitle { (subtitle) } }
            }
            div.actions { (actions) }
        }
    }
}

pub fn error_box(message: &str) -> Markup {
    html! { div.alert.error role="alert" { strong { "Problem: " } span.message { (message) } } }
}

pub fn empty_state(title: &str, text: &str, action_href: &str, action_label: &str) -> Markup {
    html! {
        div.empty {
            h2 { (title) }
            p { (text) }
            a.button.primary href=(action_href) { (action_label) }
        }
    }
}

pub fn status_badge(status: &str) -> Markup {
    html! { span class={"badge " (status)} { (status.replace('_', " ")) } }
}

/// The first-steps checklist shown until the workspace has a sync.
pub fn home(
    caller: &Caller,
    has_destination: bool,
    has_source: bool,
    has_model: bool,
    has_sync: bool,
) -> Markup {
    let steps = [
        (
            has_destination,
            "Connect Stripe",
            "Add your Stripe account with an API key; ferry tests it by reading your balance.",
            "/destinations/new",
        ),
        (
            has_source,
            "Connect a warehouse",
            "A DuckDB file or a PostgreSQL database that holds your customer data.",
            "/sources/new",
        ),
        (
            has_model,
            "Write a model",
            "A SQL query that selects the rows to sync: customers, products…",
            "/models/new",
        ),
        (
            has_sync,
            "Create a sync",
            "Pick the model, the mapping key and the fields to send to Stripe.",
            "/syncs/new",
        ),
    ];
    let next = steps.iter().position(|(done, ..)| !done);
    shell(
        caller,
        Section::Home,
        "Get started",
        html! {
            (page_header("Get started", Some("Four steps from your warehouse to Stripe."), html! {}))
            ol.steps {
                @for (i, (done, title, text, href)) in steps.iter().enumerate() {
                    li.done[*done].next[Some(i) == next] {
                        div.step-title { (title) @if *done { span.check { " ✓" } } }
                        p { (text) }
                        @if Some(i) == next { a.button.primary href=(href) { (title) } }
                    }
                }
            }
        },
    )
}

/// A handler's failure, rendered as a page (or as a fragment for htmx requests).
pub struct Page {
    status: StatusCode,
    message: String,
}

impl Page {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Page {
        Page {
            status,
            message: message.into(),
        }
    }
    /// A request no handler can make sense of (a form that is not UTF-8, …).
    pub fn bad_request(message: impl Into<String>) -> Page {
        Page::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Page {
        Page {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    pub fn from_state(error: ferry_state::StateError) -> Page {
        crate::ApiError::from(error).into()
    }
}

impl From<crate::ApiError> for Page {
    fn from(error: crate::ApiError) -> Page {
        Page {
            status: error.status,
            message: error.message,
        }
    }
}

impl From<ferry_engine::EngineError> for Page {
    fn from(error: ferry_engine::EngineError) -> Page {
        crate::ApiError::from(error).into()
    }
}

impl From<ferry_state::StateError> for Page {
    fn from(error: ferry_state::StateError) -> Page {
        Page::from_state(error)
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                (head("Problem", false))
                body {
                    main {
                        (error_box(&self.message))
                        p { a href="/" { "Back to ferry" } }
                    }
                }
            }
        };
        (self.status, body).into_response()
    }
}

/// Text a person reads in a table cell, cut to `max` characters.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

pub fn time(at: chrono::DateTime<chrono::Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_name_input_pattern_is_the_stores_rule() {
        let anchored = format!("^{}$", super::NAME_INPUT_PATTERN.replace(r"\-", "-"));
        assert_eq!(anchored, ferry_state::NAME_PATTERN);
    }
}

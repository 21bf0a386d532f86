//! What every answer goes through before and after its route: the `Host` check that defeats DNS
//! rebinding, and the security headers.
//!
//! **DNS rebinding**: a web page on `evil.example` can make its own name resolve to 127.0.0.1
//! and then read ferry's pages from the victim's browser as same-origin requests, with
//! `Host: evil.example`. So the server answers only to the names it is known by: the loopback
//! names and addresses, the address it is bound to, and the names given with
//! `ferry serve --public-host NAME`. A `Host` that is an IP address cannot be rebound (the
//! browser connects to that very address), so when the server listens on every address
//! (`0.0.0.0`, `::`) any IP literal is accepted; names still have to be listed.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// The host names and addresses a request may name in its `Host` header.
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    /// Lower case, without a port or a trailing dot.
    names: Vec<String>,
    /// The address the server is bound to; an unspecified one (`0.0.0.0`, `::`) admits every
    /// IP literal.
    bind: IpAddr,
}

impl AllowedHosts {
    /// Loopback names and addresses, `bind`, and `public_hosts` (host names or IP addresses,
    /// with or without a port). Refuses a public host that is not a plain host name.
    pub fn new(bind: IpAddr, public_hosts: &[String]) -> Result<AllowedHosts, String> {
        let mut names = vec!["localhost".to_string()];
        for given in public_hosts {
            let host = host_part(given.trim())
                .filter(|host| is_host_name(host) || host.parse::<IpAddr>().is_ok())
                .ok_or_else(|| {
                    format!(
                        "--public-host {given:?} is not a host name: give the name alone, as \
                         browsers put it in the address bar (for example ferry.example.com), \
                         without a scheme or a path"
                    )
                })?;
            names.push(host);
        }
        Ok(AllowedHosts { names, bind })
    }

    /// Only loopback: what a server bound to 127.0.0.1 with no public host answers to.
    pub fn loopback() -> AllowedHosts {
        AllowedHosts {
            names: vec!["localhost".to_string()],
            bind: IpAddr::from([127, 0, 0, 1]),
        }
    }

    /// Whether a request whose `Host` header is `host` (a name or an address, maybe with a
    /// port) is for this server.
    pub fn allows(&self, host: &str) -> bool {
        let Some(host) = host_part(host) else {
            return false;
        };
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => {
                let ip = canonical(ip);
                ip.is_loopback()
                    || self.bind.is_unspecified()
                    || ip == canonical(self.bind)
                    || self
                        .names
                        .iter()
                        .any(|name| name.parse::<IpAddr>().is_ok_and(|n| canonical(n) == ip))
            }
            Err(_) => self.names.contains(&host),
        }
    }

    /// For the refusal: what the server answers to.
    fn described(&self) -> String {
        let mut known = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "[::1]".to_string(),
        ];
        if self.bind.is_unspecified() {
            known.push("any IP address of this machine".to_string());
        } else if !self.bind.is_loopback() {
            known.push(match self.bind {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            });
        }
        known.extend(self.names.iter().skip(1).cloned());
        known.join(", ")
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `Name:8080` → `name`; `[::1]:8080` → `[::1]`; `name.` → `name`. `None` when empty or when
/// what follows the last `:` of a non-bracketed host is not a port.
fn host_part(host: &str) -> Option<String> {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        if !(rest.is_empty() || is_port(rest.strip_prefix(':')?)) {
            return None;
        }
        &host[..=end]
    } else {
        match host.split_once(':') {
            // A bare IPv6 address (not valid in Host, but clear enough).
            Some(_) if host.matches(':').count() > 1 => host,
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => host,
        }
    };
    let name = without_port.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// A DNS name: labels of letters, digits and `-` (and `_`, which some internal names use).
fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Refuses a request whose `Host` is not one this server answers to (421 Misdirected
/// Request), before anything else looks at it. A request without `Host` (HTTP/1.0 tools) is not
/// from a browser, so it cannot be a rebinding attack and passes.
pub async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let hosts: Vec<&HeaderValue> = request.headers().get_all(header::HOST).iter().collect();
    let presented = match (request.uri().authority(), hosts.as_slice()) {
        (Some(authority), _) => Some(authority.as_str().to_string()),
        (None, []) => None,
        (None, [one]) => Some(
            one.to_str()
                .map(str::to_string)
                .unwrap_or_else(|_| String::from_utf8_lossy(one.as_bytes()).into_owned()),
        ),
        (None, _) => {
            return refusal(
                &request,
                StatusCode::BAD_REQUEST,
                "bad_host",
                "this request has several Host headers; send one".to_string(),
            )
        }
    };
    let allowed = state.allowed_hosts();
    match presented {
        Some(host) if !allowed.allows(&host) => {
            let shown: String = host.chars().take(100).collect();
            let message = format!(
                "this ferry server does not answer to the host name {shown:?} (a protection \
                 against DNS rebinding); it answers to {}. If people reach it under that name \
                 (a DNS name, or a proxy that passes the Host header on), start it with \
                 `ferry serve --public-host {}`",
                allowed.described(),
                host_part(&host).unwrap_or_else(|| "NAME".to_string()),
            );
            tracing::debug!(host = %shown, "Refused a request for another host name.");
            refusal(
                &request,
                StatusCode::MISDIRECTED_REQUEST,
                "unknown_host",
                message,
            )
        }
        _ => next.run(request).await,
    }
}

/// The API answers in its JSON error shape; everything else in plain text a person can read.
fn refusal(request: &Request, status: StatusCode, code: &'static str, message: String) -> Response {
    if request.uri().path().starts_with("/api/") {
        ApiError::new(status, code, message).into_response()
    } else {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response()
    }
}

/// What every page allows a browser to do with it: not be framed (clickjacking), not be
/// sniffed as another type, not leak its URL to other sites, not be kept in a cache (pages show
/// workspace data, and a shared machine's cache outlives the session). Static assets keep
/// their own `Cache-Control`.
const PAGE_CSP: &str =
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action 'self'";
/// JSON and CSV load nothing and are never framed.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Adds the security headers to every answer, and a `WWW-Authenticate` challenge to a 401 that
/// has none.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        if api { API_CSP } else { PAGE_CSP },
    );
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    if response.status() == StatusCode::UNAUTHORIZED {
        set(
            response.headers_mut(),
            header::WWW_AUTHENTICATE,
            BEARER_CHALLENGE,
        );
    }
    response
}

/// Sets a header the route did not set itself.
fn set(headers: &mut axum::http::HeaderMap, name: header::HeaderName, value: &'static str) {
    headers
        .entry(name)
        .or_insert(HeaderValue::from_static(value));
}

/// The challenge of a 401 (RFC 6750): the API takes a Bearer token.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"ferry\"";
/// The challenge when the token presented is not valid.
pub const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"ferry\", error=\"invalid_token\"";

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(bind: &str, public: &[&str]) -> AllowedHosts {
        let public: Vec<String> = public.iter().map(|s| s.to_string()).collect();
        AllowedHosts::new(bind.parse().unwrap(), &public).unwrap()
    }

    #[test]
    fn loopback_names_and_addresses_are_always_allowed() {
        let local = hosts("127.0.0.1", &[]);
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.0.0.2:1",
            "[::1]:8080",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(local.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.5",
            "",
            "localhost:http",
            "[::1]x",
        ] {
            assert!(!local.allows(host), "{host}");
        }
    }

    #[test]
    fn the_bind_address_and_public_names_are_allowed() {
        let lan = hosts("192.168.1.10", &["ferry.example.com", "Ops.Internal:443"]);
        assert!(lan.allows("192.168.1.10:8080"));
        assert!(!lan.allows("192.168.1.11:8080"));
        assert!(lan.allows("ferry.example.com"));
        assert!(lan.allows("FERRY.example.com:8443"));
        assert!(lan.allows("ops.internal"));
        assert!(!lan.allows("example.com"));
        // Listening everywhere: any address literal names this machine; names must be listed.
        let everywhere = hosts("0.0.0.0", &[]);
        assert!(everywhere.allows("10.1.2.3:8080"));
        assert!(everywhere.allows("[fe80::1]:8080"));
        assert!(!everywhere.allows("myhost"));
    }

    #[test]
    fn a_public_host_must_be_a_host_name() {
        for bad in [
            "https://ferry.example.com",
            "ferry.example.com/path",
            "",
            "a b",
        ] {
            let error =
                AllowedHosts::new(IpAddr::from([0, 0, 0, 0]), &[bad.to_string()]).unwrap_err();
            assert!(error.contains("is not a host name"), "{bad}: {error}");
        }
    }
}

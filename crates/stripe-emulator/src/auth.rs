//! API-key authentication and permissions, as Stripe does them: Bearer or Basic, secret keys with
//! every permission, restricted keys with the permissions they were configured with.

use axum::http::{header, HeaderMap};
use base64::Engine;

use ferry_stripe_wire::StripeError;

use crate::config::{Access, RestrictedKey};

/// The account id the emulator pretends to be, used in permission messages.
pub(crate) const ACCOUNT_ID: &str = "acct_1FerryEmulator0";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub key: String,
    pub livemode: bool,
    pub customers: Access,
    pub products: Access,
    pub prices: Access,
    pub subscriptions: Access,
    /// Invoices and invoice items.
    pub invoices: Access,
    pub balance: Access,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    CustomersRead,
    CustomersWrite,
    ProductsRead,
    ProductsWrite,
    PricesRead,
    PricesWrite,
    SubscriptionsRead,
    SubscriptionsWrite,
    /// Invoices and invoice items.
    InvoicesRead,
    InvoicesWrite,
    BalanceRead,
    /// `GET /v1/account`: secret keys only (restricted keys are configured without it).
    AccountRead,
}

/// Reads the key from `Authorization` and checks it is one the emulator accepts. The error is the
/// 401 body.
pub(crate) fn authenticate(
    headers: &HeaderMap,
    accepted_keys: &[String],
    restricted_keys: &[RestrictedKey],
) -> Result<Caller, StripeError> {
    let Some(key) = key_from_headers(headers) else {
        return Err(StripeError::invalid_request(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
        ));
    };
    if key.starts_with("rk_") {
        if let Some(restricted) = restricted_keys.iter().find(|known| known.key == key) {
            return Ok(Caller {
                livemode: key.starts_with("rk_live_"),
                customers: restricted.customers,
                products: restricted.products,
                prices: restricted.prices,
                subscriptions: restricted.subscriptions,
                invoices: restricted.invoices,
                balance: restricted.balance,
                key,
            });
        }
    } else if is_accepted_secret_key(&key, accepted_keys) {
        return Ok(Caller {
            livemode: key.starts_with("sk_live_"),
            customers: Access::Write,
            products: Access::Write,
            prices: Access::Write,
            subscriptions: Access::Write,
            invoices: Access::Write,
            balance: Access::Read,
            key,
        });
    }
    Err(StripeError::invalid_request(format!(
        "Invalid API Key provided: {}",
        redact_key(&key)
    )))
}

/// Checks a permission; the error is the 403 body.
pub(crate) fn authorize(caller: &Caller, needed: Permission) -> Result<(), StripeError> {
    let (granted, required, slug) = match needed {
        Permission::CustomersRead => (caller.customers, Access::Read, "rak_customer_read"),
        Permission::CustomersWrite => (caller.customers, Access::Write, "rak_customer_write"),
        Permission::ProductsRead => (caller.products, Access::Read, "rak_product_read"),
        Permission::ProductsWrite => (caller.products, Access::Write, "rak_product_write"),
        Permission::PricesRead => (caller.prices, Access::Read, "rak_price_read"),
        Permission::PricesWrite => (caller.prices, Access::Write, "rak_price_write"),
        Permission::SubscriptionsRead => {
            (caller.subscriptions, Access::Read, "rak_subscription_read")
        }
        Permission::SubscriptionsWrite => (
            caller.subscriptions,
            Access::Write,
            "rak_subscription_write",
        ),
        Permission::InvoicesRead => (caller.invoices, Access::Read, "rak_invoice_read"),
        Permission::InvoicesWrite => (caller.invoices, Access::Write, "rak_invoice_write"),
        Permission::BalanceRead => (caller.balance, Access::Read, "rak_balance_read"),
        Permission::AccountRead => {
            let granted = if caller.key.starts_with("rk_") {
                Access::None
            } else {
                Access::Read
            };
            (granted, Access::Read, "rak_account_read")
        }
    };
    if granted >= required {
        return Ok(());
    }
    Err(StripeError::invalid_request(format!(
        "The provided key '{}' does not have the required permissions for this endpoint on account '{ACCOUNT_ID}'. Having the '{slug}' permission would allow this request to continue.",
        redact_key(&caller.key)
    )))
}

/// `sk_test_****wxyz`: the prefix and the last four characters, as Stripe shows keys.
pub(crate) fn redact_key(key: &str) -> String {
    let prefix_end = key
        .match_indices('_')
        .nth(1)
        .map(|(index, _)| index + 1)
        .unwrap_or(0);
    let characters: Vec<char> = key.chars().collect();
    let tail: String = characters[characters.len().saturating_sub(4)..]
        .iter()
        .collect();
    format!("{}****{tail}", &key[..prefix_end])
}

fn key_from_headers(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let key = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        // The key is the user name; the password is empty.
        decoded.split(':').next().unwrap_or_default().to_owned()
    } else {
        return None;
    };
    (!key.is_empty()).then_some(key)
}

fn is_accepted_secret_key(key: &str, accepted_keys: &[String]) -> bool {
    if !accepted_keys.is_empty() {
        return accepted_keys.iter().any(|accepted| accepted == key);
    }
    let Some(secret) = key
        .strip_prefix("sk_test_")
        .or_else(|| key.strip_prefix("sk_live_"))
    else {
        return false;
    };
    secret.len() >= 16 && secret.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_with(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_and_basic_and_key_shapes() {
        let key = "sk_test_0123456789abcdef";
        assert!(authenticate(&headers_with(&format!("Bearer {key}")), &[], &[]).is_ok());
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        assert!(authenticate(&headers_with(&format!("Basic {basic}")), &[], &[]).is_ok());
        let live = authenticate(&headers_with("Bearer sk_live_0123456789abcdef"), &[], &[]);
        assert!(live.unwrap().livemode);
        for bad in [
            "Bearer sk_test_short",
            "Bearer pk_test_0123456789abcdef",
            "Token x",
        ] {
            assert!(authenticate(&headers_with(bad), &[], &[]).is_err(), "{bad}");
        }
        let only = vec!["sk_test_exactlythisone".to_owned()];
        assert!(
            authenticate(&headers_with("Bearer sk_test_0123456789abcdef"), &only, &[]).is_err()
        );
    }

    #[test]
    fn redaction_keeps_prefix_and_last_four() {
        assert_eq!(redact_key("sk_test_0123456789abcdef"), "sk_test_****cdef");
        assert_eq!(redact_key("rk_live_xyz"), "rk_live_****_xyz");
    }
}

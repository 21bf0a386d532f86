//! Finding the Stripe customers that rows without a remembered id belong to.
//!
//! Two strategies, and the engine picks the cheaper: one listing of every customer
//! (ceil(N/100) requests, consistent), or per-row lookups (an exact, consistent `email=` filter
//! plus a search to catch the same email in another case). Search lags behind writes, so it only
//! ever adds matches: "no customer has this key" is concluded from a full listing alone, and
//! per-row lookups pay off when the rows already exist in Stripe.

use crate::prepare::{PreparedRecord, ValidatedSync};
use crate::EngineError;
use ferry_destinations::stripe::{Customer, StripeCallError, StripeService};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;

/// For each match key looked up: the customers that carry it (0, 1, or several), or why the
/// lookup failed.
pub type Matches = HashMap<String, Result<Vec<Customer>, String>>;

/// Per-row lookups cost about this many requests per row (exact filter + search).
const REQUESTS_PER_ROW_LOOKUP: usize = 2;
const LOOKUP_CONCURRENCY: usize = 16;

/// `known_customers`: how many customers the account holds at least (those ferry remembers),
/// so a listing that cannot be cheaper is not even started.
pub async fn find_existing_customers(
    stripe: &StripeService,
    sync: &ValidatedSync,
    unknown: &[&PreparedRecord],
    known_customers: usize,
) -> Result<Matches, EngineError> {
    if unknown.is_empty() {
        return Ok(Matches::new());
    }
    // An external id in metadata can only be found consistently by listing everything; an
    // email can also be looked up row by row, which wins when few rows are unknown.
    let page_budget = if sync.key_is_email() {
        Some(unknown.len() * REQUESTS_PER_ROW_LOOKUP)
    } else {
        None
    };
    let listing_cannot_win =
        page_budget.is_some_and(|budget| known_customers.div_ceil(100) > budget);
    let index = if listing_cannot_win {
        None
    } else {
        list_all_customers(stripe, sync, page_budget).await?
    };
    if let Some(index) = index {
        return Ok(unknown
            .iter()
            .map(|record| {
                let found = index.get(&record.match_key).cloned().unwrap_or_default();
                (record.match_key.clone(), Ok(found))
            })
            .collect());
    }
    tracing::debug!(
        rows = unknown.len(),
        "Listing all customers costs more than looking rows up; looking up by email."
    );
    // A hand-rolled `buffer_unordered`: the combinator's closure makes this future fail rustc's
    // `Send` check, and the server runs previews on its multi-threaded runtime.
    let mut waiting = unknown.iter();
    let mut in_flight = FuturesUnordered::new();
    let mut lookups = Vec::with_capacity(unknown.len());
    loop {
        while in_flight.len() < LOOKUP_CONCURRENCY {
            let Some(record) = waiting.next() else { break };
            in_flight.push(lookup_one(stripe, sync, record));
        }
        match in_flight.next().await {
            Some(lookup) => lookups.push(lookup),
            None => break,
        }
    }
    let mut matches = Matches::new();
    for (key, found) in lookups {
        match found {
            Err(StripeCallError::Unauthorized { message, .. }) => {
                return Err(EngineError::StripeKey(message))
            }
            Err(other) => {
                matches.insert(
                    key,
                    Err(format!("could not look the key up in Stripe: {other}")),
                );
            }
            Ok(customers) => {
                matches.insert(key, Ok(customers));
            }
        }
    }
    // The exact filter cannot see `ADA@x.com` for `ada@x.com`, and search may not have caught up
    // with a recent write: before any row is called absent, one full listing settles it.
    let absent: Vec<String> = matches
        .iter()
        .filter(|(_, found)| matches!(found, Ok(customers) if customers.is_empty()))
        .map(|(key, _)| key.clone())
        .collect();
    if !absent.is_empty() {
        tracing::debug!(
            rows = absent.len(),
            "Confirming absent keys with a full listing."
        );
        let index = list_all_customers(stripe, sync, None)
            .await?
            .expect("an unbounded listing always completes");
        for key in absent {
            let found = index.get(&key).cloned().unwrap_or_default();
            matches.insert(key, Ok(found));
        }
    }
    Ok(matches)
}

/// Lists every customer into an index by match key. `None` if the listing outgrew
/// `page_budget` pages before it ended: per-row lookups are cheaper then.
async fn list_all_customers(
    stripe: &StripeService,
    sync: &ValidatedSync,
    page_budget: Option<usize>,
) -> Result<Option<HashMap<String, Vec<Customer>>>, EngineError> {
    let mut index: HashMap<String, Vec<Customer>> = HashMap::new();
    let mut starting_after: Option<String> = None;
    let mut pages = 0usize;
    loop {
        if page_budget.is_some_and(|budget| pages >= budget) {
            return Ok(None);
        }
        let (customers, has_more) = stripe
            .list_customers_page(starting_after.as_deref())
            .await
            .map_err(|e| match e {
                StripeCallError::Unauthorized { message, .. } => EngineError::StripeKey(message),
                other => EngineError::StripeLookup(other.to_string()),
            })?;
        pages += 1;
        starting_after = customers.last().map(|c| c.id.clone());
        for customer in customers {
            if let Some(key) = customer_match_key(sync, &customer) {
                index.entry(key).or_default().push(customer);
            }
        }
        if !has_more || starting_after.is_none() {
            return Ok(Some(index));
        }
    }
}

async fn lookup_one(
    stripe: &StripeService,
    sync: &ValidatedSync,
    record: &PreparedRecord,
) -> (String, Result<Vec<Customer>, StripeCallError>) {
    let found = lookup_by_email(stripe, sync, &record.key).await;
    (record.match_key.clone(), found)
}

async fn lookup_by_email(
    stripe: &StripeService,
    sync: &ValidatedSync,
    email: &str,
) -> Result<Vec<Customer>, StripeCallError> {
    let mut found = stripe.customers_with_email(email).await?;
    let lowercase = email.to_lowercase();
    if lowercase != email {
        found.extend(stripe.customers_with_email(&lowercase).await?);
    }
    found.extend(stripe.search_customers_by_email(email).await?);
    // Search matches words, not whole values: keep only true matches, each customer once.
    let wanted = sync.match_key(email);
    let mut seen = std::collections::HashSet::new();
    found.retain(|c| {
        customer_match_key(sync, c).as_deref() == Some(wanted.as_str()) && seen.insert(c.id.clone())
    });
    Ok(found)
}

/// The key a Stripe customer carries for this sync, normalised like the model's keys.
pub fn customer_match_key(sync: &ValidatedSync, customer: &Customer) -> Option<String> {
    let value = match sync.key_metadata_name() {
        Some(name) => customer.object.get("metadata")?.get(name)?.as_str()?,
        None => customer.object.get("email")?.as_str()?,
    };
    let key = sync.match_key(value);
    (!key.is_empty()).then_some(key)
}

//! Client-side token buckets that mirror the destination's own limits, so that a sync runs at
//! the destination's pace instead of finding it by collecting 429s.
//!
//! A bucket of this process only knows this process's requests. Stripe limits requests per
//! account, so when several processes (or runs) write into one account, they pace themselves
//! through a [`SharedRateBudget`] instead: a store they all reach (the workspace) hands out
//! evenly spaced request slots, each to one process only.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
// Slots are on tokio's clock (the same as `Instant` outside tests), so tests can pause it.
use tokio::time::Instant as SlotInstant;

/// Request slots shared by every process that writes into one account. The engine implements
/// it over the workspace store; this crate knows nothing of the store.
pub trait SharedRateBudget: Send + Sync {
    /// Reserves `count` slots of `per_second` under `key`; Err(text) when the store cannot be reached.
    fn reserve(
        &self,
        key: &str,
        per_second: u32,
        count: u32,
    ) -> Pin<Box<dyn Future<Output = Result<RateSlots, String>> + Send + '_>>;
}

/// The slots of one reservation: the first one `first_in` from when the budget answered, the
/// others `spacing` apart after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSlots {
    pub first_in: Duration,
    pub spacing: Duration,
    pub count: u32,
}

/// A shared budget, and the key of the account this client writes into (`acct_…`, or anything
/// that names the account and mode). Endpoint buckets are kept under `"{account_key} {endpoint}"`.
#[derive(Clone)]
pub struct SharedBudget {
    pub budget: Arc<dyn SharedRateBudget>,
    pub account_key: String,
}

impl std::fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudget")
            .field("account_key", &self.account_key)
            .finish_non_exhaustive()
    }
}

/// Requests per second, as data. `None` means "no limit" (benchmarks against an emulator).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPolicy {
    pub global_per_second: Option<u32>,
    pub per_endpoint_per_second: Option<u32>,
    /// Endpoints with a limit of their own (search: 20/s on Stripe).
    pub endpoint_overrides: HashMap<String, u32>,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        RateLimitPolicy {
            global_per_second: Some(25),
            per_endpoint_per_second: Some(25),
            endpoint_overrides: HashMap::new(),
        }
    }
}

impl RateLimitPolicy {
    pub fn unlimited() -> Self {
        RateLimitPolicy {
            global_per_second: None,
            per_endpoint_per_second: None,
            endpoint_overrides: HashMap::new(),
        }
    }
}

/// The buckets of one client: a global one and one per endpoint, each either this process's
/// own or, with a [`SharedBudget`], paced by the budget the account's other writers share.
pub struct RateLimiters {
    policy: RateLimitPolicy,
    global: Option<DefaultDirectRateLimiter>,
    per_endpoint: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    shared: Option<SharedPacing>,
}

impl RateLimiters {
    pub fn new(policy: &RateLimitPolicy) -> Self {
        RateLimiters {
            policy: policy.clone(),
            global: policy.global_per_second.map(limiter),
            per_endpoint: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Buckets paced by `shared`, so this process and every other one writing into the same
    /// account stay under the account's limits together. The process's own buckets stand in
    /// while the budget cannot be reached.
    pub fn sharing(policy: &RateLimitPolicy, shared: SharedBudget) -> Self {
        RateLimiters {
            shared: Some(SharedPacing {
                shared,
                pacers: Mutex::new(HashMap::new()),
                last_warning: Mutex::new(None),
            }),
            ..RateLimiters::new(policy)
        }
    }

    /// Waits until both the endpoint's bucket and the global bucket have a token.
    pub async fn wait_for(&self, endpoint: &str) {
        if let Some(rate) = self.endpoint_rate(endpoint) {
            let paced = match &self.shared {
                Some(shared) => shared.wait_for_endpoint_slot(endpoint, rate).await,
                None => false,
            };
            if !paced {
                self.endpoint_limiter(endpoint, rate).until_ready().await;
            }
        }
        if let Some(rate) = self.policy.global_per_second {
            let paced = match &self.shared {
                Some(shared) => shared.wait_for_account_slot(rate).await,
                None => false,
            };
            if let (false, Some(global)) = (paced, &self.global) {
                global.until_ready().await;
            }
        }
    }

    fn endpoint_rate(&self, endpoint: &str) -> Option<u32> {
        self.policy
            .endpoint_overrides
            .get(endpoint)
            .copied()
            .or(self.policy.per_endpoint_per_second)
    }

    fn endpoint_limiter(&self, endpoint: &str, rate: u32) -> Arc<DefaultDirectRateLimiter> {
        let mut map = self.per_endpoint.lock().expect("limiter map poisoned");
        map.entry(endpoint.to_string())
            .or_insert_with(|| Arc::new(limiter(rate)))
            .clone()
    }
}

/// How long a reservation may take before the process paces itself alone for that request.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(5);

/// After the budget failed to answer, how long requests go by the process's own buckets before
/// it is asked again: requests do not queue behind a store that is down, one timeout each.
const RETRY_SHARED_AFTER: Duration = Duration::from_secs(10);

/// How often, at most, the budget's failures are logged.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The process-local side of a shared budget: for each key, the slots of its last reservation.
struct SharedPacing {
    shared: SharedBudget,
    pacers: Mutex<HashMap<String, Arc<Pacer>>>,
    last_warning: Mutex<Option<Instant>>,
}

/// The slots one key holds. The async mutex is held while a reservation is in flight, so one
/// key has one reservation in flight at a time and its other callers wait for its slots.
struct Pacer {
    per_second: u32,
    state: tokio::sync::Mutex<PacerState>,
}

#[derive(Default)]
struct PacerState {
    /// When each reserved slot comes, in order.
    slots: VecDeque<SlotInstant>,
    spacing: Duration,
    /// Set when the budget failed: until then, calls use the process's own buckets.
    shared_unavailable_until: Option<SlotInstant>,
}

impl SharedPacing {
    /// Waits for a slot of the account's global bucket; `false` when the budget cannot be
    /// reached and the caller must pace the request itself.
    async fn wait_for_account_slot(&self, per_second: u32) -> bool {
        self.wait_for_slot(&self.shared.account_key, per_second)
            .await
    }

    /// The same for the endpoint's bucket in the account, kept under `"{account_key} {endpoint}"`.
    async fn wait_for_endpoint_slot(&self, endpoint: &str, per_second: u32) -> bool {
        let key = format!("{} {endpoint}", self.shared.account_key);
        self.wait_for_slot(&key, per_second).await
    }

    async fn wait_for_slot(&self, key: &str, per_second: u32) -> bool {
        match self
            .pacer(key, per_second)
            .take_slot(&*self.shared.budget, key)
            .await
        {
            Ok(slot) => {
                tokio::time::sleep_until(slot).await;
                true
            }
            Err(None) => false,
            Err(Some(problem)) => {
                self.warn_unreachable(key, &problem);
                false
            }
        }
    }

    fn pacer(&self, key: &str, per_second: u32) -> Arc<Pacer> {
        let mut pacers = self.pacers.lock().expect("pacer map poisoned");
        pacers
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Pacer {
                    per_second: per_second.max(1),
                    state: tokio::sync::Mutex::new(PacerState::default()),
                })
            })
            .clone()
    }

    fn warn_unreachable(&self, key: &str, problem: &str) {
        let mut last_warning = self.last_warning.lock().expect("warning clock poisoned");
        if last_warning.is_some_and(|at| at.elapsed() < WARNING_INTERVAL) {
            return;
        }
        *last_warning = Some(Instant::now());
        tracing::warn!(
            budget = %key,
            problem = %problem,
            "Cannot reserve requests from the shared rate budget; this process paces itself \
             alone meanwhile, so processes writing into the same account may together exceed \
             its rate limit. Check that the workspace database is reachable."
        );
    }
}

impl Pacer {
    /// The next slot of this key: one already reserved, or the first of a new reservation of a
    /// tenth of a second's worth. `Err(Some(problem))` when the budget just failed,
    /// `Err(None)` while it is left alone after a failure.
    async fn take_slot(
        &self,
        budget: &dyn SharedRateBudget,
        key: &str,
    ) -> Result<SlotInstant, Option<String>> {
        let mut state = self.state.lock().await;
        let now = SlotInstant::now();
        if state
            .shared_unavailable_until
            .is_some_and(|until| now < until)
        {
            return Err(None);
        }
        // A slot more than one spacing in the past went unused; taking it now would add a
        // request to the next slot's, and a pile of them would be a burst.
        let spacing = state.spacing;
        while state
            .slots
            .front()
            .is_some_and(|&slot| slot + spacing < now)
        {
            state.slots.pop_front();
        }
        if let Some(slot) = state.slots.pop_front() {
            return Ok(slot);
        }
        let count = (self.per_second / 10).max(1);
        let reserved = match tokio::time::timeout(
            RESERVE_TIMEOUT,
            budget.reserve(key, self.per_second, count),
        )
        .await
        {
            Ok(Ok(slots)) if slots.count > 0 => Ok(slots),
            Ok(Ok(_)) => Err("the budget reserved no slots".to_string()),
            Ok(Err(problem)) => Err(problem),
            Err(_) => Err(format!("no answer within {}s", RESERVE_TIMEOUT.as_secs())),
        };
        let slots = match reserved {
            Ok(slots) => slots,
            Err(problem) => {
                state.shared_unavailable_until = Some(SlotInstant::now() + RETRY_SHARED_AFTER);
                return Err(Some(problem));
            }
        };
        let first = SlotInstant::now() + slots.first_in;
        state.spacing = slots.spacing;
        state.shared_unavailable_until = None;
        state
            .slots
            .extend((0..slots.count).map(|number| first + slots.spacing * number));
        Ok(state.slots.pop_front().expect("a reservation has a slot"))
    }
}

/// A bucket that refills at `per_second` and holds a fifth of a second's worth, so a burst at
/// start-up cannot overrun a server bucket that another client already drained a little.
fn limiter(per_second: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_second.max(1)).expect("max(1) is non-zero");
    let burst = NonZeroU32::new((per_second / 5).max(1)).expect("max(1) is non-zero");
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[tokio::test]
    async fn endpoint_bucket_paces_requests() {
        let limiters = RateLimiters::new(&RateLimitPolicy {
            global_per_second: None,
            per_endpoint_per_second: Some(50),
            endpoint_overrides: HashMap::new(),
        });
        let started = Instant::now();
        for _ in 0..30 {
            limiters.wait_for("POST /v1/customers").await;
        }
        // 30 tokens at 50/s with a burst of 10: at least (30 - 10) / 50 = 0.4 s.
        assert!(
            started.elapsed() >= Duration::from_millis(380),
            "{:?}",
            started.elapsed()
        );
        // Another endpoint has its own bucket and is not slowed by the first.
        let other = Instant::now();
        limiters.wait_for("GET /v1/customers").await;
        assert!(other.elapsed() < Duration::from_millis(50));
    }

    /// The workspace store's budget in memory, as the engine would plug it in: GCRA without
    /// burst, one `next_free_at` per key. Can be told to fail, like an unreachable database.
    #[derive(Default)]
    struct InMemoryBudget {
        next_free_at: Mutex<HashMap<String, SlotInstant>>,
        asked: Mutex<Vec<(String, u32, u32)>>,
        unreachable: AtomicBool,
    }

    impl SharedRateBudget for InMemoryBudget {
        fn reserve(
            &self,
            key: &str,
            per_second: u32,
            count: u32,
        ) -> Pin<Box<dyn Future<Output = Result<RateSlots, String>> + Send + '_>> {
            let key = key.to_string();
            Box::pin(async move {
                self.asked
                    .lock()
                    .unwrap()
                    .push((key.clone(), per_second, count));
                if self.unreachable.load(Ordering::SeqCst) {
                    return Err("connection refused".to_string());
                }
                let spacing = Duration::from_micros(1_000_000_u64.div_ceil(u64::from(per_second)));
                let now = SlotInstant::now();
                let mut next_free_at = self.next_free_at.lock().unwrap();
                let next = next_free_at.entry(key).or_insert(now);
                let start = (*next).max(now);
                *next = start + spacing * count;
                Ok(RateSlots {
                    first_in: start - now,
                    spacing,
                    count,
                })
            })
        }
    }

    fn global_only(per_second: u32) -> RateLimitPolicy {
        RateLimitPolicy {
            global_per_second: Some(per_second),
            per_endpoint_per_second: None,
            endpoint_overrides: HashMap::new(),
        }
    }

    fn sharing(policy: &RateLimitPolicy, budget: &Arc<InMemoryBudget>) -> Arc<RateLimiters> {
        Arc::new(RateLimiters::sharing(
            policy,
            SharedBudget {
                budget: budget.clone(),
                account_key: "acct_1".to_string(),
            },
        ))
    }

    /// Two processes writing into one account, each with four requests in flight, make 200
    /// requests together; returns when each request was let through, and by which process.
    async fn two_busy_processes(per_second: u32) -> Vec<(SlotInstant, usize)> {
        let budget = Arc::new(InMemoryBudget::default());
        let processes = [
            sharing(&global_only(per_second), &budget),
            sharing(&global_only(per_second), &budget),
        ];
        let started = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for (process, limiters) in processes.iter().enumerate() {
            for _ in 0..4 {
                let (limiters, started) = (limiters.clone(), started.clone());
                tasks.spawn(async move {
                    let mut let_through = Vec::new();
                    while started.fetch_add(1, Ordering::SeqCst) < 200 {
                        limiters.wait_for("POST /v1/customers").await;
                        let_through.push((SlotInstant::now(), process));
                    }
                    let_through
                });
            }
        }
        let mut let_through: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
        let_through.sort();
        let_through
    }

    /// On a paused clock, which moves only when every task waits: the check is of the pacing,
    /// not of how late a loaded machine wakes a task up.
    #[tokio::test(start_paused = true)]
    async fn processes_sharing_a_budget_stay_under_its_rate_together() {
        let per_second = 100;
        let let_through = two_busy_processes(per_second).await;
        assert_eq!(let_through.len(), 200);
        let busiest_second = (0..let_through.len())
            .map(|first| {
                let window_end = let_through[first].0 + Duration::from_secs(1);
                let_through[first..]
                    .iter()
                    .take_while(|(at, _)| *at < window_end)
                    .count()
            })
            .max()
            .unwrap();
        assert!(
            busiest_second <= per_second as usize + 1,
            "{busiest_second} requests within a second"
        );
        // Alone, each process's own bucket would have let 200 through in about a second.
        let took = let_through[199].0 - let_through[0].0;
        assert!(took >= Duration::from_millis(1_900), "{took:?}");
        // Both were busy, so each got about half.
        let first_process = let_through.iter().filter(|(_, p)| *p == 0).count();
        assert!(
            (70..=130).contains(&first_process),
            "the first process made {first_process} of 200 requests"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_and_endpoint_buckets_are_kept_under_the_account_key() {
        let budget = Arc::new(InMemoryBudget::default());
        let limiters = sharing(
            &RateLimitPolicy {
                global_per_second: Some(100),
                per_endpoint_per_second: Some(25),
                endpoint_overrides: HashMap::from([("GET /v1/customers/search".to_string(), 20)]),
            },
            &budget,
        );
        limiters.wait_for("POST /v1/customers").await;
        limiters.wait_for("GET /v1/customers/search").await;
        assert_eq!(
            *budget.asked.lock().unwrap(),
            [
                // A tenth of a second's worth of slots at a time.
                ("acct_1 POST /v1/customers".to_string(), 25, 2),
                ("acct_1".to_string(), 100, 10),
                ("acct_1 GET /v1/customers/search".to_string(), 20, 2),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_left_unused_do_not_become_a_burst() {
        let budget = Arc::new(InMemoryBudget::default());
        let limiters = sharing(&global_only(100), &budget);
        // The first request reserves ten slots, 10 ms apart, and uses one.
        limiters.wait_for("POST /v1/customers").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The nine others passed long ago: ten more requests still take 90 ms.
        let started = SlotInstant::now();
        for _ in 0..10 {
            limiters.wait_for("POST /v1/customers").await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unreachable_budget_falls_back_to_the_process_bucket() {
        let budget = Arc::new(InMemoryBudget::default());
        budget.unreachable.store(true, Ordering::SeqCst);
        let limiters = sharing(&global_only(50), &budget);
        let started = Instant::now();
        for _ in 0..30 {
            limiters.wait_for("POST /v1/customers").await;
        }
        // The process's own bucket paced them: 30 tokens at 50/s with a burst of 10.
        assert!(
            (Duration::from_millis(380)..Duration::from_secs(2)).contains(&started.elapsed()),
            "{:?}",
            started.elapsed()
        );
        // The budget was asked once, then left alone for a while rather than once a request.
        assert_eq!(budget.asked.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_shared_budget_shows_its_account_only() {
        let shared = SharedBudget {
            budget: Arc::new(InMemoryBudget::default()),
            account_key: "acct_1".to_string(),
        };
        assert_eq!(
            format!("{shared:?}"),
            r#"SharedBudget { account_key: "acct_1", .. }"#
        );
    }
}

//! Keeps a repeated problem from filling the log: the first time a key (a sync, a client
//! address) has a problem it is logged as a warning, and the same problem again only after
//! `every` has passed; in between it goes to the debug level.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys remembered at most; past this the oldest are forgotten (a flood of distinct keys must
/// not grow memory either).
const MAX_KEYS: usize = 10_000;

pub struct LogThrottle<K> {
    every: Duration,
    last: Mutex<HashMap<K, (String, Instant)>>,
}

impl<K: Hash + Eq + Clone> LogThrottle<K> {
    pub fn new(every: Duration) -> LogThrottle<K> {
        LogThrottle {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `problem` for `key` is worth a warning now: it was not warned about for this key
    /// within `every`, or it differs from the last one that was.
    pub fn should_warn(&self, key: &K, problem: &str) -> bool {
        self.should_warn_at(key, problem, Instant::now())
    }

    fn should_warn_at(&self, key: &K, problem: &str, now: Instant) -> bool {
        let mut last = self.last.lock().expect("log throttle lock");
        if let Some((previous, at)) = last.get(key) {
            if previous == problem && now.duration_since(*at) < self.every {
                return false;
            }
        }
        if last.len() >= MAX_KEYS {
            let every = self.every;
            last.retain(|_, (_, at)| now.duration_since(*at) < every);
            if last.len() >= MAX_KEYS {
                last.clear();
            }
        }
        last.insert(key.clone(), (problem.to_string(), now));
        true
    }

    /// The key's problem is over: the next one is warned about at once.
    pub fn clear(&self, key: &K) {
        self.last.lock().expect("log throttle lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_problem_is_warned_once_per_interval() {
        let throttle = LogThrottle::new(Duration::from_secs(60));
        let start = Instant::now();
        let key = "customers".to_string();
        assert!(throttle.should_warn_at(&key, "model gone", start));
        for second in 1..60 {
            let at = start + Duration::from_secs(second);
            assert!(!throttle.should_warn_at(&key, "model gone", at), "{second}");
        }
        assert!(throttle.should_warn_at(&key, "model gone", start + Duration::from_secs(60)));
        // Another problem, or another key, is news.
        assert!(throttle.should_warn_at(&key, "key revoked", start + Duration::from_secs(61)));
        assert!(throttle.should_warn_at(&"other".to_string(), "model gone", start));
        throttle.clear(&key);
        assert!(throttle.should_warn(&key, "key revoked"));
    }
}

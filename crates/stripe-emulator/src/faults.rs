//! Deciding, per request, whether to inject a fault and how much latency to add; reproducible
//! from a seed and the request's sequence number.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::FaultConfig;

/// A fault injected into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answered 500, 502 or 503 before executing.
    ServerError,
    /// Answered 429 `lock_timeout` before executing.
    LockTimeout,
    /// Connection closed without a response; not executed.
    DroppedConnection,
    /// Executed (and its idempotent result stored), then the connection closed instead of answering.
    LostResponse,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultDecision {
    pub fault: Option<FaultKind>,
    /// 500, 502 or 503 when `fault` is `ServerError`.
    pub server_error_status: u16,
    pub latency: Duration,
}

/// The decision for the `sequence`-th request under `seed`: the same inputs always give the same
/// decision, so a seeded run replays its faults exactly when requests arrive in the same order.
pub(crate) fn decide(faults: &FaultConfig, seed: u64, sequence: u64) -> FaultDecision {
    let mut random = SplitMix64(seed ^ sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let draw = random.next_unit();
    let status_draw = random.next_unit();
    let jitter_draw = random.next_unit();
    let ladder = [
        (faults.server_error_rate, FaultKind::ServerError),
        (faults.lock_timeout_rate, FaultKind::LockTimeout),
        (faults.drop_rate, FaultKind::DroppedConnection),
        (faults.lose_response_rate, FaultKind::LostResponse),
    ];
    let mut threshold = 0.0;
    let mut fault = None;
    for (rate, kind) in ladder {
        threshold += rate.clamp(0.0, 1.0);
        if draw < threshold {
            fault = Some(kind);
            break;
        }
    }
    let server_error_status = [500, 502, 503][((status_draw * 3.0) as usize).min(2)];
    let latency = faults.latency + faults.latency_jitter.mul_f64(jitter_draw);
    FaultDecision {
        fault,
        server_error_status,
        latency,
    }
}

/// A tiny, well-mixed generator; enough for fault dice and free of shared state.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_decisions_and_rates_roughly_hold() {
        let faults = FaultConfig {
            server_error_rate: 0.2,
            drop_rate: 0.1,
            latency: Duration::from_millis(100),
            latency_jitter: Duration::from_millis(50),
            ..FaultConfig::default()
        };
        let first: Vec<FaultDecision> = (0..2000).map(|n| decide(&faults, 7, n)).collect();
        let again: Vec<FaultDecision> = (0..2000).map(|n| decide(&faults, 7, n)).collect();
        assert_eq!(first, again);
        let errors = first
            .iter()
            .filter(|decision| decision.fault == Some(FaultKind::ServerError))
            .count();
        let drops = first
            .iter()
            .filter(|decision| decision.fault == Some(FaultKind::DroppedConnection))
            .count();
        assert!((300..500).contains(&errors), "{errors}");
        assert!((120..280).contains(&drops), "{drops}");
        assert!(first.iter().all(|decision| {
            decision.latency >= Duration::from_millis(100)
                && decision.latency <= Duration::from_millis(150)
        }));
        let statuses: std::collections::BTreeSet<u16> = first
            .iter()
            .map(|decision| decision.server_error_status)
            .collect();
        assert_eq!(
            statuses.into_iter().collect::<Vec<_>>(),
            vec![500, 502, 503]
        );
    }

    #[test]
    fn no_rates_no_faults() {
        let none = FaultConfig::default();
        assert!((0..1000).all(|n| decide(&none, 1, n).fault.is_none()));
    }
}

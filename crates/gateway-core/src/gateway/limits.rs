//! Per-agent concurrency caps and request-rate limits.

use crate::ids::AgentId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Per-agent limits.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLimits {
    /// Actions one agent may have in flight at once.
    pub max_concurrent: u32,
    /// Sustained requests per second per agent.
    pub requests_per_second: f64,
    /// Requests an idle agent may make at once before the rate applies.
    pub burst: u32,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            requests_per_second: 20.0,
            burst: 40,
        }
    }
}

impl AgentLimits {
    /// No practical limit (for benchmarks and trusted single-agent setups).
    pub fn unlimited() -> Self {
        Self {
            max_concurrent: u32::MAX >> 3,
            requests_per_second: f64::INFINITY,
            burst: u32::MAX,
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Enforces [`AgentLimits`] per agent id.
pub(crate) struct Limiter {
    limits: AgentLimits,
    buckets: Mutex<HashMap<AgentId, Bucket>>,
    slots: Mutex<HashMap<AgentId, Arc<Semaphore>>>,
}

impl Limiter {
    pub(crate) fn new(limits: AgentLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request token; `Err` names the limit hit.
    pub(crate) fn check_rate(&self, agent: &AgentId) -> Result<(), String> {
        let l = &self.limits;
        if l.requests_per_second.is_infinite() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(agent.clone()).or_insert_with(|| Bucket {
            tokens: f64::from(l.burst),
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * l.requests_per_second;
        bucket.tokens = (bucket.tokens + refill).min(f64::from(l.burst));
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(format!(
                "agent {agent} exceeded {} requests per second (burst {})",
                l.requests_per_second, l.burst
            ))
        }
    }

    /// Takes one of the agent's concurrency slots, held until the permit is dropped.
    pub(crate) fn acquire_slot(&self, agent: &AgentId) -> Result<OwnedSemaphorePermit, String> {
        let semaphore = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let max = usize::try_from(self.limits.max_concurrent).unwrap_or(usize::MAX);
            slots
                .entry(agent.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(max)))
                .clone()
        };
        semaphore.try_acquire_owned().map_err(|_| {
            format!(
                "agent {agent} already has {} actions in flight",
                self.limits.max_concurrent
            )
        })
    }
}

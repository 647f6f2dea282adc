//! Per-agent concurrency caps and request-rate limits.
//!
//! Agent ids come from credentials (JWT claims among them), so neither map may grow with the
//! number of ids ever seen: the rate limiter is `governor`'s keyed GCRA limiter, whose idle
//! agents (state no different from a fresh one) are evicted whenever the map has doubled since
//! the last sweep; an agent's concurrency entry is removed when its last slot is released.

use crate::ids::AgentId;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Per-agent limits. The rate is enforced **per gateway replica**: each process keeps its own
/// buckets, so behind a load balancer over N replicas an agent may make N x the rate; divide by
/// the replica count to get a deployment-wide budget. The concurrency cap is per replica too,
/// unless [`across_replicas`](Self::across_replicas) is set: then it holds for the agent on
/// every replica sharing the state store. A request waiting for human approval holds no
/// concurrency slot.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLimits {
    /// Actions one agent may have in flight at once (on this replica; on all of them with
    /// `across_replicas`).
    pub max_concurrent: u32,
    /// Sustained requests per second per agent on this replica.
    pub requests_per_second: f64,
    /// Requests an idle agent may make at once before the rate applies.
    pub burst: u32,
    /// Whether `max_concurrent` holds across every replica sharing the state store: each
    /// action also holds one of the agent's slots there (`state::ConcurrencySlots`), under a
    /// lease, so a replica that dies gives its slots back within the lease. Costs two store
    /// writes per action (take, give back) and one per lease renewal; off by default (one
    /// process needs no more than its own count).
    pub across_replicas: bool,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            requests_per_second: 20.0,
            burst: 40,
            across_replicas: false,
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
            across_replicas: false,
        }
    }
}

/// Which of an agent's limits a request hit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Limited {
    /// Over the request rate.
    #[error("agent {agent} exceeded {requests_per_second} requests per second (burst {burst})")]
    Rate {
        agent: AgentId,
        requests_per_second: f64,
        burst: u32,
        /// When the agent's next request would pass.
        retry_after: std::time::Duration,
    },
    /// Over the concurrency cap.
    #[error("agent {agent} already has {max_concurrent} actions in flight")]
    Concurrency { agent: AgentId, max_concurrent: u32 },
    /// Over the concurrency cap, counted across replicas.
    #[error("agent {agent} already has {max_concurrent} actions in flight across replicas")]
    SharedConcurrency { agent: AgentId, max_concurrent: u32 },
}

impl Limited {
    /// When to try again: the rate limiter's own answer; for the concurrency cap, unknown
    /// (a running action ends when it ends), so `None`.
    pub(crate) fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Rate { retry_after, .. } => Some(*retry_after),
            Self::Concurrency { .. } | Self::SharedConcurrency { .. } => None,
        }
    }
}

/// Rate-limiter entries kept before the first sweep for idle agents.
const MIN_SWEEP_AT: usize = 4096;
/// Checks between two looks at the rate limiter's size.
const CHECKS_PER_LOOK: u64 = 256;
/// The longest a GCRA bucket may span (t + tau), well inside governor's `u64` nanoseconds.
const MAX_SPAN_NANOS: u128 = 1 << 62;

/// How requests are admitted by rate.
enum Rate {
    /// `requests_per_second` is infinite: every request passes.
    Unlimited,
    /// `burst` is 0: no request passes.
    Closed,
    /// A GCRA bucket per agent.
    Limited(Box<Buckets>),
}

struct Buckets {
    limiter: DefaultKeyedRateLimiter<AgentId>,
    /// The limiter's clock, to say when a refused agent may come back.
    clock: governor::clock::DefaultClock,
    checks: AtomicU64,
    /// The size at which the next sweep runs.
    sweep_at: AtomicUsize,
}

impl Buckets {
    fn new(requests_per_second: f64, burst: NonZeroU32) -> Self {
        // Sustained rate: one request per `period`. A rate that is not a positive number
        // never refills (fail closed); periods are clamped so that the bucket's span fits.
        let nanos = if requests_per_second > 0.0 {
            // `as` saturates: a huge rate gives 0, clamped to 1 ns below.
            (1e9 / requests_per_second).ceil() as u128
        } else {
            u128::MAX
        };
        let longest = MAX_SPAN_NANOS / u128::from(burst.get());
        let nanos = nanos.clamp(1, longest.max(1));
        let period = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX >> 2));
        // `period` is at least 1 ns, so `with_period` has a quota to give; the fallback is
        // never taken.
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: governor::clock::DefaultClock::default(),
            checks: AtomicU64::new(0),
            sweep_at: AtomicUsize::new(MIN_SWEEP_AT),
        }
    }

    /// `Err` holds how long until the agent's next request would pass.
    fn check(&self, agent: &AgentId) -> Result<(), std::time::Duration> {
        use governor::clock::Clock as _;
        let passed = self
            .limiter
            .check_key(agent)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()));
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(CHECKS_PER_LOOK)
        {
            self.sweep_if_grown();
        }
        passed
    }

    /// Drops idle agents once the map has grown past the last sweep's high-water mark; the
    /// next sweep waits until it doubles again, so sweeping costs O(1) per request.
    fn sweep_if_grown(&self) {
        if self.limiter.len() < self.sweep_at.load(Ordering::Relaxed) {
            return;
        }
        self.sweep();
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let kept = self.limiter.len();
        self.sweep_at
            .store(kept.saturating_mul(2).max(MIN_SWEEP_AT), Ordering::Relaxed);
    }
}

type SlotMap = Mutex<HashMap<AgentId, Arc<Semaphore>>>;

fn lock(slots: &SlotMap) -> MutexGuard<'_, HashMap<AgentId, Arc<Semaphore>>> {
    // A poisoned lock only means another thread panicked while holding it; every operation
    // on the map is a single insert, lookup or remove, so it is always consistent.
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One of an agent's concurrency slots, held until dropped. The agent's entry goes with its
/// last slot.
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    agent: AgentId,
    slots: Arc<SlotMap>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = lock(&self.slots);
        // Released under the lock: a concurrent acquire either sees this permit held or the
        // entry gone, never an entry about to be removed.
        drop(self.permit.take());
        remove_if_unheld(&mut slots, &self.agent);
    }
}

/// Removes the agent's entry if nobody holds one of its slots (only the map refers to it).
fn remove_if_unheld(slots: &mut HashMap<AgentId, Arc<Semaphore>>, agent: &AgentId) {
    if slots
        .get(agent)
        .is_some_and(|semaphore| Arc::strong_count(semaphore) == 1)
    {
        slots.remove(agent);
    }
}

/// Enforces [`AgentLimits`] per agent id.
pub(crate) struct Limiter {
    limits: AgentLimits,
    rate: Rate,
    slots: Arc<SlotMap>,
}

impl Limiter {
    pub(crate) fn new(limits: AgentLimits) -> Self {
        let rate = if limits.requests_per_second.is_infinite() && limits.requests_per_second > 0.0 {
            Rate::Unlimited
        } else {
            match NonZeroU32::new(limits.burst) {
                None => Rate::Closed,
                Some(burst) => {
                    Rate::Limited(Box::new(Buckets::new(limits.requests_per_second, burst)))
                }
            }
        };
        Self {
            limits,
            rate,
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one request token; `Err` names the limit hit.
    pub(crate) fn check_rate(&self, agent: &AgentId) -> Result<(), Limited> {
        let passed = match &self.rate {
            Rate::Unlimited => Ok(()),
            // Nothing will ever pass: say a minute rather than a second.
            Rate::Closed => Err(std::time::Duration::from_secs(60)),
            Rate::Limited(buckets) => buckets.check(agent),
        };
        passed.map_err(|retry_after| Limited::Rate {
            agent: agent.clone(),
            requests_per_second: self.limits.requests_per_second,
            burst: self.limits.burst,
            retry_after,
        })
    }

    /// Takes one of the agent's concurrency slots, held until the slot is dropped.
    pub(crate) fn acquire_slot(&self, agent: &AgentId) -> Result<Slot, Limited> {
        let permit = {
            let mut slots = lock(&self.slots);
            let max = usize::try_from(self.limits.max_concurrent).unwrap_or(usize::MAX);
            let semaphore = slots
                .entry(agent.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(max)))
                .clone();
            let permit = semaphore.try_acquire_owned().ok();
            if permit.is_none() {
                // The clone is dropped with the failed attempt; an entry nobody holds (a cap
                // of 0) must not stay behind.
                remove_if_unheld(&mut slots, agent);
            }
            permit
        };
        match permit {
            Some(permit) => Ok(Slot {
                permit: Some(permit),
                agent: agent.clone(),
                slots: Arc::clone(&self.slots),
            }),
            None => Err(Limited::Concurrency {
                agent: agent.clone(),
                max_concurrent: self.limits.max_concurrent,
            }),
        }
    }

    /// [`Limiter::acquire_slot`], waiting up to `wait` for a slot to free.
    pub(crate) async fn acquire_slot_within(
        &self,
        agent: &AgentId,
        wait: std::time::Duration,
    ) -> Result<Slot, Limited> {
        // Polling keeps the slot map's entry-removal rule in one place (`Slot::drop`); a
        // released slot is seen within one tick.
        const TICK: std::time::Duration = std::time::Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.acquire_slot(agent) {
                Ok(slot) => return Ok(slot),
                Err(limited) if tokio::time::Instant::now() >= deadline => return Err(limited),
                Err(_) => tokio::time::sleep(TICK).await,
            }
        }
    }

    /// Agents with a rate-limiter entry (test hook for the eviction bound).
    #[cfg(test)]
    fn rate_entries(&self) -> usize {
        match &self.rate {
            Rate::Limited(buckets) => buckets.limiter.len(),
            Rate::Unlimited | Rate::Closed => 0,
        }
    }

    /// Agents with a concurrency entry (test hook).
    #[cfg(test)]
    fn slot_entries(&self) -> usize {
        lock(&self.slots).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(n: usize) -> AgentId {
        AgentId::new(format!("agent:a{n}")).unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = Limiter::new(AgentLimits {
            max_concurrent: 4,
            requests_per_second: 1.0,
            burst: 3,
            ..AgentLimits::default()
        });
        let a = agent(0);
        for _ in 0..3 {
            limiter.check_rate(&a).unwrap();
        }
        let err = limiter.check_rate(&a).unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent agent:a0 exceeded 1 requests per second (burst 3)"
        );
        // Another agent has its own bucket.
        limiter.check_rate(&agent(1)).unwrap();
    }

    #[test]
    fn zero_burst_refuses_and_infinite_rate_admits() {
        let closed = Limiter::new(AgentLimits {
            burst: 0,
            ..AgentLimits::default()
        });
        assert!(closed.check_rate(&agent(0)).is_err());
        let open = Limiter::new(AgentLimits::unlimited());
        for _ in 0..10_000 {
            open.check_rate(&agent(0)).unwrap();
        }
        // A rate that is not a positive number never refills: the burst, then nothing.
        for rate in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            let limiter = Limiter::new(AgentLimits {
                requests_per_second: rate,
                burst: 2,
                ..AgentLimits::default()
            });
            limiter.check_rate(&agent(0)).unwrap();
            limiter.check_rate(&agent(0)).unwrap();
            assert!(limiter.check_rate(&agent(0)).is_err(), "{rate}");
        }
        // Extreme but legal settings build without overflow.
        let slow = Limiter::new(AgentLimits {
            requests_per_second: 1e-12,
            burst: u32::MAX,
            ..AgentLimits::default()
        });
        slow.check_rate(&agent(0)).unwrap();
    }

    #[test]
    fn slots_cap_concurrency_and_go_with_their_last_holder() {
        let limiter = Limiter::new(AgentLimits {
            max_concurrent: 2,
            ..AgentLimits::default()
        });
        let a = agent(0);
        let first = limiter.acquire_slot(&a).unwrap();
        let second = limiter.acquire_slot(&a).unwrap();
        let err = limiter.acquire_slot(&a).err().unwrap();
        assert_eq!(
            err.to_string(),
            "agent agent:a0 already has 2 actions in flight"
        );
        drop(first);
        let third = limiter.acquire_slot(&a).unwrap();
        assert_eq!(limiter.slot_entries(), 1);
        drop((second, third));
        assert_eq!(limiter.slot_entries(), 0);

        let none = Limiter::new(AgentLimits {
            max_concurrent: 0,
            ..AgentLimits::default()
        });
        assert!(none.acquire_slot(&a).is_err());
        assert_eq!(none.slot_entries(), 0, "a refused acquire leaves no entry");
    }

    /// A million distinct agent ids (as a flood of forged JWT subjects would bring) leave a
    /// bounded number of entries behind, not a million.
    #[test]
    fn a_million_distinct_agents_leave_bounded_state() {
        // A bucket refills in 1 ms, so an agent is idle (evictable) a millisecond after its
        // request.
        let limiter = Limiter::new(AgentLimits {
            max_concurrent: 4,
            requests_per_second: 1000.0,
            burst: 1,
            ..AgentLimits::default()
        });
        let mut largest = 0;
        for n in 0..1_000_000 {
            let id = agent(n);
            limiter.check_rate(&id).unwrap();
            drop(limiter.acquire_slot(&id).unwrap());
            if n % 10_000 == 0 {
                largest = largest.max(limiter.rate_entries());
                assert_eq!(limiter.slot_entries(), 0);
            }
        }
        eprintln!("most rate-limiter entries seen at once: {largest}");
        std::thread::sleep(Duration::from_millis(5));
        let Rate::Limited(buckets) = &limiter.rate else {
            panic!("a finite rate has buckets")
        };
        buckets.sweep();
        assert_eq!(
            limiter.rate_entries(),
            0,
            "every agent is idle after the sweep"
        );
        assert_eq!(limiter.slot_entries(), 0);
        // Between sweeps the map holds at most the agents seen since the last one: with
        // sweeps at twice the survivors (at least MIN_SWEEP_AT), checked every
        // CHECKS_PER_LOOK requests, that is far below a million.
        assert!(
            largest < 100_000,
            "the rate limiter held {largest} agents at once"
        );
    }
}

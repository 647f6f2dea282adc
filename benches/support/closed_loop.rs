//! What the gateway benchmarks share: distinct agents with their own keys, closed loops of
//! actions (each agent waits for its action before the next), and percentiles of what
//! criterion measured.

// Each bench reads the part of a summary it reports.
#![allow(dead_code)]

use agent_gateway::core::{AgentId, AgentIdentity, AuthMethod, Credential, StaticKeys};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One action by agent `i` (its own credential); panics if it did not succeed.
pub type Action = Arc<dyn Fn(usize) -> BoxFuture<'static, ()> + Send + Sync>;

/// `n` agents (`agent:bench-<i>`, owner `bench@example.com`), each with a static key.
pub struct Agents {
    pub keys: Arc<StaticKeys>,
    pub credentials: Vec<Credential>,
    pub identities: Vec<AgentIdentity>,
}

pub fn agents(n: usize) -> Agents {
    let mut keys = StaticKeys::new();
    let (mut credentials, mut identities) = (Vec::new(), Vec::new());
    for i in 0..n {
        let id = AgentId::new(format!("agent:bench-{i}")).unwrap();
        let (next, key) = keys
            .with_generated_key(&format!("bench-{i}"), id.clone(), "bench@example.com")
            .unwrap();
        keys = next;
        credentials.push(Credential::Bearer(key));
        identities.push(AgentIdentity::new(
            id,
            "bench@example.com",
            AuthMethod::StaticKey {
                key_id: format!("bench-{i}"),
            },
        ));
    }
    Agents {
        keys: Arc::new(keys),
        credentials,
        identities,
    }
}

/// What each call of the timed routine saw: every action's latency and the wall time.
#[derive(Default)]
pub struct Recorder {
    calls: Mutex<Vec<(Vec<Duration>, Duration)>>,
}

/// Percentiles of one benchmark's measured actions.
pub struct Summary {
    pub name: String,
    pub agents: usize,
    pub actions: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub per_second: f64,
}

impl Recorder {
    /// Criterion calls the routine during warm-up (doubling `iters`) and then exactly
    /// `samples` times to measure (flat sampling); only those last calls count.
    pub fn summary(&self, name: impl Into<String>, agents: usize, samples: usize) -> Summary {
        let (all, wall) = self.measured(samples);
        let pct = |p: f64| {
            let i = ((all.len() as f64 * p).ceil() as usize).saturating_sub(1);
            all.get(i).copied().unwrap_or_default()
        };
        Summary {
            name: name.into(),
            agents,
            actions: all.len(),
            p50: pct(0.50),
            p99: pct(0.99),
            max: all.last().copied().unwrap_or_default(),
            per_second: all.len() as f64 / wall.as_secs_f64().max(f64::MIN_POSITIVE),
        }
    }
}

impl Recorder {
    /// The latencies of the last `samples` calls, sorted, and their total wall time.
    pub fn measured(&self, samples: usize) -> (Vec<Duration>, Duration) {
        let calls = self.calls.lock().unwrap();
        let measured = &calls[calls.len().saturating_sub(samples)..];
        let mut all: Vec<Duration> = measured
            .iter()
            .flat_map(|(l, _)| l.iter().copied())
            .collect();
        all.sort_unstable();
        (all, measured.iter().map(|(_, w)| *w).sum())
    }
}

/// `agents` closed loops, each doing `iters` actions back to back; returns the wall time.
pub async fn run_agents(
    action: &Action,
    agents: usize,
    iters: u64,
    recorder: &Recorder,
) -> Duration {
    let start = Instant::now();
    let loops: Vec<_> = (0..agents)
        .map(|agent| {
            let action = Arc::clone(action);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(iters as usize);
                for _ in 0..iters {
                    let t = Instant::now();
                    action(agent).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for l in futures::future::join_all(loops).await {
        latencies.extend(l.unwrap());
    }
    let wall = start.elapsed();
    recorder.calls.lock().unwrap().push((latencies, wall));
    wall
}

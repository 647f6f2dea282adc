//! The whole gateway on embedded defaults: static API keys for 64 distinct agents, embedded Rego
//! on the reference policies (`policies/`), HMAC grants and the durable SQLite audit log
//! (WAL, `synchronous=FULL`, group commit, signed checkpoints) in a temporary directory on the
//! build's disk (not tmpfs, so fsync is real), running `diag.echo`:
//!
//! - `local_job`: through the local sandbox runner (`LocalRunner`, strongest isolation here);
//! - `noop_runner`: through `MemoryRunner` (a job that ends at once): the gateway's overhead,
//!   with the embedded SQLite action state store (three writes of its own per action,
//!   process-crash durable);
//! - `noop_memory_state`: the same with the action state in memory: the ratio of the two is
//!   what durable state costs; `noop_power_loss_state`: with every state write fsynced;
//!
//! at 1 and 64 concurrent agents (each agent its own key and its own closed loop of actions).
//! Baselines measured in the same run, on the same SQLite log and policy engine:
//!
//! - `baseline_decide_append`: one bare `EmbeddedRego::decide` + one durable audit append, the
//!   least any governed action costs;
//! - `baseline_audit_trail`: the durable commits of one successful action's trail, made
//!   directly on the sink: `requested` + `decided` + `granted` + `started`, then `revoked` +
//!   `completed`, as two groups (six records, two commits: the write-ahead rule of
//!   `docs/design.md`; the pipeline waits for each commit before its next step);
//! - `memory_doubles`: the same gateway on in-memory doubles (allow-all policy, memory broker,
//!   runner and audit): the pipeline's own cost, without storage or policy evaluation;
//! - `baseline_two_fsyncs` (1 agent only): two sequential 4 KiB overwrites of a file beside
//!   the log, each followed by `fdatasync`: the disk's floor for one action's two durable
//!   commits, below anything SQLite can do.
//! - `baseline_sqlite_commits` (1 agent only): the trail's two commits (4 and 2 copies of a row
//!   the gateway wrote) made on one thread through a plain SQLite connection (`rusqlite`,
//!   same schema, WAL, `synchronous=FULL`): SQLite's own floor, without the sink's writer task,
//!   `sqlx` or any hand-off between threads.
//!
//! Criterion reports the time per iteration (one action per agent) and actions/s. Per-action
//! latency percentiles (p50/p99, measured around each `execute`) and the targets (no-op runner
//! p50 <= 1.5 x the two-fsync floor at 1 agent and >= 10k actions/s at 64 agents with durable
//! audit; local sandbox p50 <= 3 ms at 1 agent and >= 600 actions/s at 64) are printed at the
//! end of the group, each with its measured figure and verdict, with ratios to the baselines.
//!
//! `cargo bench --bench gateway` (set `GATEWAY_BENCH_DIR` to put the audit log elsewhere).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

#[path = "support/closed_loop.rs"]
mod closed_loop;

use agent_gateway::core::MemoryStateStore;
use agent_gateway::core::testing::{MemoryAuditSink, MemoryBroker, MemoryPolicy, MemoryRunner};
use agent_gateway::core::{
    AgentIdentity, AgentLimits, AuditEvent, AuditEventKind, AuditSink, Credential, EventOutcome,
    GatewayConfig, PolicyDecider, PolicyInput,
};
use agent_gateway::embedded::{EmbeddedOptions, EmbeddedParts};
use agent_gateway::{ActionRequest, Gateway};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use closed_loop::{Action, Recorder, Summary, agents, run_agents};

const AGENTS: usize = 64;
const SAMPLES: usize = 10;
const CONCURRENCY: [usize; 2] = [1, AGENTS];

fn request() -> ActionRequest {
    ActionRequest::new("diag.echo", "diag:bench")
        .with_params(json!({"message": "hello"}))
        .with_intent("benchmark")
        .with_ttl_seconds(60)
}

fn config() -> GatewayConfig {
    GatewayConfig {
        agent_limits: AgentLimits::unlimited(),
        ..GatewayConfig::default()
    }
}

fn execute_action(gateway: Gateway, credentials: Arc<Vec<Credential>>) -> Action {
    Arc::new(move |agent| {
        let gateway = gateway.clone();
        let credential = credentials[agent].clone();
        Box::pin(async move {
            let outcome = gateway.execute(credential, request()).await.unwrap();
            assert!(
                outcome.job.succeeded(),
                "job failed: {:?}",
                outcome.job.status
            );
        })
    })
}

fn policy_input(who: &AgentIdentity) -> PolicyInput {
    let req = request();
    PolicyInput {
        contract_version: 1,
        agent: who.clone(),
        action: req.action,
        resource: req.resource,
        params: req.params,
        intent: req.intent,
        requested_ttl_seconds: 60,
        request_time: time::OffsetDateTime::now_utc(),
        correlation_id: req.id,
        context: Default::default(),
    }
}

fn audit_event(who: &AgentIdentity, step: u32) -> AuditEvent {
    let mut ev = AuditEvent::new(
        agent_gateway::core::RequestId::new(),
        step,
        AuditEventKind::Decided,
    );
    ev.agent_id = Some(who.id.clone());
    ev.action = "diag.echo".into();
    ev.resource = "diag:bench".into();
    ev.outcome = Some(EventOutcome::Success);
    ev
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // The audit log must sit on a real disk: tmpfs would make fsync free.
    let base = std::env::var_os("GATEWAY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let parts = rt
        .block_on(EmbeddedParts::open(&EmbeddedOptions::new(
            dir.path().join("audit.db"),
        )))
        .unwrap();
    let agents = agents(AGENTS);
    let credentials = Arc::new(agents.credentials.clone());
    let local = parts
        .builder(agents.keys.clone())
        .config(config())
        .build()
        .unwrap();
    let noop = parts
        .builder(agents.keys.clone())
        .runner(Arc::new(MemoryRunner::new()))
        .config(config())
        .build()
        .unwrap();
    // The same, with the action state in memory instead of the embedded SQLite state store:
    // the ratio of the two is what durable state costs.
    let noop_memory_state = parts
        .builder(agents.keys.clone())
        .runner(Arc::new(MemoryRunner::new()))
        .state(Arc::new(MemoryStateStore::new()))
        .config(config())
        .build()
        .unwrap();
    let isolation = local.runner_info().isolation;

    // Records one action leaves in the log (sequence numbers of two consecutive actions).
    let records_per_action = rt.block_on(async {
        let a = local
            .execute(credentials[0].clone(), request())
            .await
            .unwrap();
        let b = local
            .execute(credentials[0].clone(), request())
            .await
            .unwrap();
        b.audit.sequence - a.audit.sequence
    });

    let memory = {
        let gw = Gateway::builder()
            .identity(agents.keys.clone())
            .policy(Arc::new(MemoryPolicy::allow_all()))
            .broker(Arc::new(MemoryBroker::new()))
            .runner(Arc::new(MemoryRunner::new()))
            .audit(Arc::new(MemoryAuditSink::new()))
            .catalog(parts.catalog.clone())
            .config(config())
            .build()
            .unwrap();
        execute_action(gw, credentials.clone())
    };
    let identities = Arc::new(agents.identities);
    let decide_append: Action = {
        let (policy, audit, ids) = (
            parts.policy.clone(),
            parts.audit.clone(),
            identities.clone(),
        );
        Arc::new(move |agent| {
            let (policy, audit, who) = (policy.clone(), audit.clone(), ids[agent].clone());
            Box::pin(async move {
                let decision = policy.decide(&policy_input(&who)).await.unwrap();
                assert!(decision.allow, "{:?}", decision.reasons);
                audit.append(audit_event(&who, 2)).await.unwrap();
            })
        })
    };
    let audit_trail: Action = {
        let (audit, ids) = (parts.audit.clone(), identities.clone());
        Arc::new(move |agent| {
            let (audit, who) = (audit.clone(), ids[agent].clone());
            Box::pin(async move {
                let commit_one = (1..=4).map(|step| audit_event(&who, step)).collect();
                audit.append_all(commit_one).await.unwrap();
                let revoked_completed = vec![audit_event(&who, 5), audit_event(&who, 6)];
                audit.append_all(revoked_completed).await.unwrap();
            })
        })
    };
    let two_fsyncs: Action = {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("fsync-floor"))
            .unwrap();
        // Preallocated and synced, so each sync below flushes data only (the cheapest case).
        file.write_all_at(&[0u8; 64 * 1024], 0).unwrap();
        file.sync_all().unwrap();
        let file = Arc::new(file);
        let page = Arc::new([1u8; 4096]);
        Arc::new(move |_| {
            let (file, page) = (file.clone(), page.clone());
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    for i in 0..2u64 {
                        file.write_all_at(&page[..], i * 4096).unwrap();
                        file.sync_data().unwrap();
                    }
                })
                .await
                .unwrap();
            })
        })
    };
    let sqlite_commits = sqlite_floor(&dir.path().join("audit.db"), &dir.path().join("floor.db"));
    // And with every state write fsynced (`Durability::PowerLoss`), for the note's comparison.
    let power_loss_state = rt
        .block_on(agent_gateway::state::SqliteStateStore::open_with(
            dir.path().join("power-loss.state.db"),
            agent_gateway::state::Durability::PowerLoss,
        ))
        .unwrap();
    let noop_power_loss_state = parts
        .builder(agents.keys.clone())
        .runner(Arc::new(MemoryRunner::new()))
        .state(Arc::new(power_loss_state))
        .config(config())
        .build()
        .unwrap();
    let cases: [(&'static str, Action); 9] = [
        ("baseline_two_fsyncs", two_fsyncs),
        ("baseline_sqlite_commits", sqlite_commits),
        ("baseline_decide_append", decide_append),
        ("baseline_audit_trail", audit_trail),
        ("memory_doubles", memory),
        (
            "noop_memory_state",
            execute_action(noop_memory_state, credentials.clone()),
        ),
        (
            "noop_power_loss_state",
            execute_action(noop_power_loss_state, credentials.clone()),
        ),
        ("noop_runner", execute_action(noop, credentials.clone())),
        ("local_job", execute_action(local, credentials.clone())),
    ];

    let mut summaries = Vec::new();
    let mut group = c.benchmark_group("gateway");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for agents in CONCURRENCY {
        group.throughput(Throughput::Elements(agents as u64));
        for (name, action) in &cases {
            // The floors are one writer's sequential commits: nothing like a group commit.
            let floor = matches!(*name, "baseline_two_fsyncs" | "baseline_sqlite_commits");
            if floor && agents > 1 {
                continue;
            }
            let recorder = Recorder::default();
            group.bench_with_input(BenchmarkId::new(*name, agents), &agents, |b, &n| {
                b.to_async(&rt)
                    .iter_custom(|iters| run_agents(action, n, iters, &recorder));
            });
            summaries.push(recorder.summary(*name, agents, SAMPLES));
        }
    }
    group.finish();
    report(&summaries, &isolation.to_string(), records_per_action);
}

/// The `baseline_sqlite_commits` action: a fresh database at `floor` with the audit schema, and
/// rows copied from the last one the gateway wrote to `log`.
fn sqlite_floor(log: &std::path::Path, floor: &std::path::Path) -> Action {
    use rusqlite::types::Value;
    const COLUMNS: &str = "stream_id, sequence, prev_hash, hash, event, event_time, \
                           correlation_id, kind, agent_id, action, resource, outcome";
    let row: Vec<Value> = rusqlite::Connection::open(log)
        .unwrap()
        .query_row(
            &format!("SELECT {COLUMNS} FROM audit_records ORDER BY rowid DESC LIMIT 1"),
            [],
            |r| (0..12).map(|i| r.get::<_, Value>(i)).collect(),
        )
        .unwrap();
    let conn = rusqlite::Connection::open(floor).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.pragma_update(None, "synchronous", "full").unwrap();
    for (_, _, sql) in agent_gateway::audit::sqlite::MIGRATIONS {
        conn.execute_batch(sql).unwrap();
    }
    let state = Arc::new(Mutex::new((conn, 0i64)));
    Arc::new(move |_| {
        let (state, row) = (state.clone(), row.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = state.lock().unwrap();
                let (conn, sequence) = &mut *guard;
                for rows in [4, 2] {
                    let mut values = Vec::with_capacity(12 * rows);
                    for _ in 0..rows {
                        let mut copy = row.clone();
                        copy[1] = Value::Integer(*sequence);
                        *sequence += 1;
                        values.extend(copy);
                    }
                    let placeholders = vec!["(?,?,?,?,?,?,?,?,?,?,?,?)"; rows].join(",");
                    conn.prepare_cached(&format!(
                        "INSERT INTO audit_records ({COLUMNS}) VALUES {placeholders}"
                    ))
                    .unwrap()
                    .execute(rusqlite::params_from_iter(values))
                    .unwrap();
                }
            })
            .await
            .unwrap();
        })
    })
}

fn report(summaries: &[Summary], isolation: &str, records_per_action: u64) {
    let find = |name: &str, agents: usize| {
        summaries
            .iter()
            .find(|s| s.name == name && s.agents == agents && s.actions > 0)
    };
    println!();
    println!(
        "gateway: embedded Rego, HMAC grants, durable SQLite audit ({records_per_action} records/action), \
         local runner isolation = {isolation}"
    );
    println!(
        "{:<24} {:>6} {:>8} {:>10} {:>10} {:>10} {:>12} {:>16}",
        "case", "agents", "actions", "p50 ms", "p99 ms", "max ms", "actions/s", "p50 / baseline"
    );
    // Cases a `--bench` filter left out have no actions.
    for s in summaries.iter().filter(|s| s.actions > 0) {
        let ratio = find("baseline_decide_append", s.agents)
            .map(|b| format!("{:.1}x", ms(s.p50) / ms(b.p50).max(f64::MIN_POSITIVE)))
            .unwrap_or_default();
        println!(
            "{:<24} {:>6} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>12.0} {:>16}",
            s.name,
            s.agents,
            s.actions,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            s.per_second,
            ratio
        );
    }
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    if let (Some(noop), Some(floor)) = (find("noop_runner", 1), find("baseline_two_fsyncs", 1)) {
        let ratio = ms(noop.p50) / ms(floor.p50).max(f64::MIN_POSITIVE);
        println!(
            "target no-op runner p50 <= 1.5 x two sequential 4 KiB fdatasync (1 agent): {:.3} ms \
             = {ratio:.2} x {:.3} ms -> {}",
            ms(noop.p50),
            ms(floor.p50),
            verdict(ratio <= 1.5)
        );
        if let (Some(trail), Some(mem)) =
            (find("baseline_audit_trail", 1), find("memory_doubles", 1))
        {
            println!(
                "  of which the trail's two durable commits take {:.3} ms (p50, made directly on \
                 the sink) and the pipeline on in-memory doubles {:.3} ms",
                ms(trail.p50),
                ms(mem.p50)
            );
        }
        if let Some(sqlite) = find("baseline_sqlite_commits", 1) {
            println!(
                "  floor: the same two commits on a plain SQLite connection (one thread, no sqlx) \
                 take {:.3} ms p50 ({:.2} x the fsync floor)",
                ms(sqlite.p50),
                ms(sqlite.p50) / ms(floor.p50).max(f64::MIN_POSITIVE)
            );
        }
    }
    if let Some(s) = find("noop_runner", AGENTS) {
        println!(
            "target no-op runner >= 10k actions/s at {AGENTS} agents, durable audit: {:.0}/s -> {}",
            s.per_second,
            verdict(s.per_second >= 10_000.0)
        );
    }
    if let (Some(trail), Some(noop)) = (
        find("baseline_audit_trail", AGENTS),
        find("noop_runner", AGENTS),
    ) {
        println!(
            "  bound: the trail's two durable commits per action at {AGENTS} agents sustain {:.0} \
             actions/s alone; the no-op gateway reaches {:.0}% of that",
            trail.per_second,
            100.0 * noop.per_second / trail.per_second.max(f64::MIN_POSITIVE)
        );
    }
    for agents in [1, AGENTS] {
        for (case, what) in [
            (
                "noop_runner",
                "SQLite, process-crash durable (embedded default)",
            ),
            ("noop_power_loss_state", "SQLite, power-loss durable"),
        ] {
            if let (Some(durable), Some(memory)) =
                (find(case, agents), find("noop_memory_state", agents))
            {
                println!(
                    "state store at {agents} agents: {what} (3 writes/action) p50 {:.3} ms, \
                     {:.0}/s vs in memory p50 {:.3} ms, {:.0}/s -> p50 {:.2} x, throughput \
                     {:.2} x",
                    ms(durable.p50),
                    durable.per_second,
                    ms(memory.p50),
                    memory.per_second,
                    ms(durable.p50) / ms(memory.p50).max(f64::MIN_POSITIVE),
                    durable.per_second / memory.per_second.max(f64::MIN_POSITIVE)
                );
            }
        }
    }
    if let Some(local) = find("local_job", 1) {
        println!(
            "target local sandbox ({isolation}) p50 <= 3 ms (1 agent): {:.3} ms -> {}",
            ms(local.p50),
            verdict(local.p50 <= Duration::from_millis(3))
        );
    }
    if let Some(local) = find("local_job", AGENTS) {
        println!(
            "target local sandbox ({isolation}) >= 600 actions/s at {AGENTS} agents: {:.0}/s \
             (p50 {:.1} ms) -> {}",
            local.per_second,
            ms(local.p50),
            verdict(local.per_second >= 600.0)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! [`EmbeddedRego`]: the policy contract evaluated in-process by regorus, a pure-Rust Rego
//! interpreter. The same `.rego` files run unchanged on an OPA server.
//!
//! Policies are parsed and prepared once; each decision evaluates a copy of the prepared engine
//! (see [`EvalStrategy`]), so decisions never re-parse and never share mutable state. A reload
//! prepares a new engine off to the side and swaps it in atomically: decisions already running
//! finish on the policies they started with.

use crate::contract::{DecisionPath, InputLimits, POLICY_UNDEFINED, parse_decision};
use crate::error::SetupError;
use crate::source::{LoadedPolicies, Source};
use async_trait::async_trait;
use gateway_core::policy::{Decision, PolicyDecider, PolicyError, PolicyInput};
use regorus::{CompiledPolicy, Engine, LimitError};
use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// The longest engine message carried into a reason (reasons end up in audit records).
const MAX_MESSAGE_CHARS: usize = 1024;

/// How each decision gets a private engine from the prepared one.
///
/// All three are thread-safe and give the same decisions; `benches/policy.rs` measures them on
/// the reference policy. The default, [`EvalStrategy::Pool`], was the fastest measured (with
/// `Compiled` within noise) and, unlike `Compiled`, enforces
/// [`EmbeddedRegoBuilder::eval_timeout`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvalStrategy {
    /// Clone the prepared engine for every decision.
    ClonePerCall,
    /// Keep a pool of prepared engines; take one per decision and put it back afterwards.
    #[default]
    Pool,
    /// Compile the decision rule once (`Engine::compile_with_entrypoint`) and evaluate the
    /// compiled policy per decision. regorus gives engines made from a compiled policy no
    /// per-engine time limit, so this strategy does NOT enforce `eval_timeout`.
    Compiled,
}

/// Builds an [`EmbeddedRego`].
#[derive(Debug, Clone)]
pub struct EmbeddedRegoBuilder {
    sources: Vec<Source>,
    path: Result<DecisionPath, String>,
    limits: InputLimits,
    strategy: EvalStrategy,
    eval_timeout: Duration,
}

impl Default for EmbeddedRegoBuilder {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            path: Ok(DecisionPath::default()),
            limits: InputLimits::default(),
            strategy: EvalStrategy::default(),
            eval_timeout: Duration::from_millis(250),
        }
    }
}

impl EmbeddedRegoBuilder {
    /// Loads every `*.rego` file (except `*_test.rego`) under `dir`, recursively, and every
    /// `data.json` as data at its directory's path, as `opa run` does. Read at
    /// [`build`](Self::build) and again at each [`EmbeddedRego::reload`].
    pub fn policy_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.sources.push(Source::Dir(dir.into()));
        self
    }

    /// Adds a policy from a string; `name` is used in error messages.
    pub fn policy(mut self, name: impl Into<String>, rego: impl Into<String>) -> Self {
        self.sources.push(Source::Rego {
            name: name.into(),
            text: rego.into(),
        });
        self
    }

    /// Merges a JSON object into `data`.
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.sources.push(Source::Data(data));
        self
    }

    /// The rule to evaluate (default [`crate::DEFAULT_DECISION_PATH`]).
    pub fn decision_path(mut self, path: &str) -> Self {
        self.path = DecisionPath::parse(path).map_err(|e| e.to_string());
        self
    }

    /// Bounds on input documents (default [`InputLimits::default`]).
    pub fn input_limits(mut self, limits: InputLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How decisions get an engine (default [`EvalStrategy::Pool`], the fastest measured).
    pub fn strategy(mut self, strategy: EvalStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Wall-clock limit of one evaluation (default 250 ms); a policy that runs longer denies.
    /// Evaluation runs on the calling task, so this also bounds how long it blocks.
    pub fn eval_timeout(mut self, timeout: Duration) -> Self {
        self.eval_timeout = timeout;
        self
    }

    /// Loads, parses and prepares the policies.
    pub fn build(self) -> Result<EmbeddedRego, SetupError> {
        let path = self.path.map_err(SetupError::config)?;
        if self.sources.is_empty() {
            return Err(SetupError::policy("no policy sources configured"));
        }
        if self.eval_timeout.is_zero() {
            return Err(SetupError::config("eval_timeout must be positive"));
        }
        let config = Config {
            sources: self.sources,
            path,
            limits: self.limits,
            strategy: self.strategy,
            eval_timeout: self.eval_timeout,
        };
        let prepared = Prepared::load(&config)?;
        Ok(EmbeddedRego {
            current: RwLock::new(Arc::new(prepared)),
            config,
        })
    }
}

#[derive(Debug)]
struct Config {
    sources: Vec<Source>,
    path: DecisionPath,
    limits: InputLimits,
    strategy: EvalStrategy,
    eval_timeout: Duration,
}

/// One loaded, parsed and prepared version of the policies.
struct Prepared {
    /// Prepared engine: policies and data loaded, no input. Behind a mutex because regorus
    /// engines are `Send` but not `Sync`; it is only locked to clone it.
    template: Mutex<Engine>,
    compiled: Option<CompiledPolicy>,
    pool: Mutex<Vec<Engine>>,
    rule: String,
    policy_id: String,
}

impl Prepared {
    fn load(config: &Config) -> Result<Self, SetupError> {
        let loaded = LoadedPolicies::read(&config.sources, false)?;
        let mut engine = loaded.engine()?;
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: config.eval_timeout,
            // Checking the clock every 64 work units keeps the overhead negligible.
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        });
        let rule = config.path.rule();
        let package = rule.rsplit_once('.').map_or("", |(package, _)| package);
        let packages = engine
            .get_packages()
            .map_err(|e| SetupError::policy(e.to_string()))?;
        if !packages.iter().any(|p| p == package) {
            return Err(SetupError::policy(format!(
                "no loaded policy declares package {package} (loaded: {})",
                packages.join(", ")
            )));
        }
        // Probe once with an empty input: a rule that is not declared at all fails here, at
        // load time, rather than on every request.
        let mut probe = engine.clone();
        probe.set_input(regorus::Value::new_object());
        if let Err(e) = probe.eval_rule(rule.clone()) {
            let message = e.to_string();
            if message.contains("not a valid rule path") || message.contains("not found") {
                return Err(SetupError::policy(format!("{rule}: {message}")));
            }
        }
        let compiled = match config.strategy {
            EvalStrategy::Compiled => Some(
                engine
                    .compile_with_entrypoint(&rule.as_str().into())
                    .map_err(|e| SetupError::policy(format!("{rule}: {e}")))?,
            ),
            EvalStrategy::ClonePerCall | EvalStrategy::Pool => None,
        };
        Ok(Self {
            template: Mutex::new(engine),
            compiled,
            pool: Mutex::new(Vec::new()),
            policy_id: format!("{}@{}", config.path.rule(), loaded.digest()),
            rule,
        })
    }

    fn template(&self) -> Engine {
        // The template is never mutated after load, so a poisoned lock still holds a valid engine.
        self.template
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn evaluate(
        &self,
        strategy: EvalStrategy,
        input: regorus::Value,
    ) -> anyhow::Result<regorus::Value> {
        match (strategy, &self.compiled) {
            (EvalStrategy::Compiled, Some(compiled)) => compiled.eval_with_input(input),
            (EvalStrategy::Pool, _) => {
                let pooled = self
                    .pool
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop();
                let mut engine = pooled.unwrap_or_else(|| self.template());
                engine.set_input(input);
                let result = engine.eval_rule(self.rule.clone());
                // Only engines that evaluated without error go back: an error may leave state.
                if result.is_ok() {
                    let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
                    if pool.len() < MAX_POOLED {
                        pool.push(engine);
                    }
                }
                result
            }
            _ => {
                let mut engine = self.template();
                engine.set_input(input);
                engine.eval_rule(self.rule.clone())
            }
        }
    }
}

/// Engines kept by [`EvalStrategy::Pool`]; more concurrent decisions clone extra ones.
const MAX_POOLED: usize = 64;

/// A [`PolicyDecider`] that evaluates Rego in-process (see the module docs).
pub struct EmbeddedRego {
    current: RwLock<Arc<Prepared>>,
    config: Config,
}

impl std::fmt::Debug for EmbeddedRego {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRego")
            .field("policy_id", &self.policy_id())
            .field("strategy", &self.config.strategy)
            .finish_non_exhaustive()
    }
}

impl EmbeddedRego {
    /// A builder.
    pub fn builder() -> EmbeddedRegoBuilder {
        EmbeddedRegoBuilder::default()
    }

    /// Loads the policies and data under `dir` with the default settings.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Self, SetupError> {
        Self::builder().policy_dir(dir).build()
    }

    /// The id of the loaded policies: the decision rule and a digest of every policy and data
    /// source, e.g. `data.agent_gateway.authz.decision@sha256:0123456789ab`.
    pub fn policy_id(&self) -> String {
        self.current().policy_id.clone()
    }

    /// Re-reads every source and swaps the new policies in atomically. On error the previous
    /// policies stay in force. Decisions already running finish on the policies they started
    /// with. Returns the new policy id.
    pub fn reload(&self) -> Result<String, SetupError> {
        let prepared = Arc::new(Prepared::load(&self.config)?);
        let id = prepared.policy_id.clone();
        // Only an `Arc` is replaced under the lock, so a poisoned lock holds a valid value.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = prepared;
        tracing::info!(policy_id = %id, "embedded Rego policies reloaded");
        Ok(id)
    }

    /// Evaluates the decision rule for a raw input document and returns the raw decision
    /// document, or `None` when the rule is undefined for this input.
    pub fn evaluate_document(
        &self,
        input: &serde_json::Value,
    ) -> Result<Option<serde_json::Value>, PolicyError> {
        let encoded = self.config.limits.encode_document(input)?;
        self.evaluate_encoded(&encoded).map(|(doc, _)| doc)
    }

    /// Decides a raw input document (which must follow the contract).
    pub fn decide_document(&self, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        let encoded = self.config.limits.encode_document(input)?;
        self.decide_encoded(&encoded)
    }

    /// Decides synchronously (the work is CPU-bound; [`PolicyDecider::decide`] calls this).
    pub fn decide_sync(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let encoded = self.config.limits.encode(input)?;
        self.decide_encoded(&encoded)
    }

    fn current(&self) -> Arc<Prepared> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn decide_encoded(&self, encoded: &str) -> Result<Decision, PolicyError> {
        let (document, policy_id) = self.evaluate_encoded(encoded)?;
        let mut decision = match document {
            Some(document) => parse_decision(&document)?,
            None => Decision::deny(POLICY_UNDEFINED),
        };
        decision.policy_id = Some(policy_id);
        Ok(decision)
    }

    fn evaluate_encoded(
        &self,
        encoded: &str,
    ) -> Result<(Option<serde_json::Value>, String), PolicyError> {
        let prepared = self.current();
        let input = regorus::Value::from_json_str(encoded)
            .map_err(|e| PolicyError::invalid_input(format!("input is not valid JSON: {e}")))?;
        let strategy = self.config.strategy;
        let outcome = catch_unwind(AssertUnwindSafe(|| prepared.evaluate(strategy, input)))
            .map_err(|_| PolicyError::internal_msg("the Rego engine panicked"))?;
        let value = outcome.map_err(|e| self.engine_error(&e))?;
        if value == regorus::Value::Undefined {
            return Ok((None, prepared.policy_id.clone()));
        }
        let document = serde_json::to_value(&value).map_err(|e| {
            PolicyError::internal_msg(format!("decision cannot be converted to JSON: {e}"))
        })?;
        Ok((Some(document), prepared.policy_id.clone()))
    }

    fn engine_error(&self, error: &anyhow::Error) -> PolicyError {
        let timed_out = error.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<LimitError>(),
                Some(LimitError::TimeLimitExceeded { .. })
            )
        });
        if timed_out {
            return PolicyError::Timeout {
                after: self.config.eval_timeout,
            };
        }
        // `{:#}` keeps anyhow's context chain on one line.
        let message: String = format!("{error:#}")
            .trim()
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect();
        PolicyError::Evaluation { message }
    }
}

#[async_trait]
impl PolicyDecider for EmbeddedRego {
    async fn decide(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.decide_sync(input)
    }
}

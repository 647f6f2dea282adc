//! [`EmbeddedRego`]: the policy contract evaluated in-process by regorus, a pure-Rust Rego
//! interpreter. The same `.rego` files run unchanged on an OPA server.
//!
//! Policies are parsed and prepared once. By default the decision rule is then compiled to
//! regorus's bytecode (RVM) and each decision runs on a pooled virtual machine; the tree-walking
//! interpreter remains available (see [`EvalStrategy`]). Either way decisions never re-parse and
//! never share mutable state. A reload prepares new policies off to the side and swaps them in
//! atomically: decisions already running finish on the policies they started with.

use crate::contract::{
    DEFAULT_LISTING_PATH, DecisionPath, InputLimits, POLICY_UNDEFINED, parse_listing,
};
use crate::error::SetupError;
use crate::go_compat;
use crate::rego_value::{parse_rego_decision, to_json_value, to_rego_value};
use crate::source::{LoadedPolicies, Source};
use async_trait::async_trait;
use gateway_core::policy::{Decision, ListingInput, PolicyDecider, PolicyError, PolicyInput};
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::rvm::program::Program;
use regorus::rvm::vm::VmError;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{CompiledPolicy, Engine, LimitError};
use serde::Serialize;
use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// The longest engine message carried into a reason (reasons end up in audit records).
const MAX_MESSAGE_CHARS: usize = 1024;

/// How each decision gets a private evaluator from the prepared policies.
///
/// All are thread-safe and give the same decisions (the test suite checks them against each
/// other on the reference policy); `benches/policy.rs` measures them. The default,
/// [`EvalStrategy::Vm`], is several times faster than the interpreter strategies on the
/// reference policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvalStrategy {
    /// Compile the decision rule once to regorus's bytecode (RVM) and run each decision on a
    /// pooled virtual machine. Enforces [`EmbeddedRegoBuilder::eval_timeout`]. A policy that
    /// regorus cannot compile to bytecode (the compiler does not cover every Rego feature yet,
    /// e.g. `with`) is evaluated with [`EvalStrategy::Pool`] instead; a warning is logged and
    /// [`EmbeddedRego::active_strategy`] reports it.
    ///
    /// One known difference from OPA and the interpreter: a rule whose definitions produce
    /// conflicting values is *undefined* on the VM, where they raise an evaluation error. For
    /// the decision rule itself this is caught (an undefined decision is re-evaluated on the
    /// interpreter, which reports the conflict); inside helper rules it is not, so write
    /// policies in which an undefined helper can only deny (as the reference policy does), or
    /// choose [`EvalStrategy::Pool`].
    #[default]
    Vm,
    /// Clone the prepared interpreter engine for every decision.
    ClonePerCall,
    /// Keep a pool of prepared interpreter engines; take one per decision and put it back.
    Pool,
    /// Compile the decision rule once for the interpreter (`Engine::compile_with_entrypoint`)
    /// and evaluate the compiled policy per decision. regorus gives engines made from a
    /// compiled policy no per-engine time limit, so this strategy does NOT enforce
    /// `eval_timeout`.
    Compiled,
}

/// Builds an [`EmbeddedRego`].
#[derive(Debug, Clone)]
pub struct EmbeddedRegoBuilder {
    sources: Vec<Source>,
    path: Result<DecisionPath, String>,
    listing: Result<DecisionPath, String>,
    limits: InputLimits,
    strategy: EvalStrategy,
    eval_timeout: Duration,
}

impl Default for EmbeddedRegoBuilder {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            path: Ok(DecisionPath::default()),
            listing: DecisionPath::parse(DEFAULT_LISTING_PATH).map_err(|e| e.to_string()),
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

    /// The catalog listing rule (default [`crate::DEFAULT_LISTING_PATH`]), evaluated by
    /// [`PolicyDecider::visible_actions`]. A policy without it lists nothing.
    pub fn listing_path(mut self, path: &str) -> Self {
        self.listing = DecisionPath::parse(path).map_err(|e| e.to_string());
        self
    }

    /// Bounds on input documents (default [`InputLimits::default`]).
    pub fn input_limits(mut self, limits: InputLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How decisions are evaluated (default [`EvalStrategy::Vm`], the fastest measured).
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
        let listing = self.listing.map_err(SetupError::config)?;
        if self.sources.is_empty() {
            return Err(SetupError::policy("no policy sources configured"));
        }
        if self.eval_timeout.is_zero() {
            return Err(SetupError::config("eval_timeout must be positive"));
        }
        let config = Config {
            sources: self.sources,
            path,
            listing,
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
    listing: DecisionPath,
    limits: InputLimits,
    strategy: EvalStrategy,
    eval_timeout: Duration,
}

/// One loaded, parsed and prepared version of the policies.
struct Prepared {
    evaluator: Evaluator,
    rule: String,
    /// The listing rule, on the interpreter: listings are rare (an MCP session's tools/list),
    /// so they need neither bytecode nor a pool.
    listing: Interpreter,
    listing_rule: String,
    policy_id: String,
}

/// What evaluates decisions for one [`Prepared`] version.
enum Evaluator {
    /// [`EvalStrategy::ClonePerCall`] and [`EvalStrategy::Pool`].
    Interpreter(Interpreter),
    /// [`EvalStrategy::Compiled`].
    Compiled(CompiledPolicy),
    /// [`EvalStrategy::Vm`]: the decision rule as bytecode, with pooled machines.
    Vm {
        /// Consulted only when the VM finds the decision undefined (see [`Prepared::evaluate`]).
        interpreter: Interpreter,
        program: Arc<Program>,
        data: regorus::Value,
        timer: ExecutionTimerConfig,
        pool: Mutex<Vec<RegoVM>>,
    },
}

/// regorus's tree-walking interpreter: the prepared engine cloned per evaluation, or pooled.
struct Interpreter {
    /// Policies and data loaded, no input. Behind a mutex because regorus engines are `Send`
    /// but not `Sync`; it is only locked to clone it.
    template: Mutex<Engine>,
    /// `None` to clone the template for every evaluation.
    pool: Option<Mutex<Vec<Engine>>>,
}

impl Interpreter {
    fn new(engine: Engine, pooled: bool) -> Self {
        Self {
            template: Mutex::new(engine),
            pool: pooled.then(|| Mutex::new(Vec::new())),
        }
    }

    fn evaluate(&self, rule: &str, input: regorus::Value) -> anyhow::Result<regorus::Value> {
        let pooled = self.pool.as_ref().and_then(|p| lock(p).pop());
        let mut engine = pooled.unwrap_or_else(|| lock(&self.template).clone());
        engine.set_input(input);
        let result = engine.eval_rule(rule.to_owned());
        // Only engines that evaluated without error go back: an error may leave state.
        if let (Ok(_), Some(pool)) = (&result, &self.pool) {
            give_back(pool, engine);
        }
        result
    }
}

/// Machines and engines kept in a pool; more concurrent decisions create extra ones.
const MAX_POOLED: usize = 64;

/// The bytecode machine's instruction budget per decision. The wall-clock limit
/// (`eval_timeout`) is the real bound; this only has to be far above any sane policy (regorus's
/// default of 25,000 is not: a policy iterating over a few thousand data entries reaches it).
const VM_MAX_INSTRUCTIONS: usize = 100_000_000;

impl Prepared {
    fn load(config: &Config) -> Result<Self, SetupError> {
        let loaded = LoadedPolicies::read(&config.sources, false)?;
        let mut engine = loaded.engine()?;
        let timer = ExecutionTimerConfig {
            limit: config.eval_timeout,
            // Checking the clock every 64 work units keeps the overhead negligible.
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        };
        engine.set_execution_timer_config(timer);
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
        let listing = Interpreter::new(engine.clone(), false);
        let interpreter =
            |engine: Engine, pooled: bool| Evaluator::Interpreter(Interpreter::new(engine, pooled));
        let evaluator = match config.strategy {
            EvalStrategy::ClonePerCall => interpreter(engine, false),
            EvalStrategy::Pool => interpreter(engine, true),
            EvalStrategy::Compiled => Evaluator::Compiled(
                engine
                    .compile_with_entrypoint(&rule.as_str().into())
                    .map_err(|e| SetupError::policy(format!("{rule}: {e}")))?,
            ),
            EvalStrategy::Vm => {
                match Evaluator::vm(&engine, &rule, vm_timer(config.eval_timeout)) {
                    Ok(vm) => vm,
                    Err(reason) => {
                        tracing::warn!(%rule, %reason, "policy cannot be compiled to bytecode; using the interpreter pool");
                        interpreter(engine, true)
                    }
                }
            }
        };
        Ok(Self {
            evaluator,
            policy_id: format!("{}@{}", config.path.rule(), loaded.digest()),
            rule,
            listing,
            listing_rule: config.listing.rule(),
        })
    }

    fn strategy(&self) -> EvalStrategy {
        match &self.evaluator {
            Evaluator::Interpreter(Interpreter { pool: None, .. }) => EvalStrategy::ClonePerCall,
            Evaluator::Interpreter(Interpreter { pool: Some(_), .. }) => EvalStrategy::Pool,
            Evaluator::Compiled(_) => EvalStrategy::Compiled,
            Evaluator::Vm { .. } => EvalStrategy::Vm,
        }
    }

    /// Evaluates the decision rule; a decision that met a construct the embedded engine cannot
    /// evaluate as OPA would (see [`go_compat`]) is an error, whatever it produced.
    fn evaluate(&self, input: regorus::Value) -> Result<regorus::Value, EvalFailure> {
        go_compat::reset_divergence();
        let result = self.evaluate_unchecked(input);
        match go_compat::take_divergence() {
            Some(divergence) => Err(EvalFailure::Error(divergence)),
            None => result,
        }
    }

    /// Evaluates the listing rule, with the same divergence check as decisions.
    fn evaluate_listing(&self, input: regorus::Value) -> Result<regorus::Value, EvalFailure> {
        go_compat::reset_divergence();
        let result = self
            .listing
            .evaluate(&self.listing_rule, input)
            .map_err(EvalFailure::from);
        match go_compat::take_divergence() {
            Some(divergence) => Err(EvalFailure::Error(divergence)),
            None => result,
        }
    }

    fn evaluate_unchecked(&self, input: regorus::Value) -> Result<regorus::Value, EvalFailure> {
        match &self.evaluator {
            Evaluator::Compiled(compiled) => {
                compiled.eval_with_input(input).map_err(EvalFailure::from)
            }
            Evaluator::Interpreter(interpreter) => interpreter
                .evaluate(&self.rule, input)
                .map_err(EvalFailure::from),
            Evaluator::Vm {
                interpreter,
                program,
                data,
                timer,
                pool,
            } => {
                let mut vm = match lock(pool).pop() {
                    Some(vm) => vm,
                    None => new_vm(program, data, *timer).map_err(EvalFailure::Error)?,
                };
                vm.set_input(input.clone());
                let result = vm.execute();
                if result.is_ok() {
                    // Keep nothing of this request in the pool.
                    vm.set_input(regorus::Value::Null);
                    give_back(pool, vm);
                }
                match result {
                    // The VM makes a rule whose definitions conflict undefined, where OPA and
                    // the interpreter raise an evaluation error. An undefined decision (rare:
                    // a broken or misrouted policy) is therefore re-evaluated on the
                    // interpreter, so a conflict in the decision rule itself is reported as
                    // the same error OPA would give.
                    Ok(regorus::Value::Undefined) => interpreter
                        .evaluate(&self.rule, input)
                        .map_err(EvalFailure::from),
                    other => other.map_err(EvalFailure::from),
                }
            }
        }
    }
}

impl Evaluator {
    /// Compiles `rule` to bytecode and prepares one machine (which checks the data against the
    /// program's rules). `Err` says why the policy cannot run on the VM.
    fn vm(engine: &Engine, rule: &str, timer: ExecutionTimerConfig) -> Result<Self, String> {
        let compiled = engine
            .clone()
            .compile_with_entrypoint(&rule.into())
            .map_err(|e| format!("{e:#}"))?;
        let program =
            Compiler::compile_from_policy(&compiled, &[rule]).map_err(|e| format!("{e:#}"))?;
        // OPA's semantics for the builtins where regorus's differ (see go_compat).
        let mut program = Arc::try_unwrap(program).unwrap_or_else(|shared| (*shared).clone());
        go_compat::install_in_program(&mut program);
        let program = Arc::new(program);
        let data = engine.get_data();
        let first = new_vm(&program, &data, timer)?;
        Ok(Self::Vm {
            interpreter: Interpreter::new(engine.clone(), false),
            program,
            data,
            timer,
            pool: Mutex::new(vec![first]),
        })
    }
}

/// The machine counts one work unit per instruction, most of which take well under a
/// microsecond, so reading the clock every 1024 of them still stops a runaway policy close to
/// its deadline while keeping clock reads off a typical decision's path (a few hundred
/// instructions).
fn vm_timer(limit: std::time::Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(1024).unwrap_or(NonZeroU32::MIN),
    }
}

fn new_vm(
    program: &Arc<Program>,
    data: &regorus::Value,
    timer: ExecutionTimerConfig,
) -> Result<RegoVM, String> {
    let mut vm = RegoVM::new();
    vm.load_program(Arc::clone(program));
    // regorus values share their contents (`arc` feature): this clone is a reference count.
    vm.set_data(data.clone()).map_err(|e| e.to_string())?;
    vm.set_execution_timer_config(Some(timer));
    vm.set_max_instructions(VM_MAX_INSTRUCTIONS);
    Ok(vm)
}

fn give_back<T>(pool: &Mutex<Vec<T>>, item: T) {
    let mut pool = lock(pool);
    if pool.len() < MAX_POOLED {
        pool.push(item);
    }
}

/// Pools and templates are only pushed to, popped from or cloned under their lock, so a
/// poisoned lock still holds valid values.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why an evaluation produced no value.
enum EvalFailure {
    /// The policy ran out of its time (or instruction) budget.
    OverBudget,
    /// Any other engine error, with its message.
    Error(String),
}

impl From<anyhow::Error> for EvalFailure {
    fn from(error: anyhow::Error) -> Self {
        let timed_out = error.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<LimitError>(),
                Some(LimitError::TimeLimitExceeded { .. })
            )
        });
        if timed_out {
            return Self::OverBudget;
        }
        // `{:#}` keeps anyhow's context chain on one line.
        Self::Error(format!("{error:#}"))
    }
}

impl From<VmError> for EvalFailure {
    fn from(error: VmError) -> Self {
        match error {
            VmError::TimeLimitExceeded { .. } | VmError::InstructionLimitExceeded { .. } => {
                Self::OverBudget
            }
            other => Self::Error(other.to_string()),
        }
    }
}

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
    /// A builder. Policies come from a directory ([`policy_dir`](EmbeddedRegoBuilder::policy_dir))
    /// or as text; the decision rule must produce the decision document of the crate docs.
    ///
    /// ```
    /// use gateway_opa::EmbeddedRego;
    /// use serde_json::json;
    ///
    /// let rego = r#"
    ///     package agent_gateway.authz
    ///     default decision := {"allow": false, "reasons": ["not a read"]}
    ///     decision := {"allow": true, "max_ttl_seconds": 60} if input.action == "db.read"
    /// "#;
    /// let decider = EmbeddedRego::builder().policy("authz.rego", rego).build()?;
    /// let decision = decider.decide_document(&json!({"contract_version": 1, "action": "db.read"}))?;
    /// assert!(decision.allow);
    /// let decision = decider.decide_document(&json!({"contract_version": 1, "action": "db.drop"}))?;
    /// assert_eq!(decision.reasons, ["not a read"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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

    /// The strategy in force: the configured one, or [`EvalStrategy::Pool`] when
    /// [`EvalStrategy::Vm`] was asked for but the policies could not be compiled to bytecode.
    pub fn active_strategy(&self) -> EvalStrategy {
        self.current().strategy()
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
        self.config.limits.check_document_shape(input)?;
        let (value, _) = self.evaluate(input)?;
        if value == regorus::Value::Undefined {
            return Ok(None);
        }
        to_json_value(&value).map(Some)
    }

    /// Decides a raw input document (which must follow the contract).
    pub fn decide_document(&self, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        self.config.limits.check_document_shape(input)?;
        self.decide_checked(input)
    }

    /// Decides synchronously (the work is CPU-bound; [`PolicyDecider::decide`] calls this).
    pub fn decide_sync(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.config.limits.check_nesting(input)?;
        self.decide_checked(input)
    }

    /// Evaluates the listing rule synchronously ([`PolicyDecider::visible_actions`] calls
    /// this): the names it lists, undefined listing nothing.
    pub fn visible_actions_sync(&self, input: &ListingInput) -> Result<Vec<String>, PolicyError> {
        self.config.limits.check_listing_nesting(input)?;
        let (value, _) = self.evaluate_with(input, Prepared::evaluate_listing)?;
        if value == regorus::Value::Undefined {
            return parse_listing(None);
        }
        parse_listing(Some(&to_json_value(&value)?))
    }

    fn current(&self) -> Arc<Prepared> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Decides an input that passed the shape checks.
    fn decide_checked<T: Serialize + ?Sized>(&self, input: &T) -> Result<Decision, PolicyError> {
        let (value, policy_id) = self.evaluate(input)?;
        let mut decision = if value == regorus::Value::Undefined {
            Decision::deny(POLICY_UNDEFINED)
        } else {
            parse_rego_decision(&value)?
        };
        decision.policy_id = Some(policy_id);
        Ok(decision)
    }

    /// Evaluates an input that passed the shape checks (the size is checked here): the decision
    /// rule's value (`Undefined` when the rule is) and the id of the policies that made it.
    fn evaluate<T: Serialize + ?Sized>(
        &self,
        input: &T,
    ) -> Result<(regorus::Value, String), PolicyError> {
        self.evaluate_with(input, Prepared::evaluate)
    }

    /// [`evaluate`](Self::evaluate) with `rule` choosing which rule of the prepared policies.
    fn evaluate_with<T: Serialize + ?Sized>(
        &self,
        input: &T,
        rule: fn(&Prepared, regorus::Value) -> Result<regorus::Value, EvalFailure>,
    ) -> Result<(regorus::Value, String), PolicyError> {
        let prepared = self.current();
        // The input is already in memory in another form, so converting it before the size
        // check costs at most a copy; the conversion also bounds its JSON length.
        let (rego_input, json_len_bound) = to_rego_value(input).map_err(|e| {
            PolicyError::invalid_input(format!("input cannot be represented as JSON: {e}"))
        })?;
        self.config
            .limits
            .check_size_within(input, json_len_bound)?;
        let outcome = catch_unwind(AssertUnwindSafe(|| rule(&prepared, rego_input)))
            .map_err(|_| PolicyError::internal_msg("the Rego engine panicked"))?;
        let value = outcome.map_err(|e| self.engine_error(e))?;
        Ok((value, prepared.policy_id.clone()))
    }

    fn engine_error(&self, failure: EvalFailure) -> PolicyError {
        match failure {
            EvalFailure::OverBudget => PolicyError::Timeout {
                after: self.config.eval_timeout,
            },
            EvalFailure::Error(message) => PolicyError::Evaluation {
                message: message.trim().chars().take(MAX_MESSAGE_CHARS).collect(),
            },
        }
    }
}

#[async_trait]
impl PolicyDecider for EmbeddedRego {
    async fn decide(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.decide_sync(input)
    }

    async fn visible_actions(&self, input: &ListingInput) -> Result<Vec<String>, PolicyError> {
        self.visible_actions_sync(input)
    }
}

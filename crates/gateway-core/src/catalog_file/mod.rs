//! An [`ActionCatalog`] loaded from a TOML file (`docs/catalog.md` documents the format,
//! `docs/catalog.schema.json` is its JSON Schema).
//!
//! Why a file: an action was Rust code (a schema, a hand-written resource parser, a closure
//! building the job), so adding one meant a release, and reviewing one meant reading the
//! closure. A file says the same things declaratively, and the loader checks, before the
//! gateway serves anything, what the code could only get wrong at run time: the job uses only
//! params the schema defines and captures the pattern has, every capture is constrained, limits
//! are in range, and the schema agents are shown is byte for byte the one in the file.
//!
//! A loaded action is an ordinary [`ActionDef`]: its job builder is a closure over the parsed
//! template ([`JobTemplate`]), so the pipeline does not know where an action came from, and
//! code-defined actions work as before.

mod error;
mod resource;
mod schema_text;
mod scopes;
mod template;

pub use error::{CatalogFileError, Problem};
pub use resource::{CLASSES, Constraint, ResourcePattern};
pub use scopes::{ScopePattern, ScopeProblem};
pub use template::{EnvSource, JobTemplate};

use crate::action::{ActionCatalog, ActionDef};
use crate::params_schema::ParamsSchema;
use crate::runner::JobLimits;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// The largest catalog file the loader reads.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// The largest `max_params_bytes` an action may set.
pub const MAX_PARAMS_BYTES: usize = 1024 * 1024;
/// The longest `timeout_seconds` an action may set (a day).
pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;

/// A parsed and checked catalog file: its actions, ready to register.
///
/// ```
/// use gateway_core::catalog_file::CatalogFile;
///
/// let file = CatalogFile::parse(r#"
/// [[action]]
/// name = "app.restart"
/// description = "Restart one app (resource app:<name>)"
/// resource = "app:{name}"
/// captures = { name = "dns-label" }
/// scopes = ["app:{name}:restart"]
/// params = '{"type":"object"}'
/// [action.job]
/// program = "/usr/local/bin/restart"
/// env = { APP = { resource = "name" } }
/// "#)?;
/// let catalog = file.into_catalog();
/// assert!(catalog.get("app.restart").is_some());
/// # Ok::<(), gateway_core::catalog_file::CatalogFileError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CatalogFile {
    actions: Vec<ActionDef>,
}

impl CatalogFile {
    /// Parses and checks `text`. Never panics, whatever the text.
    pub fn parse(text: &str) -> Result<Self, CatalogFileError> {
        Self::parse_with_image(text, None)
    }

    /// [`CatalogFile::parse`], giving `default_image` to the jobs whose template names no
    /// `image` (for container runners).
    pub fn parse_with_image(
        text: &str,
        default_image: Option<&str>,
    ) -> Result<Self, CatalogFileError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(CatalogFileError::new(
                Problem::NotToml,
                format!("the file is larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        // Pass 1: TOML syntax, and each action's extent and name (to name the action in the
        // errors of pass 2, which only give a position).
        let outline: Outline = toml::from_str(text).map_err(|e| toml_error(text, &e, &[]))?;
        let extents: Vec<(std::ops::Range<usize>, String)> = outline
            .action
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = t
                    .get_ref()
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map_or_else(|| format!("#{}", i + 1), str::to_owned);
                (t.span(), name)
            })
            .collect();
        // Pass 2: the format.
        let doc: FileToml = toml::from_str(text).map_err(|e| toml_error(text, &e, &extents))?;
        let mut seen = BTreeSet::new();
        let mut actions = Vec::with_capacity(doc.action.len());
        for action in doc.action {
            let name = action.name.get_ref().clone();
            let start = action.name.span().start;
            let def = action
                .into_def(text, default_image)
                .map_err(|e| e.action(Some(&name)).at(text, start))?;
            if !seen.insert(name.clone()) {
                return Err(CatalogFileError::new(
                    Problem::BadName,
                    "another action has the same name",
                )
                .action(Some(&name))
                .field("name")
                .at(text, start));
            }
            actions.push(def);
        }
        Ok(Self { actions })
    }

    /// Reads and parses the file at `path`.
    pub fn from_path(
        path: &std::path::Path,
        default_image: Option<&str>,
    ) -> Result<Self, CatalogFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CatalogFileError::new(Problem::Io, format!("cannot read {}", path.display())).source(e)
        })?;
        Self::parse_with_image(&text, default_image)
    }

    /// The actions, in file order.
    pub fn actions(&self) -> &[ActionDef] {
        &self.actions
    }

    /// The actions registered in `catalog` (replacing ones of the same name).
    pub fn register_into(self, catalog: ActionCatalog) -> ActionCatalog {
        self.actions
            .into_iter()
            .fold(catalog, ActionCatalog::register)
    }

    /// A catalog of these actions alone, with default request limits.
    pub fn into_catalog(self) -> ActionCatalog {
        self.register_into(ActionCatalog::new())
    }
}

impl ActionCatalog {
    /// The catalog of a catalog file's text ([`CatalogFile::parse`], then
    /// [`CatalogFile::into_catalog`]).
    pub fn from_toml(text: &str) -> Result<Self, CatalogFileError> {
        CatalogFile::parse(text).map(CatalogFile::into_catalog)
    }
}

/// A TOML or format error from `toml`, with its position, field and (from `extents`) action.
fn toml_error(
    text: &str,
    e: &toml::de::Error,
    extents: &[(std::ops::Range<usize>, String)],
) -> CatalogFileError {
    let message = readable(e.message());
    // serde's refusals start with these words; anything else is the TOML parser's.
    let problem = if message.starts_with("unknown field") || message.starts_with("unknown variant")
    {
        Problem::UnknownField
    } else if message.starts_with("missing field") {
        Problem::MissingField
    } else if message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.starts_with("invalid length")
    {
        Problem::WrongType
    } else {
        Problem::NotToml
    };
    let mut error = CatalogFileError::new(problem, message.clone());
    if let Some(span) = e.span() {
        error = error.at(text, span.start);
        // Actions are in file order: the error is in the last one starting before it.
        if let Some((_, name)) = extents.iter().rev().find(|(r, _)| r.start <= span.start) {
            error = error.action(Some(name));
        }
        let quoted = message
            .split('`')
            .nth(1)
            .filter(|_| problem != Problem::WrongType);
        if let Some(field) = quoted
            .map(str::to_owned)
            .or_else(|| key_before(text, span.start))
        {
            error = error.field(field);
        }
    }
    error.source(e.clone())
}

/// serde's message, with its untagged-enum refusals said in the format's words.
fn readable(message: &str) -> String {
    if message.contains("untagged enum EnvToml") {
        "invalid type: an env value is \"text\", { param = \"…\" } (optionally with \
         default = \"…\") or { resource = \"…\" }"
            .to_owned()
    } else if message.contains("untagged enum CaptureToml") {
        format!(
            "invalid type: a capture constraint is a class ({}) or {{ regex = \"…\" }}",
            CLASSES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        message.to_owned()
    }
}

/// The key of `key = value` when `offset` is in the value, on its line.
fn key_before(text: &str, offset: usize) -> Option<String> {
    let head = text.get(..offset)?;
    let line = &head[head.rfind('\n').map_or(0, |i| i + 1)..];
    let before_value = &line[..line.rfind('=')?];
    let key = before_value.rsplit([',', '{']).next()?.trim();
    (!key.is_empty()).then(|| key.trim_matches('"').to_owned())
}

#[derive(Deserialize)]
struct Outline {
    #[serde(default)]
    action: Vec<Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    action: Vec<ActionToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionToml {
    name: Spanned<String>,
    description: String,
    params: Spanned<String>,
    #[serde(default)]
    resource: Option<Spanned<String>>,
    #[serde(default)]
    captures: BTreeMap<String, CaptureToml>,
    #[serde(default)]
    broker: Option<String>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    job: JobToml,
    #[serde(default)]
    limits: Option<Spanned<LimitsToml>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CaptureToml {
    Class(String),
    Regex(RegexToml),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegexToml {
    regex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobToml {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<EnvToml>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EnvToml {
    Literal(String),
    Param(ParamEnvToml),
    Resource(ResourceEnvToml),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamEnvToml {
    param: String,
    #[serde(default)]
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceEnvToml {
    resource: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsToml {
    timeout_seconds: Option<u64>,
    memory_bytes: Option<u64>,
    cpu_millis: Option<u32>,
    pids: Option<u32>,
    max_output_bytes: Option<u64>,
    max_params_bytes: Option<u64>,
}

/// Variables the gateway and runners set themselves.
const RESERVED_ENV_PREFIX: &str = "GATEWAY_";

impl ActionToml {
    fn into_def(
        self,
        text: &str,
        default_image: Option<&str>,
    ) -> Result<ActionDef, CatalogFileError> {
        let name = self.name.into_inner();
        if name.is_empty()
            || name.len() > 128
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(CatalogFileError::new(
                Problem::BadName,
                "a name is 1 to 128 characters, no spaces or control characters",
            )
            .field("name"));
        }
        let schema = params_schema(text, &self.params)?;
        let defined: BTreeSet<String> = schema
            .as_value()
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();

        let resource = match &self.resource {
            Some(pattern) => {
                let constraints = self
                    .captures
                    .iter()
                    .map(|(k, v)| {
                        let c = match v {
                            CaptureToml::Class(c) => Constraint::Class(c.clone()),
                            CaptureToml::Regex(r) => Constraint::Regex(r.regex.clone()),
                        };
                        (k.clone(), c)
                    })
                    .collect();
                let compiled = ResourcePattern::new(pattern.get_ref(), &constraints)
                    .map_err(|e| e.field("resource").at(text, pattern.span().start))?;
                Some(Arc::new(compiled))
            }
            None if !self.captures.is_empty() => {
                return Err(CatalogFileError::new(
                    Problem::BadResourcePattern,
                    "`captures` without a `resource` pattern",
                )
                .field("captures"));
            }
            None => None,
        };

        let mut scopes = Vec::with_capacity(self.scopes.len());
        for (i, scope) in self.scopes.iter().enumerate() {
            let at =
                |e: CatalogFileError| e.field(format!("scopes[{i}]")).at(text, scope.span().start);
            let pattern = ScopePattern::new(scope.get_ref(), resource.as_deref()).map_err(|p| {
                at(match p {
                    ScopeProblem::Malformed(m) => CatalogFileError::new(
                        Problem::BadScope,
                        format!("{:?}: {m}", scope.get_ref()),
                    ),
                    ScopeProblem::UndefinedCapture(c) => CatalogFileError::new(
                        Problem::UndefinedCapture,
                        format!("scope uses {{{c}}}, which the resource pattern does not capture"),
                    ),
                })
            })?;
            scopes.push(pattern);
        }

        let (limits, max_params_bytes) = limits(text, self.limits.as_ref())?;
        let job = self.job;
        if job.program.is_empty() {
            return Err(
                CatalogFileError::new(Problem::BadJob, "the program is empty").field("job.program"),
            );
        }
        let mut env = BTreeMap::new();
        for (var, source) in job.env {
            let field = format!("job.env.{var}");
            let at = source.span().start;
            let fail = |p: Problem, m: String| {
                CatalogFileError::new(p, m)
                    .field(field.clone())
                    .at(text, at)
            };
            if !valid_env_name(&var) {
                return Err(fail(
                    Problem::BadJob,
                    "a variable name is a letter or `_`, then letters, digits or `_`".into(),
                ));
            }
            if var.starts_with(RESERVED_ENV_PREFIX) {
                return Err(fail(
                    Problem::BadJob,
                    format!("names starting with {RESERVED_ENV_PREFIX} are the gateway's"),
                ));
            }
            let source = match source.into_inner() {
                EnvToml::Literal(s) => EnvSource::Literal(s),
                EnvToml::Param(p) => {
                    if !defined.contains(&p.param) {
                        return Err(fail(
                            Problem::UndefinedParam,
                            format!("param {:?} is not in the schema's properties", p.param),
                        ));
                    }
                    EnvSource::Param {
                        name: p.param,
                        default: p.default,
                    }
                }
                EnvToml::Resource(r) => {
                    if !resource
                        .as_ref()
                        .is_some_and(|p| p.has_capture(&r.resource))
                    {
                        return Err(fail(
                            Problem::UndefinedCapture,
                            format!("capture {{{}}} is not in the resource pattern", r.resource),
                        ));
                    }
                    EnvSource::Capture(r.resource)
                }
            };
            if matches!(&source, EnvSource::Literal(s) | EnvSource::Param { default: Some(s), .. } if s.contains('\0'))
            {
                return Err(fail(Problem::BadJob, "a value holds a NUL byte".into()));
            }
            env.insert(var, source);
        }
        let mut command = Vec::with_capacity(job.args.len() + 1);
        command.push(job.program);
        command.extend(job.args);
        if command.iter().any(|a| a.contains('\0')) {
            return Err(CatalogFileError::new(
                Problem::BadJob,
                "the program or an argument holds a NUL byte",
            )
            .field("job.args"));
        }
        let template = JobTemplate {
            command,
            image: job.image.or_else(|| default_image.map(str::to_owned)),
            env,
            limits,
        };

        let scope_resource = resource.clone();
        let mut def = ActionDef::new(name, self.description, template.into_builder(resource));
        def.params_schema = schema;
        def.max_params_bytes = max_params_bytes;
        def.broker = self.broker;
        Ok(def.with_allowed_scopes(move |request, scope| {
            let captures = match &scope_resource {
                Some(p) => match p.captures(&request.resource) {
                    Some(c) => c,
                    None => return false,
                },
                None => BTreeMap::new(),
            };
            scopes.iter().any(|p| p.matches(scope, &captures))
        }))
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where the content of the string value at `span` starts in `text`: found for literal strings
/// (kept as written), else the value's own position.
fn content_start(text: &str, value: &Spanned<String>) -> usize {
    let span = value.span();
    text.get(span.clone())
        .and_then(|raw| raw.find(value.get_ref().as_str()))
        .map_or(span.start, |i| span.start + i)
}

fn params_schema(text: &str, params: &Spanned<String>) -> Result<ParamsSchema, CatalogFileError> {
    let json = params.get_ref();
    let base = content_start(text, params);
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        let offset = offset_of(json, e.line(), e.column());
        CatalogFileError::new(Problem::BadSchema, format!("params is not JSON: {e}"))
            .field("params")
            .at(text, base + offset)
            .source(e)
    })?;
    if !value.is_object() {
        return Err(CatalogFileError::new(
            Problem::BadSchema,
            "params must be a JSON object (a schema)",
        )
        .field("params")
        .at(text, base));
    }
    schema_text::served_as_written(json, &value).map_err(|(offset, served)| {
        CatalogFileError::new(
            Problem::SchemaNotAsServed,
            format!(
                "params would be served differently from how it is written, from here on as \
                 {served:?}… (write keys in sorted order, numbers and strings as JSON's \
                 shortest form, no duplicate keys)"
            ),
        )
        .field("params")
        .at(text, base + offset)
    })?;
    ParamsSchema::new(value).map_err(|e| {
        CatalogFileError::new(Problem::BadSchema, e.to_string())
            .field("params")
            .at(text, base)
            .source(e)
    })
}

/// The byte offset of 1-based `line` and `column` in `text` (serde_json's error position).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset
                + l.char_indices()
                    .nth(column.saturating_sub(1))
                    .map_or(l.len(), |(o, _)| o);
        }
        offset += l.len();
    }
    offset
}

fn limits(
    text: &str,
    limits: Option<&Spanned<LimitsToml>>,
) -> Result<(JobLimits, usize), CatalogFileError> {
    let mut out = JobLimits::default();
    let mut max_params = 16 * 1024;
    let Some(spanned) = limits else {
        return Ok((out, max_params));
    };
    let l = spanned.get_ref();
    let bad = |field: &str, m: String| {
        CatalogFileError::new(Problem::BadLimit, m)
            .field(format!("limits.{field}"))
            .at(text, spanned.span().start)
    };
    let range = |field: &str, v: u64, min: u64, max: u64| {
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(bad(field, format!("{v} is outside {min}..={max}")))
        }
    };
    if let Some(v) = l.timeout_seconds {
        out.timeout = Duration::from_secs(range("timeout_seconds", v, 1, MAX_TIMEOUT_SECONDS)?);
    }
    if let Some(v) = l.memory_bytes {
        out.memory_bytes = range("memory_bytes", v, 1024 * 1024, u64::MAX)?;
    }
    if let Some(v) = l.cpu_millis {
        out.cpu_millis =
            u32::try_from(range("cpu_millis", v.into(), 1, u32::MAX.into())?).unwrap_or(u32::MAX);
    }
    if let Some(v) = l.pids {
        out.pids = u32::try_from(range("pids", v.into(), 1, u32::MAX.into())?).unwrap_or(u32::MAX);
    }
    if let Some(v) = l.max_output_bytes {
        let v = range("max_output_bytes", v, 1, 1 << 30)?;
        out.max_output_bytes = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = l.max_params_bytes {
        let v = range("max_params_bytes", v, 2, MAX_PARAMS_BYTES as u64)?;
        max_params = usize::try_from(v).unwrap_or(MAX_PARAMS_BYTES);
    }
    Ok((out, max_params))
}

#[cfg(test)]
mod tests;

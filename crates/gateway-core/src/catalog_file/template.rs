//! The job template: a fixed program and arguments, and the environment that carries the
//! request's params and resource captures into the job.
//!
//! Params and captures reach the job only as environment variables, never spliced into the
//! program or its arguments (which are literal: there is no substitution syntax at all), so an
//! agent's string cannot become shell code or an extra argument. The template is checked when
//! the file is loaded: a variable taken from a param the schema does not define, or from a
//! capture the resource pattern does not have, is refused then, not at the first request.

use super::resource::ResourcePattern;
use crate::action::{ActionRequest, JobBuildError};
use crate::identity::AgentIdentity;
use crate::runner::{JobLimits, JobSpec};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where one environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// Fixed text.
    Literal(String),
    /// A top-level param: strings as they are, whole numbers in decimal (`3.0` is `3`), other
    /// numbers and booleans as JSON writes them, `null` as empty, arrays and objects as compact
    /// JSON. When the param is absent the variable is `default`, or unset without one.
    Param {
        /// The param's name.
        name: String,
        /// The value when the param is absent.
        default: Option<String>,
    },
    /// A capture of the resource pattern.
    Capture(String),
}

/// A checked job template.
#[derive(Debug, Clone)]
pub struct JobTemplate {
    /// `command[0]` and its arguments, literal.
    pub command: Vec<String>,
    /// The image for container runners.
    pub image: Option<String>,
    /// The job's plain environment.
    pub env: BTreeMap<String, EnvSource>,
    /// The job's limits (the pipeline tightens them by policy and grant).
    pub limits: JobLimits,
}

impl JobTemplate {
    /// The job of `request`. Fails only if the resource does not match the action's pattern.
    pub fn build(
        &self,
        resource: Option<&ResourcePattern>,
        request: &ActionRequest,
        who: &AgentIdentity,
    ) -> Result<JobSpec, JobBuildError> {
        let captures = match resource {
            Some(pattern) => pattern.captures(&request.resource).ok_or_else(|| {
                JobBuildError::new(format!(
                    "resource must match {}, got {:?}",
                    pattern.as_str(),
                    crate::text::truncate(&request.resource, 200)
                ))
            })?,
            None => BTreeMap::new(),
        };
        let mut spec = JobSpec::new(request.id, who.id.clone(), self.command.clone());
        spec.image = self.image.clone();
        spec.limits = self.limits.clone();
        for (var, source) in &self.env {
            let value = match source {
                EnvSource::Literal(s) => Some(s.clone()),
                EnvSource::Param { name, default } => request
                    .params
                    .get(name)
                    .map(env_text)
                    .or_else(|| default.clone()),
                // Checked at load time: the pattern has every capture the template uses.
                EnvSource::Capture(name) => captures.get(name).cloned(),
            };
            if let Some(value) = value {
                spec.env.insert(var.clone(), value);
            }
        }
        Ok(spec)
    }

    /// The template as a [`JobBuilder`](crate::action::JobBuilder).
    pub fn into_builder(
        self,
        resource: Option<Arc<ResourcePattern>>,
    ) -> impl Fn(&ActionRequest, &AgentIdentity) -> Result<JobSpec, JobBuildError> + Send + Sync + 'static
    {
        move |request, who| self.build(resource.as_deref(), request, who)
    }
}

/// A param's value as environment text.
pub(crate) fn env_text(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                return n.to_string();
            }
            match n.as_f64() {
                // Exact below 2^53: a JSON Schema integer written `3.0` is `3`.
                Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => {
                    format!("{}", f as i64)
                }
                _ => n.to_string(),
            }
        }
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_become_environment_text() {
        assert_eq!(env_text(&json!("a b")), "a b");
        assert_eq!(env_text(&json!(3)), "3");
        assert_eq!(env_text(&json!(-3)), "-3");
        assert_eq!(env_text(&json!(3.0)), "3");
        assert_eq!(env_text(&json!(2.5)), "2.5");
        assert_eq!(env_text(&json!(true)), "true");
        assert_eq!(env_text(&json!(null)), "");
        assert_eq!(env_text(&json!({"a": [1]})), "{\"a\":[1]}");
    }
}

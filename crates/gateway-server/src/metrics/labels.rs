//! The closed label sets of the gateway's metrics.
//!
//! Every labelled family is keyed by [`One<V>`], whose only value is a `V`: a Rust enum with a
//! fixed list of members ([`Closed::ALL`]). No label value comes from a request (no action name,
//! agent id, resource or error text), so nothing a caller sends can create a series: the number
//! of series is fixed when the code is compiled, and every one of them exists (at zero) from
//! the start, so dashboards and rate queries never see a series appear.

use gateway_core::{ErrorKind, JobStatus};
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

/// A label whose values are a fixed list.
pub(crate) trait Closed:
    Copy + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static
{
    /// The label's name.
    const KEY: &'static str;
    /// Every value, in the order series are first written.
    const ALL: &'static [Self];
    /// The value as written in the exposition.
    fn as_str(self) -> &'static str;
}

/// The label set of one closed label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct One<V>(pub(crate) V);

impl<V: Closed> EncodeLabelSet for One<V> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        (V::KEY, self.0.as_str()).encode(encoder.encode_label())
    }
}

/// Declares a closed label enum: `name => "value"` for each member.
macro_rules! closed_label {
    ($(#[$doc:meta])* $name:ident, $key:literal, { $($member:ident => $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum $name { $($member),+ }

        impl Closed for $name {
            const KEY: &'static str = $key;
            const ALL: &'static [Self] = &[$(Self::$member),+];
            fn as_str(self) -> &'static str {
                match self { $(Self::$member => $value),+ }
            }
        }
    };
}

closed_label!(
    /// A policy decision.
    DecisionLabel, "decision", { Allow => "allow", Deny => "deny" }
);
closed_label!(
    /// Whether a grant was issued.
    GrantLabel, "result", { Issued => "issued", Failed => "failed" }
);
closed_label!(
    /// Whether a revocation succeeded.
    RevocationLabel, "result", { Ok => "ok", Failed => "failed" }
);
closed_label!(
    /// A step of a human approval.
    ApprovalLabel, "event", { Requested => "requested", Approved => "approved", Denied => "denied" }
);
closed_label!(
    /// How a job the runner was given ended.
    RunLabel, "status", {
        Succeeded => "succeeded",
        Failed => "failed",
        Signaled => "signaled",
        TimedOut => "timed_out",
        OomKilled => "oom_killed",
        Cancelled => "cancelled",
        Error => "error",
    }
);

impl RunLabel {
    /// The series of a finished job, or of a runner error (`None`).
    pub(crate) fn of(status: Option<&JobStatus>) -> Self {
        match status {
            Some(JobStatus::Exited { code: 0 }) => Self::Succeeded,
            Some(JobStatus::Exited { .. }) => Self::Failed,
            Some(JobStatus::Signaled { .. }) => Self::Signaled,
            Some(JobStatus::TimedOut) => Self::TimedOut,
            Some(JobStatus::OomKilled) => Self::OomKilled,
            Some(JobStatus::Cancelled) => Self::Cancelled,
            // `JobStatus` is non-exhaustive: a status added later is counted with errors
            // rather than given a series nobody declared.
            #[allow(unreachable_patterns)]
            Some(_) | None => Self::Error,
        }
    }
}

/// How an action submitted through the front ended: it ran, or it was refused with a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ResultLabel {
    /// The action ran to an outcome (whatever the job's exit status).
    Ran,
    /// The action was refused or failed with this kind.
    Refused(ErrorKind),
}

/// Every refusal kind with a series of its own.
pub(crate) const KINDS: [ErrorKind; 10] = [
    ErrorKind::Unauthenticated,
    ErrorKind::Denied,
    ErrorKind::InvalidInput,
    ErrorKind::RateLimited,
    ErrorKind::Unavailable,
    ErrorKind::Timeout,
    ErrorKind::Cancelled,
    ErrorKind::NotFound,
    ErrorKind::Conflict,
    ErrorKind::Internal,
];

const RESULTS: [ResultLabel; 11] = {
    let mut all = [ResultLabel::Ran; 11];
    let mut i = 0;
    while i < KINDS.len() {
        all[i + 1] = ResultLabel::Refused(KINDS[i]);
        i += 1;
    }
    all
};

impl ResultLabel {
    /// The series of a refusal of `kind`; a kind added to `ErrorKind` later (it is
    /// non-exhaustive) is counted as `internal` until it is given a series here.
    pub(crate) fn refused(kind: ErrorKind) -> Self {
        if KINDS.contains(&kind) {
            Self::Refused(kind)
        } else {
            Self::Refused(ErrorKind::Internal)
        }
    }
}

impl Closed for ResultLabel {
    const KEY: &'static str = "result";
    const ALL: &'static [Self] = &RESULTS;
    fn as_str(self) -> &'static str {
        match self {
            Self::Ran => "ran",
            Self::Refused(kind) => kind.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_kind_has_its_own_value() {
        let values: Vec<_> = ResultLabel::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(values.len(), 11);
        let mut unique = values.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), values.len(), "{values:?}");
        assert!(values.contains(&"ran") && values.contains(&"rate_limited"));
    }

    #[test]
    fn every_run_status_maps_to_a_declared_series() {
        let statuses = [
            JobStatus::Exited { code: 0 },
            JobStatus::Exited { code: 3 },
            JobStatus::Signaled { signal: 9 },
            JobStatus::TimedOut,
            JobStatus::OomKilled,
            JobStatus::Cancelled,
        ];
        let labels: Vec<_> = statuses.iter().map(|s| RunLabel::of(Some(s))).collect();
        assert_eq!(&labels[..], &RunLabel::ALL[..6]);
        assert_eq!(RunLabel::of(None), RunLabel::Error);
    }
}

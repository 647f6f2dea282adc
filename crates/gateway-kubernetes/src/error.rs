//! Mapping kube client errors onto the core's backend-neutral error enums.

use gateway_core::{BrokerError, RunnerError};

/// The backend-neutral class of a kube error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Invalid,
    Unavailable,
    NotFound,
    Conflict,
    Internal,
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A delete that found nothing to delete (404) has done its job: the object is gone.
pub(crate) fn deleted_or_gone(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        other => other,
    }
}

pub(crate) fn classify(e: &kube::Error) -> Class {
    match e {
        kube::Error::Api(s) => match s.code {
            400 | 422 => Class::Invalid,
            404 => Class::NotFound,
            // 410 Gone: a resource version too old (watch) - the state moved on.
            409 | 410 => Class::Conflict,
            // 401/403: the gateway's own identity lacks a permission; 429/5xx: the server is
            // overloaded or failing. Either way the backend refuses to work right now.
            _ => Class::Unavailable,
        },
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::HttpError(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::Auth(_)
        | kube::Error::RustlsTls(_)
        | kube::Error::TlsRequired
        | kube::Error::InferConfig(_)
        | kube::Error::InferKubeconfig(_) => Class::Unavailable,
        _ => Class::Internal,
    }
}

fn describe(what: &str, e: &kube::Error) -> String {
    match e {
        // The API server's message names the object and the reason; it carries no secrets.
        kube::Error::Api(s) => format!("{what}: {} ({}): {}", s.code, s.reason, s.message),
        other => format!("{what}: {other}"),
    }
}

pub(crate) fn runner(what: &str, e: kube::Error) -> RunnerError {
    let message = describe(what, &e);
    match classify(&e) {
        Class::Invalid => RunnerError::InvalidInput { message },
        Class::NotFound => RunnerError::NotFound { message },
        Class::Conflict => RunnerError::Conflict { message },
        Class::Unavailable => RunnerError::unavailable(message, e),
        Class::Internal => RunnerError::internal(message, e),
    }
}

pub(crate) fn broker(what: &str, e: kube::Error) -> BrokerError {
    let message = describe(what, &e);
    match classify(&e) {
        Class::Invalid => BrokerError::InvalidInput { message },
        Class::NotFound => BrokerError::NotFound { message },
        Class::Conflict => BrokerError::Conflict { message },
        Class::Unavailable => BrokerError::unavailable(message, e),
        Class::Internal => BrokerError::internal(message, e),
    }
}

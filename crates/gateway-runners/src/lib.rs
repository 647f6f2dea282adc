//! agent-gateway backends: runners (work in progress).

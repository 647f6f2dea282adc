//! agent-gateway backends: audit (work in progress).

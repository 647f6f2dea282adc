//! agent-gateway backends: opa (work in progress).

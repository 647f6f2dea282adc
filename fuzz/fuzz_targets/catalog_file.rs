//! `gateway_core::catalog_file::CatalogFile::parse`: no text makes the loader panic, and every
//! action of a file it accepts builds its job and checks scopes without panicking, whatever the
//! request's resource and params.
#![no_main]

use gateway_core::catalog_file::CatalogFile;
use gateway_core::{ActionRequest, AgentId, AgentIdentity, AuthMethod};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = CatalogFile::parse(text) else {
        return;
    };
    let Ok(agent) = AgentId::new("agent:fuzz") else {
        return;
    };
    let who = AgentIdentity::new(agent, "fuzz", AuthMethod::StaticKey { key_id: "k".into() });
    // The last line of the input, less a leading `# `, doubles as a resource and a scope.
    let probe = text.lines().last().unwrap_or("");
    let probe = probe.strip_prefix("# ").unwrap_or(probe);
    for def in file.actions() {
        let request = ActionRequest::new(def.name.clone(), probe)
            .with_params(serde_json::json!({"sql": probe, "replicas": 3, "n": [1, {"a": null}]}));
        let _ = (def.job)(&request, &who);
        if let Some(allowed) = &def.allowed_scopes {
            let _ = allowed(&request, probe);
        }
    }
});

//! The test vectors of `docs/audit-format.md` are what the code computes: an independent
//! verifier written from that document hashes and checks signatures byte for byte as we do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_audit::checkpoint::CHECKPOINT_DOMAIN;
use gateway_audit::{Checkpoint, CheckpointSigner, SealedRecord, SoftwareSigner, StoredCheckpoint};
use gateway_core::audit::AuditEvent;
use gateway_core::audit::chain::{GENESIS_PREV_HASH, body_hash, seal};
use std::collections::BTreeMap;

/// The `name = value` lines of the document's ```text test-vectors``` block.
fn vectors() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/audit-format.md"
    ))
    .unwrap();
    let start = doc
        .find("```text test-vectors\n")
        .expect("no test-vectors block")
        + 21;
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end]
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn documented_vectors_match_the_code() {
    let v = vectors();
    let event: AuditEvent = serde_json::from_str(&v["event"]).unwrap();
    let record = seal("gw", 1, GENESIS_PREV_HASH, event).unwrap();
    let body = SealedRecord::new(record.clone()).unwrap().body;
    let computed = [
        ("body", body.clone()),
        ("hash", record.hash.clone()),
        (
            "hash_of_body",
            body_hash(GENESIS_PREV_HASH, body.as_bytes()).unwrap(),
        ),
        ("domain_hex", hex::encode(CHECKPOINT_DOMAIN)),
    ];
    if std::env::var("PRINT_VECTORS").is_ok() {
        for (k, c) in &computed {
            println!("{k} = {c}");
        }
    }
    // The edge cases of RFC 8785 an independent encoder gets wrong first: integers a double
    // cannot hold (recorded as strings), exponent forms, negative zero, keys ordered by UTF-16
    // code units (U+1F600's surrogates before U+FB00), and escapes.
    let edge: AuditEvent = serde_json::from_str(&v["edge_event"]).unwrap();
    let edge = seal("gw", 2, &record.hash, edge).unwrap();
    let edge_body = SealedRecord::new(edge.clone()).unwrap().body;
    let computed = [
        computed.to_vec(),
        vec![("edge_body", edge_body), ("edge_hash", edge.hash.clone())],
    ]
    .concat();
    if std::env::var("PRINT_VECTORS").is_ok() {
        for (k, c) in &computed[computed.len() - 2..] {
            println!("{k} = {c}");
        }
    }
    for (k, c) in &computed {
        assert_eq!(v.get(*k), Some(c), "vector {k}");
    }
    // The checkpoint over that record, signed by the documented secret key.
    let signer = SoftwareSigner::from_hex(&v["secret_key"]).unwrap();
    let stored = StoredCheckpoint {
        stream_id: "gw".into(),
        sequence: 1,
        head_hash: record.hash.clone(),
        time: v["checkpoint_time"].clone(),
        key_id: signer.key_id(),
        signature: v["signature"].clone(),
    };
    let cp = Checkpoint::from_stored(&stored).unwrap();
    let message = Checkpoint::message("gw", 1, &record.hash, cp.time).unwrap();
    if std::env::var("PRINT_VECTORS").is_ok() {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(
            &hex::decode(&v["secret_key"]).unwrap().try_into().unwrap(),
        );
        println!("public_key = {}", signer.key_id());
        println!(
            "message = {}",
            String::from_utf8_lossy(&message[CHECKPOINT_DOMAIN.len()..])
        );
        println!("signature = {}", hex::encode(key.sign(&message).to_bytes()));
    }
    assert_eq!(v["public_key"], signer.key_id());
    assert_eq!(
        v["message"].as_bytes(),
        &message[CHECKPOINT_DOMAIN.len()..],
        "checkpoint message after the prefix"
    );
    cp.verify_signature(&signer.verifying_key()).unwrap();
}

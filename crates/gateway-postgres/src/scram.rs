//! The SCRAM-SHA-256 verifier of a password (RFC 5802/7677, PostgreSQL's
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` form), computed on the gateway
//! like `psql`'s `\password` does: `CREATE ROLE … PASSWORD` then carries the verifier, never the
//! password, so the password is not in the statement text the server may log
//! (`log_statement`, `pg_stat_statements`, errors) nor on the admin connection.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// PostgreSQL's default iteration count (`scram_iterations`).
pub(crate) const ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of every length: `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA-256 takes keys of any length"),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (32 bytes), as SCRAM's `Hi()`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

/// The verifier for `password` with `salt`. `password` must be ASCII without control
/// characters (this crate's generated passwords are hex), for which SASLprep is the identity.
pub(crate) fn verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = hi(password.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, &[b"Client Key"]);
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(&salted, &[b"Server Key"]);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's inputs (password "pencil", salt `W22ZaJ0SNY7soEsUEjb6gQ==`, 4096
    /// iterations); the expected keys were computed independently with Python's
    /// `hashlib.pbkdf2_hmac` and `hmac`. The integration tests log in with generated passwords
    /// against a server that checks them.
    #[test]
    fn matches_the_rfc_7677_keys() {
        let salt = STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap_or_default();
        let v = verifier("pencil", &salt, 4096);
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }
}

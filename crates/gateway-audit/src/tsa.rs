//! [`TsaWitness`]: an RFC 3161 time-stamping authority as a checkpoint witness.
//!
//! For every checkpoint the witness asks the TSA (HTTP `POST`, `application/timestamp-query`)
//! to time-stamp the SHA-256 of the checkpoint's signed message ([`Checkpoint::message`]: the
//! domain prefix and the canonical JSON), with a fresh nonce and the TSA's certificate
//! requested, and keeps the checkpoint with the TSA's whole reply (a DER `TimeStampResp`, base64,
//! field `tsa_token`) as one line of a JSON-lines file in its own directory, like a
//! [`FileWitness`] (which reads that directory too). Anyone can check a token offline, e.g.
//! `openssl ts -verify -in reply.tsr -data message.bin -CAfile tsa-ca.pem`: it proves the
//! checkpoint existed by the TSA's time, which the log's host cannot back-date.
//!
//! Here the reply's status is checked (granted, or granted with modifications) and so is the
//! nonce; the token itself (imprint, signature, certificate chain) is checked offline by
//! [`crate::tsa_verify::verify_token`], as `gateway-audit verify --tsa-ca` does.

use crate::checkpoint::Checkpoint;
use crate::witness::{CheckpointWitness, FileWitness, WitnessError};
use async_trait::async_trait;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// A checkpoint witness backed by an RFC 3161 time-stamping authority; see the module docs.
#[derive(Debug)]
pub struct TsaWitness {
    url: String,
    client: reqwest::Client,
    file: FileWitness,
    name: String,
}

impl TsaWitness {
    /// A witness asking the TSA at `url` and keeping checkpoints and tokens in `dir`.
    pub fn new(url: &str, dir: impl AsRef<Path>) -> Result<Self, WitnessError> {
        let name = format!("tsa {url}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| WitnessError::unavailable(&name, "building the HTTP client", e))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            file: FileWitness::open(dir)?,
            name,
        })
    }

    /// The checkpoints of `stream_id` with their TSA replies (DER `TimeStampResp`).
    pub fn tokens(
        dir: impl AsRef<Path>,
        stream_id: &str,
    ) -> Result<Vec<(Checkpoint, Vec<u8>)>, WitnessError> {
        let path = dir.as_ref().join(crate::witness::WITNESS_FILE);
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| WitnessError::unavailable(&name, "reading the witness file", e))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| WitnessError::corrupt(&name, format!("line {}: {e}", i + 1)))?;
            let cp: Checkpoint = serde_json::from_value(value.clone())
                .map_err(|e| WitnessError::corrupt(&name, format!("line {}: {e}", i + 1)))?;
            let token = value
                .get("tsa_token")
                .and_then(|t| t.as_str())
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .ok_or_else(|| {
                    WitnessError::corrupt(&name, format!("line {}: no tsa_token", i + 1))
                })?;
            if cp.stream_id == stream_id {
                out.push((cp, token));
            }
        }
        Ok(out)
    }

    async fn stamp(&self, message: &[u8]) -> Result<Vec<u8>, WitnessError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        let mut nonce: [u8; 8] = rand::random();
        // A positive INTEGER in minimal DER: top bit clear, first byte not zero.
        nonce[0] = (nonce[0] & 0x7f) | 0x01;
        let request = timestamp_request(&digest, &nonce);
        let reply = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/timestamp-query")
            .body(request)
            .send()
            .await
            .map_err(|e| WitnessError::unavailable(&self.name, "asking the TSA", e))?;
        if !reply.status().is_success() {
            return Err(WitnessError::Unavailable {
                witness: self.name.clone(),
                message: format!("the TSA answered HTTP {}", reply.status()),
                source: None,
            });
        }
        let body = reply
            .bytes()
            .await
            .map_err(|e| WitnessError::unavailable(&self.name, "reading the TSA's reply", e))?
            .to_vec();
        match reply_status(&body) {
            Some(0 | 1) => {}
            Some(status) => {
                return Err(WitnessError::rejected(
                    &self.name,
                    format!("the TSA refused the request (PKIStatus {status})"),
                ));
            }
            None => {
                return Err(WitnessError::corrupt(
                    &self.name,
                    "the TSA's reply is not a TimeStampResp",
                ));
            }
        }
        // The reply must answer this request: it carries our nonce (DER INTEGER 02 08 …).
        let mut tagged = vec![0x02, 0x08];
        tagged.extend_from_slice(&nonce);
        if !body.windows(tagged.len()).any(|w| w == tagged) {
            return Err(WitnessError::corrupt(
                &self.name,
                "the TSA's reply does not carry the request's nonce",
            ));
        }
        Ok(body)
    }
}

#[async_trait]
impl CheckpointWitness for TsaWitness {
    fn name(&self) -> &str {
        &self.name
    }

    async fn witness(&self, cp: &Checkpoint) -> Result<(), WitnessError> {
        if !self.file.admits(cp)? {
            return Ok(());
        }
        let message = Checkpoint::message(&cp.stream_id, cp.sequence, &cp.head_hash, cp.time)
            .map_err(|e| WitnessError::corrupt(&self.name, e.to_string()))?;
        let token = self.stamp(&message).await?;
        let token = base64::engine::general_purpose::STANDARD.encode(token);
        self.file.witness_with(cp, Some(token)).await
    }

    async fn checkpoints(&self, stream_id: &str) -> Result<Vec<Checkpoint>, WitnessError> {
        self.file.checkpoints(stream_id).await
    }
}

/// A DER `TimeStampReq` (RFC 3161 §2.4.1): version 1, a SHA-256 message imprint, a nonce, and
/// `certReq` true.
fn timestamp_request(digest: &[u8; 32], nonce: &[u8; 8]) -> Vec<u8> {
    const SHA256: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
    ];
    let mut imprint = vec![0x30, 15 + 34];
    imprint.extend_from_slice(&SHA256);
    imprint.extend_from_slice(&[0x04, 0x20]);
    imprint.extend_from_slice(digest);
    let mut body = vec![0x02, 0x01, 0x01];
    body.extend_from_slice(&imprint);
    body.extend_from_slice(&[0x02, 0x08]);
    body.extend_from_slice(nonce);
    body.extend_from_slice(&[0x01, 0x01, 0xff]);
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap_or(0)];
    out.extend_from_slice(&body);
    out
}

/// One DER element at the start of `bytes`: (tag, contents, rest).
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The `PKIStatus` of a DER `TimeStampResp`, if it is one.
fn reply_status(reply: &[u8]) -> Option<u64> {
    let (0x30, resp, _) = tlv(reply)? else {
        return None;
    };
    let (0x30, status_info, _) = tlv(resp)? else {
        return None;
    };
    let (0x02, status, _) = tlv(status_info)? else {
        return None;
    };
    (status.len() <= 8).then(|| status.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_well_formed_der() {
        let req = timestamp_request(&[7; 32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let (tag, body, rest) = tlv(&req).unwrap();
        assert_eq!((tag, rest.len(), body.len()), (0x30, 0, 67));
        let (tag, version, body) = tlv(body).unwrap();
        assert_eq!((tag, version), (0x02, &[1u8][..]));
        let (tag, imprint, body) = tlv(body).unwrap();
        assert_eq!((tag, imprint.len()), (0x30, 49));
        assert_eq!(body, [0x02, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0x01, 0xff]);
        assert_eq!(
            reply_status(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02]),
            Some(2)
        );
        assert_eq!(reply_status(&[0x30, 0x05, 0x30]), None);
    }
}

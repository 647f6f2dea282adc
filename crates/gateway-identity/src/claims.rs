//! Registered-claim checks: issuer, audience and the time window.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The latest NumericDate accepted (9999-12-31T23:59:59Z); later values are nonsense.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// How a token's `aud` is matched against the configured audiences.
///
/// In both modes exactly one of the token's audiences may match a configured audience: a
/// token naming two of them is ambiguous and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudienceRule {
    /// The default: `aud` holds exactly one value (a string or a one-element array) and it is a
    /// configured audience. A token also addressed to other services is rejected, because every
    /// one of those services could replay it here.
    #[default]
    Single,
    /// RFC 7519 semantics: `aud` may hold other values as long as exactly one is a configured
    /// audience. Use only when the issuer cannot mint single-audience tokens.
    Contains,
}

/// The validated registered claims of a token.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    /// Expiry, in seconds since the Unix epoch.
    pub exp: f64,
}

/// The configured claim rules.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub audience_rule: AudienceRule,
    pub leeway: Duration,
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_seconds() -> f64 {
    // A clock before 1970 is a broken host; 0 then makes every token look expired (fail closed).
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(&v) => Ok(Some(v)),
            _ => Err(format!("\"{name}\" is out of range")),
        },
        Some(_) => Err(format!("\"{name}\" is not a NumericDate")),
    }
}

impl ClaimRules {
    /// Checks `iss`, `aud`, `exp` (required), `nbf` and `iat` at time `now`.
    pub(crate) fn check(&self, claims: &Map<String, Value>, now: f64) -> Result<Validated, String> {
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(_)) => return Err("wrong issuer".into()),
            Some(_) => return Err("\"iss\" is not a string".into()),
            None => return Err("missing \"iss\"".into()),
        }
        self.check_audience(claims.get("aud"))?;

        let leeway = self.leeway.as_secs_f64();
        let exp = numeric_date(claims, "exp")?.ok_or("missing \"exp\"")?;
        // RFC 7519: the current time must be before exp (plus the allowed clock skew).
        if now >= exp + leeway {
            return Err("token expired".into());
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now + leeway < nbf
        {
            return Err("token not valid yet (nbf)".into());
        }
        if let Some(iat) = numeric_date(claims, "iat")?
            && iat > now + leeway
        {
            return Err("token issued in the future (iat)".into());
        }
        Ok(Validated { exp })
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), String> {
        let values: Vec<&str> = match aud {
            None => return Err("missing \"aud\"".into()),
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => {
                let mut values = Vec::with_capacity(many.len());
                for v in many {
                    values.push(v.as_str().ok_or("\"aud\" holds a non-string")?);
                }
                values
            }
            Some(_) => return Err("\"aud\" is neither a string nor an array".into()),
        };
        if self.audience_rule == AudienceRule::Single && values.len() != 1 {
            return Err(format!(
                "\"aud\" must name exactly one audience (it names {})",
                values.len()
            ));
        }
        let matching = values
            .iter()
            .filter(|v| self.audiences.iter().any(|a| a == *v))
            .count();
        match matching {
            1 => Ok(()),
            0 => Err("wrong audience".into()),
            _ => Err("\"aud\" matches more than one configured audience".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(rule: AudienceRule) -> ClaimRules {
        ClaimRules {
            issuer: "https://issuer".into(),
            audiences: vec!["gw".into(), "gw2".into()],
            audience_rule: rule,
            leeway: Duration::from_secs(30),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn time_window_with_leeway() {
        let r = rules(AudienceRule::Single);
        let now = 1_000_000.0;
        let base = |extra: Value| {
            let mut c = claims(json!({"iss": "https://issuer", "aud": "gw", "exp": now + 60.0}));
            c.extend(claims(extra));
            c
        };
        assert!(r.check(&base(json!({})), now).is_ok());
        assert!(r.check(&base(json!({"exp": now - 29.0})), now).is_ok());
        assert!(r.check(&base(json!({"exp": now - 30.0})), now).is_err());
        assert!(r.check(&base(json!({"exp": now - 31.0})), now).is_err());
        assert!(r.check(&base(json!({"nbf": now + 30.0})), now).is_ok());
        assert!(r.check(&base(json!({"nbf": now + 31.0})), now).is_err());
        assert!(r.check(&base(json!({"iat": now + 31.0})), now).is_err());
        assert!(r.check(&base(json!({"exp": "soon"})), now).is_err());
        assert!(r.check(&base(json!({"exp": -1})), now).is_err());
        assert!(r.check(&base(json!({"exp": 1e300})), now).is_err());
        let mut no_exp = base(json!({}));
        no_exp.remove("exp");
        assert!(r.check(&no_exp, now).is_err());
    }

    #[test]
    fn audience_rules() {
        let now = 1_000_000.0;
        let with_aud =
            |aud: Value| claims(json!({"iss": "https://issuer", "aud": aud, "exp": now + 60.0}));
        let single = rules(AudienceRule::Single);
        let contains = rules(AudienceRule::Contains);
        for (aud, single_ok, contains_ok) in [
            (json!("gw"), true, true),
            (json!(["gw"]), true, true),
            (json!(["gw", "other"]), false, true),
            (json!(["gw", "gw2"]), false, false),
            (json!("other"), false, false),
            (json!([]), false, false),
            (json!(["gw", 1]), false, false),
            (json!(null), false, false),
        ] {
            assert_eq!(
                single.check(&with_aud(aud.clone()), now).is_ok(),
                single_ok,
                "{aud}"
            );
            assert_eq!(
                contains.check(&with_aud(aud.clone()), now).is_ok(),
                contains_ok,
                "{aud}"
            );
        }
        let mut wrong_iss = with_aud(json!("gw"));
        wrong_iss.insert("iss".into(), json!("https://issuer/"));
        assert!(single.check(&wrong_iss, now).is_err());
    }
}

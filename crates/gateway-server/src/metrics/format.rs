//! Which exposition format a scraper gets, chosen from its `Accept` header.
//!
//! Prometheus asks for OpenMetrics first and plain text as a fallback (its default `Accept`
//! lists `application/openmetrics-text` with the highest `q`); `curl` and older scrapers send
//! `*/*` or nothing and get the Prometheus text format 0.0.4, which every scraper reads. The
//! sample lines are the same in both (`gateway_runs_total{status="succeeded"} 1`); OpenMetrics
//! adds `# UNIT` lines, names counter families without `_total` in `# TYPE`, and ends with
//! `# EOF`.

/// An exposition format of `GET /metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    PrometheusText,
}

impl Format {
    /// The format to answer a request carrying this `Accept` header with: OpenMetrics when the
    /// client ranks `application/openmetrics-text` at least as high as anything else it
    /// accepts, else the Prometheus text format. Malformed entries are skipped, never an error:
    /// a scraper always gets a readable answer.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::PrometheusText;
        };
        let mut openmetrics = 0.0_f32;
        let mut other = 0.0_f32;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            // No `q` means 1; a malformed one drops the entry rather than guess its rank.
            let q = match parts.find_map(|p| p.trim().strip_prefix("q=")) {
                None => 1.0,
                Some(q) => match q.trim().parse::<f32>() {
                    Ok(q) if (0.0..=1.0).contains(&q) => q,
                    _ => continue,
                },
            };
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(q);
            } else if !media.is_empty() {
                other = other.max(q);
            }
        }
        if openmetrics > 0.0 && openmetrics >= other {
            Self::OpenMetrics
        } else {
            Self::PrometheusText
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Format::{self, OpenMetrics, PrometheusText};

    #[test]
    fn prometheus_default_accept_gets_openmetrics() {
        // Prometheus 3's scrape `Accept` header.
        let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
            application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
            escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            OpenMetrics
        );
    }

    #[test]
    fn everything_else_gets_prometheus_text() {
        for accept in [
            None,
            Some(""),
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"),
            Some("application/openmetrics-text;q=0"),
            Some("application/openmetrics-text;q=nan, text/plain"),
            Some(";;;,,,q=2"),
            Some("application/openmetrics-text;q=2"),
        ] {
            assert_eq!(Format::negotiate(accept), PrometheusText, "{accept:?}");
        }
    }
}

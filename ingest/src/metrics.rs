//! Prometheus counters in the text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Counters keyed by name and label set, rendered in a stable order.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), f64>>,
}

const HELP: &[(&str, &str)] = &[
    (
        "hexroad_http_requests_total",
        "HTTP requests answered, by route and status.",
    ),
    (
        "hexroad_upload_bytes_received_total",
        "Upload body bytes stored in staging.",
    ),
    (
        "hexroad_uploads_finished_total",
        "Uploads finished, by kind and outcome.",
    ),
    (
        "hexroad_signature_failures_total",
        "Requests refused by signature checks, by reason.",
    ),
    (
        "hexroad_devices_registered_total",
        "Device registrations accepted.",
    ),
];

impl Metrics {
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], by: f64) {
        let mut label_text = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                label_text.push(',');
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(label_text, "{k}=\"{v}\"");
        }
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((name, label_text)).or_insert(0.0) += by;
    }

    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1.0);
    }

    /// The exposition text, with `open_uploads` as a gauge.
    /// The counters, then `gauges` as (name, help, value): what the service
    /// holds right now.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((n, labels), value) in map.iter().filter(|((n, _), _)| n == name) {
                if labels.is_empty() {
                    let _ = writeln!(out, "{n} {value}");
                } else {
                    let _ = writeln!(out, "{n}{{{labels}}} {value}");
                }
            }
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_and_escapes() {
        let m = Metrics::default();
        m.inc(
            "hexroad_http_requests_total",
            &[("route", "a\"b"), ("status", "200")],
        );
        m.inc(
            "hexroad_http_requests_total",
            &[("route", "a\"b"), ("status", "200")],
        );
        let text = m.render(&[("hexroad_open_uploads", "Open.", 3.0)]);
        assert!(
            text.contains("hexroad_http_requests_total{route=\"a\\\"b\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("hexroad_open_uploads 3"));
    }
}

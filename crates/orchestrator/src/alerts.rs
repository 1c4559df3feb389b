//! Alertmanager's alerts in the incident feed: `POST /api/alerts` takes Alertmanager's webhook
//! payload (version 4) and records each alert as an `alert` event of the active run.
//!
//! Alertmanager notifies again at every `group_interval` and `repeat_interval`, and a group's
//! notification repeats the alerts already sent, so an alert is recorded once per identity
//! (its fingerprint, or its labels when there is none), status and `startsAt`: one `firing`
//! line when it starts, one `resolved` line when it ends, and a new `firing` line if it starts
//! again. The identity is the event's key, so the check survives an orchestrator restart, and
//! webhooks are recorded one at a time so two overlapping notifications cannot both record
//! the same alert. Without an active run the alerts are dropped: there is no feed to show them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::runner::{Orchestrator, RunError};

/// Alertmanager's webhook payload, the fields an event needs (the others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Webhook {
    /// The payload format: `"4"`.
    pub version: String,
    /// The group's alerts, firing and resolved.
    pub alerts: Vec<Alert>,
}

/// Whether an alert is firing or has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Its condition holds.
    Firing,
    /// Its condition no longer holds.
    Resolved,
}

impl AlertStatus {
    /// As sent and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert of a webhook payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Its labels (`alertname`, `severity`, `service`, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations (`summary`, `description`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    pub starts_at: String,
    /// When it ended (Alertmanager sends `0001-01-01T00:00:00Z` while it fires).
    #[serde(default)]
    pub ends_at: Option<String>,
    /// Alertmanager's hash of the labels.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The webhook version this endpoint reads.
pub const WEBHOOK_VERSION: &str = "4";

impl Webhook {
    /// Parses a request body; the error says what was expected, and names the field when the
    /// body is JSON of the wrong version.
    pub fn parse(body: &[u8]) -> Result<Self, (Option<&'static str>, String)> {
        let hook: Self = serde_json::from_slice(body).map_err(|e| {
            (
                None,
                format!(
                    "expected Alertmanager's webhook payload {{\"version\": \"4\", \"alerts\": [{{\"status\": \"firing\"|\"resolved\", \"labels\", \"annotations\", \"startsAt\", \"endsAt\", \"fingerprint\"}}]}}: {e}"
                ),
            )
        })?;
        if hook.version != WEBHOOK_VERSION {
            return Err((
                Some("version"),
                format!("expected webhook version {WEBHOOK_VERSION}, found {:?}", hook.version),
            ));
        }
        Ok(hook)
    }
}

impl Alert {
    /// Its name (`alertname`).
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("unnamed alert", String::as_str)
    }

    /// What makes a notification of it new: identity, status and start. The fingerprint is
    /// Alertmanager's identity of an alert; without one, its labels (sorted) are.
    pub fn key(&self) -> String {
        let identity = match self.fingerprint.as_deref().filter(|f| !f.is_empty()) {
            Some(fingerprint) => fingerprint.to_owned(),
            None => json!(self.labels).to_string(),
        };
        format!("alert:{identity}:{}:{}", self.status.as_str(), self.starts_at)
    }

    /// The event's data: what the feed shows first, then the whole alert.
    pub fn event_data(&self) -> Value {
        let ends_at = self
            .ends_at
            .as_deref()
            .filter(|e| self.status == AlertStatus::Resolved && !e.starts_with("0001-"));
        json!({
            "name": self.name(),
            "status": self.status,
            "severity": self.labels.get("severity"),
            "summary": self.annotations.get("summary"),
            "labels": self.labels,
            "annotations": self.annotations,
            "starts_at": self.starts_at,
            "ends_at": ends_at,
            "fingerprint": self.fingerprint,
        })
    }
}

/// What became of a webhook's alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Received {
    /// The run they were recorded in (none without an active run).
    pub run_id: Option<String>,
    /// Alerts in the payload.
    pub received: usize,
    /// Recorded as new events.
    pub recorded: usize,
    /// Already recorded (a repeated notification).
    pub duplicates: usize,
    /// Dropped because no run is active.
    pub dropped: usize,
}

impl Orchestrator {
    /// Records a webhook's alerts in the active run, each once; drops them without one.
    pub async fn receive_alerts(&self, hook: &Webhook) -> Result<Received, RunError> {
        // One webhook at a time: the check for a recorded key and the recording are one step.
        let _one_at_a_time = self.alerts_lock.lock().await;
        let mut out = Received {
            received: hook.alerts.len(),
            ..Received::default()
        };
        let Some(run_id) = self.active_run() else {
            out.dropped = hook.alerts.len();
            if out.dropped > 0 {
                tracing::info!(alerts = out.dropped, "Alerts dropped: no run is active.");
            }
            return Ok(out);
        };
        for alert in &hook.alerts {
            let key = alert.key();
            if self.store.has_event_key(&run_id, &key).await? {
                out.duplicates += 1;
                continue;
            }
            self.record(&run_id, "alert", Some(&key), alert.event_data()).await?;
            tracing::info!(
                run = run_id,
                alert = alert.name(),
                status = alert.status.as_str(),
                "Alert recorded."
            );
            out.recorded += 1;
        }
        out.run_id = Some(run_id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(status: &str, fingerprint: Option<&str>) -> Alert {
        let mut v = json!({
            "status": status,
            "labels": {"alertname": "TargetDown", "severity": "critical", "job": "orders"},
            "annotations": {"summary": "orders is down"},
            "startsAt": "2026-12-06T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        });
        if let Some(f) = fingerprint {
            v["fingerprint"] = json!(f);
        }
        serde_json::from_value(v).expect("alert")
    }

    #[test]
    fn the_key_is_identity_status_and_start() {
        let firing = alert("firing", Some("abc"));
        let resolved = alert("resolved", Some("abc"));
        assert_eq!(firing.key(), "alert:abc:firing:2026-12-06T10:00:00Z");
        assert_ne!(firing.key(), resolved.key());
        let mut again = alert("firing", Some("abc"));
        again.starts_at = "2026-12-06T11:00:00Z".to_owned();
        assert_ne!(firing.key(), again.key(), "firing again later is a new event");
        // Without a fingerprint, the labels (in a stable order) are the identity.
        let a = alert("firing", None);
        let mut b = alert("firing", Some(""));
        b.labels = a.labels.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(a.key(), b.key());
        assert!(a.key().contains("\"alertname\":\"TargetDown\""), "{}", a.key());
    }

    #[test]
    fn the_event_shows_name_severity_and_summary_and_an_end_only_once_resolved() {
        let firing = alert("firing", Some("abc")).event_data();
        assert_eq!(
            (
                &firing["name"],
                &firing["status"],
                &firing["severity"],
                &firing["summary"]
            ),
            (
                &json!("TargetDown"),
                &json!("firing"),
                &json!("critical"),
                &json!("orders is down")
            )
        );
        assert_eq!(firing["ends_at"], Value::Null);
        let mut resolved = alert("resolved", Some("abc"));
        resolved.ends_at = Some("2026-12-06T10:05:00Z".to_owned());
        assert_eq!(resolved.event_data()["ends_at"], "2026-12-06T10:05:00Z");
    }

    #[test]
    fn a_payload_is_version_4_with_alerts_of_a_known_status() {
        let ok = br#"{"version":"4","status":"firing","receiver":"orchestrator","groupLabels":{},
            "alerts":[{"status":"firing","labels":{"alertname":"X"},"annotations":{},
            "startsAt":"2026-12-06T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"f",
            "generatorURL":"http://prometheus:9090/graph"}]}"#;
        assert_eq!(Webhook::parse(ok).expect("parses").alerts.len(), 1);
        for bad in [
            &b"not json"[..],
            br#"{"version":"4"}"#,
            br#"{"version":"4","alerts":[{"status":"pending","startsAt":"x"}]}"#,
            br#"{"version":"4","alerts":[{"status":"firing"}]}"#,
        ] {
            let (field, message) = Webhook::parse(bad).expect_err("refused");
            assert_eq!(field, None);
            assert!(
                message.starts_with("expected Alertmanager's webhook payload"),
                "{message}"
            );
        }
        let (field, message) = Webhook::parse(br#"{"version":"3","alerts":[]}"#).expect_err("refused");
        assert_eq!(field, Some("version"));
        assert!(message.contains("\"3\""), "{message}");
    }
}

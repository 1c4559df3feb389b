//! Changes a learner makes outside the orchestrator (curl, a script, the CLI against a
//! service's `/config`): read from each service's journal (`GET /config/changes`) while a run
//! is on, so the run's timeline and debrief show every change with who made it.

use std::collections::BTreeMap;

use serde_json::Value;

use observastack_common::config::Change;

use crate::lab::Lab;

/// The source the orchestrator's own requests carry (`x-observastack-actor`): its changes are
/// recorded where it makes them, not again from the journal.
pub const OWN_SOURCE: &str = "orchestrator";

/// Where each service's journal was read up to.
#[derive(Debug, Default)]
pub struct ChangeWatch {
    /// Service → (boot id, last sequence number seen).
    cursors: BTreeMap<String, (String, u64)>,
}

/// One change made outside the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub struct OutsideChange {
    /// The service whose `/config` changed.
    pub service: String,
    /// The change, with its source.
    pub change: Change,
}

fn journal(body: &Value) -> Option<(String, Vec<Change>)> {
    let boot = body.get("boot")?.as_str()?.to_owned();
    let changes = serde_json::from_value(body.get("changes")?.clone()).ok()?;
    Some((boot, changes))
}

impl ChangeWatch {
    /// A watch from now on: what each journal holds already is not reported.
    pub async fn start(lab: &Lab) -> Self {
        let mut watch = Self::default();
        let services: Vec<String> = lab.endpoints.services.keys().cloned().collect();
        for service in services {
            let outcome = lab.config_changes(&service, 0).await;
            if let Some((boot, changes)) = journal(&outcome.body) {
                let last = changes.iter().map(|c| c.seq).max().unwrap_or(0);
                watch.cursors.insert(service, (boot, last));
            }
        }
        watch
    }

    /// The changes made since the last poll by anyone but the orchestrator, oldest first. A
    /// service that restarted (another boot id) is read from its journal's start; one that does
    /// not answer is tried again at the next poll.
    pub async fn poll(&mut self, lab: &Lab) -> Vec<OutsideChange> {
        let mut out = Vec::new();
        let services: Vec<String> = lab.endpoints.services.keys().cloned().collect();
        for service in services {
            let (boot, after) = self.cursors.get(&service).cloned().unwrap_or_default();
            let outcome = lab.config_changes(&service, after).await;
            let Some((now_boot, mut changes)) = journal(&outcome.body) else {
                continue;
            };
            if now_boot != boot && after > 0 {
                // Restarted: numbering started again.
                changes = match journal(&lab.config_changes(&service, 0).await.body) {
                    Some((_, all)) => all,
                    None => continue,
                };
            }
            let last = changes
                .iter()
                .map(|c| c.seq)
                .max()
                .unwrap_or(if now_boot == boot { after } else { 0 });
            self.cursors.insert(service.clone(), (now_boot, last));
            out.extend(
                changes
                    .into_iter()
                    .filter(|c| c.source != OWN_SOURCE)
                    .map(|change| OutsideChange {
                        service: service.clone(),
                        change,
                    }),
            );
        }
        out.sort_by_key(|c| c.change.time_ms);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_journal_answer_is_read_and_anything_else_is_not() {
        let body = json!({"boot": "b1", "changes": [
            {"seq": 3, "time_ms": 10, "changed": {"db_pool_size": 20}, "source": "curl/8.5.0"}
        ]});
        let (boot, changes) = journal(&body).unwrap();
        assert_eq!(boot, "b1");
        assert_eq!(changes[0].source, "curl/8.5.0");
        assert!(journal(&json!({})).is_none());
        assert!(journal(&json!({"boot": "b", "changes": [{"seq": "x"}]})).is_none());
    }
}

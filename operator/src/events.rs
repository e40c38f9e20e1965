//! Events, one per distinct message. kube-runtime's `Recorder` folds every event with the same
//! (object, type, reason, action) into one series and keeps the first note, so a later,
//! different failure of the same step only bumps the count of a stale message. Here each
//! distinct note gets its own recorder (its own series): exact repeats still count up on one
//! Event, and a new message is a new Event that says what happened now.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};

/// Distinct (object, type, reason, action, note) keys remembered before the table is
/// cleared; bounds memory with many Pipelines and many different errors.
const MAX_SERIES: usize = 4096;

/// Publishes Events, each distinct message as its own series.
pub struct EventRecorders {
    client: Client,
    reporter: Reporter,
    recorders: Mutex<HashMap<String, Recorder>>,
}

impl std::fmt::Debug for EventRecorders {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EventRecorders")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl EventRecorders {
    /// Recorders reporting as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            recorders: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `event` about `reference`: a repeat of the same message bumps its series, a
    /// new message starts a new Event.
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = series_key(event, reference);
        let recorder = {
            let mut recorders = self
                .recorders
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if recorders.len() >= MAX_SERIES && !recorders.contains_key(&key) {
                recorders.clear();
            }
            recorders
                .entry(key)
                .or_insert_with(|| Recorder::new(self.client.clone(), self.reporter.clone()))
                .clone()
        };
        recorder.publish(event, reference).await
    }
}

/// What makes two events the same series: the object, and everything the event says.
fn series_key(event: &Event, reference: &ObjectReference) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}\u{1f}{}\u{1f}{}",
        reference.namespace.as_deref().unwrap_or_default(),
        reference.name.as_deref().unwrap_or_default(),
        reference.uid.as_deref().unwrap_or_default(),
        event.type_,
        event.reason,
        event.action,
        event.note.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::events::EventType;

    fn event(note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: "KafkaUnavailable".into(),
            note: Some(note.into()),
            action: "EnsureTopics".into(),
            secondary: None,
        }
    }

    #[test]
    fn a_different_message_is_a_different_series() {
        let reference = ObjectReference {
            name: Some("listings".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        };
        let first = series_key(&event("reading metadata of topic t"), &reference);
        assert_eq!(
            first,
            series_key(&event("reading metadata of topic t"), &reference)
        );
        assert_ne!(
            first,
            series_key(&event("deleting topic t timed out"), &reference)
        );
    }
}

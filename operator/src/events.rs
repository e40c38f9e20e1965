//! Events, one per distinct message. kube-runtime's `Recorder` folds every event with the same
//! (object, type, reason, action) into one series and keeps the first note, so a later,
//! different failure of the same step only bumps the count of a stale message. Here each
//! distinct note gets its own recorder (its own series): exact repeats still count up on one
//! Event, and a new message is a new Event that says what happened now.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use rtdp_crds::Pipeline;

/// Distinct (object, type, reason, action, note) keys remembered before the table is
/// cleared; bounds memory with many Pipelines and many different errors.
const MAX_SERIES: usize = 4096;

/// Publishes Events, each distinct message as its own series. Not `Debug`: kube's `Client` and
/// `Recorder` are not.
#[allow(missing_debug_implementations)]
pub struct EventRecorders {
    client: Client,
    reporter: Reporter,
    recorders: Mutex<HashMap<String, Recorder>>,
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

impl EventRecorders {
    /// Publishes an Event about the Pipeline; failing to publish is logged, never fatal.
    pub async fn publish_about(
        &self,
        pipeline: &Pipeline,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish_reference(&pipeline.object_ref(&()), type_, reason, action, note)
            .await;
    }

    /// Publishes an Event about the object `reference` names; failing to publish is logged.
    pub async fn publish_reference(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(&note)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.publish(&event, reference).await {
            tracing::warn!(%error, "publishing an event");
        }
    }

    /// One Normal event for each kind of change a step made that has items.
    pub async fn changes(&self, pipeline: &Pipeline, changes: &[Change<'_>]) {
        for change in changes.iter().filter(|change| !change.items.is_empty()) {
            let note = format!("{} {}", change.verb, change.items.join(", "));
            tracing::info!(reason = change.reason, %note);
            self.publish_about(
                pipeline,
                EventType::Normal,
                change.reason,
                "Reconcile",
                note,
            )
            .await;
        }
    }
}

/// A kind of change a reconcile step made, e.g. the topics it created.
#[derive(Debug)]
pub struct Change<'a> {
    reason: &'static str,
    verb: &'static str,
    items: &'a [String],
}

impl<'a> Change<'a> {
    /// `verb` (e.g. "created table") applied to `items`, reported with `reason`.
    pub fn new(reason: &'static str, verb: &'static str, items: &'a [String]) -> Self {
        Self {
            reason,
            verb,
            items,
        }
    }
}

/// Event notes are limited to 1 kB.
fn truncate(text: &str) -> String {
    const LIMIT: usize = 1000;
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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
    fn notes_are_truncated_on_a_character_boundary() {
        let long = "é".repeat(800);
        let note = truncate(&long);
        assert!(note.len() <= 1004);
        assert!(note.ends_with('…'));
        assert_eq!(truncate("short"), "short");
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

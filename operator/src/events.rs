//! Events, one per distinct message. kube-runtime's `Recorder` folds every event with the same
//! (object, type, reason, action) into one series and keeps the first note, so a later,
//! different failure of the same step only bumps the count of a stale message. Here each
//! distinct note is its own series: exact repeats count up on one Event (`series.count`), and
//! a new message is a new Event that says what happened now.
//!
//! The series are kept here, a few hundred bytes each, rather than in a kube `Recorder` per
//! message: each of those holds a whole cached Event in a table of its own (about 4.5 KiB),
//! which was the operator's largest memory consumer at 1 000 Pipelines.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as KubernetesEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, Resource};
use rtdp_crds::Pipeline;
use serde_json::json;

/// Distinct (object, type, reason, action, note) keys remembered before the table is
/// cleared; bounds memory with many Pipelines and many different errors.
const MAX_SERIES: usize = 4096;

/// How long a series stays open: a repeat later than this is a new Event (as kube-runtime's
/// `Recorder` does).
const SERIES_TIME_TO_LIVE: SignedDuration = SignedDuration::from_mins(6);

/// How often closed series are dropped from the table: a walk over up to [`MAX_SERIES`]
/// entries, not worth doing for every Event (a lookup checks its own series' age).
const PRUNE_INTERVAL: SignedDuration = SignedDuration::from_secs(10);

/// An Event already published, which a repeat of its message counts up.
#[derive(Debug)]
struct Series {
    namespace: String,
    name: String,
    count: i32,
    last_observed: Timestamp,
}

impl Series {
    /// Whether a repeat at `now` still counts up this Event.
    fn is_open(&self, now: Timestamp) -> bool {
        self.last_observed + SERIES_TIME_TO_LIVE > now
    }
}

/// The open series by key, and when the closed ones were last dropped.
#[derive(Debug, Default)]
struct SeriesTable {
    open: HashMap<String, Series>,
    pruned: Option<Timestamp>,
}

impl SeriesTable {
    /// Drops the closed series, at most once per [`PRUNE_INTERVAL`].
    fn prune(&mut self, now: Timestamp) {
        if self
            .pruned
            .is_some_and(|pruned| pruned + PRUNE_INTERVAL > now)
        {
            return;
        }
        self.open.retain(|_, series| series.is_open(now));
        self.pruned = Some(now);
    }
}

/// Publishes Events, each distinct message as its own series. Not `Debug`: kube's `Client` is
/// not.
#[allow(missing_debug_implementations)]
pub struct EventRecorders {
    client: Client,
    reporter: Reporter,
    series: Mutex<SeriesTable>,
}

impl EventRecorders {
    /// Events reported as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            series: Mutex::new(SeriesTable::default()),
        }
    }

    /// Publishes `event` about `reference`: a repeat of the same message within the series'
    /// time to live bumps its count, a new message starts a new Event.
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = series_key(event, reference);
        let now = Timestamp::now();
        let repeat = {
            let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            series.prune(now);
            series
                .open
                .get(&key)
                .filter(|open| open.is_open(now))
                .map(|open| {
                    (
                        open.namespace.clone(),
                        open.name.clone(),
                        open.count.saturating_add(1),
                    )
                })
        };
        let (namespace, name, count) = match repeat {
            Some((namespace, name, count)) => {
                let patch = json!({
                    "series": EventSeries { count, last_observed_time: MicroTime(now) }
                });
                Api::<KubernetesEvent>::namespaced(self.client.clone(), &namespace)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                (namespace, name, count)
            }
            None => {
                let created = self.new_event(event, reference, now);
                let namespace = created.metadata.namespace.clone().unwrap_or_default();
                let name = created.metadata.name.clone().unwrap_or_default();
                Api::<KubernetesEvent>::namespaced(self.client.clone(), &namespace)
                    .create(&PostParams::default(), &created)
                    .await?;
                (namespace, name, 1)
            }
        };
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if series.open.len() >= MAX_SERIES && !series.open.contains_key(&key) {
            // Closed series first; only a table full of open ones is cleared.
            series.open.retain(|_, open| open.is_open(now));
            if series.open.len() >= MAX_SERIES {
                series.open.clear();
            }
        }
        series.open.insert(
            key,
            Series {
                namespace,
                name,
                count,
                last_observed: now,
            },
        );
        Ok(())
    }

    /// A new Event about `reference`, in its namespace (`default` for cluster-scoped objects).
    fn new_event(
        &self,
        event: &Event,
        reference: &ObjectReference,
        now: Timestamp,
    ) -> KubernetesEvent {
        let regarding_name = reference
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        KubernetesEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            metadata: ObjectMeta {
                namespace: Some(
                    reference
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".to_string()),
                ),
                name: Some(format!("{regarding_name}.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            ..KubernetesEvent::default()
        }
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

    fn series(last_observed: Timestamp) -> Series {
        Series {
            namespace: "default".into(),
            name: "listings.1".into(),
            count: 1,
            last_observed,
        }
    }

    #[test]
    fn closed_series_are_dropped_at_most_once_per_interval() {
        let start = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(1);
        let mut table = SeriesTable::default();
        table.open.insert("old".into(), series(start));
        table.prune(start);
        assert_eq!(table.open.len(), 1, "still open");

        let closed_at = start + SERIES_TIME_TO_LIVE;
        table.open.insert("new".into(), series(closed_at));
        assert!(
            !table.open["old"].is_open(closed_at),
            "a lookup sees it closed"
        );
        table.prune(start + PRUNE_INTERVAL - SignedDuration::from_secs(1));
        assert_eq!(table.open.len(), 2, "within the interval nothing is walked");
        table.prune(closed_at);
        assert_eq!(
            table.open.keys().collect::<Vec<_>>(),
            vec!["new"],
            "the closed series is dropped, the open one kept"
        );
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

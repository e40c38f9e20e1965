//! The freshness loop: every freshness period, each provisioned Pipeline's lag is read from
//! Kafka (`rtdp_provisioning::kafka::lag`) and written to `status.freshness`, with the `Fresh`
//! condition when `spec.slo` sets an objective; with `spec.runner.autoscaling`, the same
//! reading drives the autoscaler (`super::autoscaler`).
//!
//! It is a loop of its own rather than part of the reconcile so that a short period costs
//! one Kafka read and at most one status patch per Pipeline, not a whole reconcile (which
//! applies every owned object). It writes with its own field manager (`<manager>-freshness`),
//! owning only `status.freshness` and the `Fresh` condition; the reconcile leaves both alone
//! (`status::reconcile_owned`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use rdkafka::ClientConfig;
use rtdp_crds::runs::{self, RunRecord, RunsStatus};
use rtdp_crds::{AutoscalingStatus, FreshnessStatus, Pipeline, SloSpec, condition_types};
use rtdp_provisioning::kafka::{GroupLag, read_group_lag, read_run_ledger};
use serde_json::json;

use super::{Context, Guarded, autoscaler};
use crate::kafka::client_config_of;
use crate::metrics::PipelineGauges;
use crate::resources;
use crate::status::{DesiredCondition, merge_conditions};

/// How long one Kafka read may take (each request, and the reading of the timestamps).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pipelines measured at once.
const CONCURRENT_READS: usize = 8;

/// Where to ask for a reconcile: per controller, its namespace (`None`: all) and its channel.
pub(super) type Triggers = Vec<(Option<String>, UnboundedSender<ObjectRef<Guarded>>)>;

/// Measures every Pipeline the controllers' reflectors hold (`stores`, one per controller)
/// once per `period`, until dropped, and forgets what this process remembers of a Pipeline
/// gone from them (`Context::forget`); asks the controller serving a Pipeline for a reconcile
/// through `triggers` when the autoscaler changed its replicas or its conditions do not yet
/// reflect its last run.
pub(super) async fn run(
    context: Arc<Context>,
    stores: Vec<Store<Guarded>>,
    period: Duration,
    triggers: Triggers,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The Pipelines measured in the last round: one that is gone loses its gauges.
    let mut measured: HashSet<(String, String, String)> = HashSet::new();
    // Every Pipeline in the stores last round, by uid: one that is gone is forgotten.
    let mut known: HashSet<String> = HashSet::new();
    loop {
        ticks.tick().await;
        // Guarded: one Pipeline that cannot be read must not stop the others' measurement.
        let guarded: Vec<Arc<Guarded>> = stores.iter().flat_map(Store::state).collect();
        let now_known: HashSet<String> =
            guarded.iter().filter_map(|guarded| guarded.uid()).collect();
        for uid in known.difference(&now_known) {
            context.forget(uid);
        }
        known = now_known;
        let pipelines: Vec<&Pipeline> = guarded
            .iter()
            .filter_map(|guarded| guarded.0.as_ref().ok())
            .filter(|pipeline| is_measurable(pipeline))
            .collect();
        let now_measured: HashSet<(String, String, String)> = pipelines
            .iter()
            .map(|pipeline| {
                (
                    pipeline.namespace_or_default(),
                    pipeline.name_any(),
                    pipeline.metadata.uid.clone().unwrap_or_default(),
                )
            })
            .collect();
        futures::stream::iter(pipelines)
            .for_each_concurrent(CONCURRENT_READS, |pipeline| {
                measure(&context, pipeline, &triggers)
            })
            .await;
        for (namespace, name, _) in measured.difference(&now_measured) {
            context.metrics.forget_pipeline(namespace, name);
        }
        measured = now_measured;
    }
}

/// A Pipeline whose topic exists (it was provisioned once) and that is not being deleted.
fn is_measurable(pipeline: &Pipeline) -> bool {
    pipeline.metadata.deletion_timestamp.is_none()
        && pipeline
            .condition(condition_types::TOPIC_READY)
            .is_some_and(|condition| condition.status == "True")
}

/// Reads one Pipeline's lag; writes its freshness, `Fresh` and the autoscaler's decision.
async fn measure(context: &Context, pipeline: &Pipeline, triggers: &Triggers) {
    let now = Timestamp::now();
    let previous = pipeline
        .status
        .as_ref()
        .and_then(|status| status.freshness.clone());
    let config = client_config_of(&context.client, pipeline)
        .await
        .map_err(|error| error.to_string());
    let lag = match &config {
        Ok(config) => read_lag(config, pipeline).await,
        Err(error) => Err(error.clone()),
    };
    let runs = match pipeline.schedule() {
        Some(_) => Some(read_runs(context, pipeline, config.as_ref()).await),
        None => None,
    };
    // `Ready` and `Degraded` are the reconcile's: when they do not yet say what the last
    // reading of the runs implies, ask for one (a reading written now is seen next period).
    if !crate::status::runs_reflected(pipeline) {
        ask_for_reconcile(pipeline, triggers);
    }
    let autoscaling = autoscale(context, pipeline, lag.as_ref().ok(), now, triggers).await;
    let freshness = match lag {
        Ok(lag) => freshness_of(&lag, now),
        Err(error) => {
            tracing::info!(pipeline = %pipeline.name_any(), %error, "reading the lag");
            FreshnessStatus {
                observed_at: Some(whole_seconds(now).to_string()),
                error: Some(error),
                ..previous.clone().unwrap_or_default()
            }
        }
    };
    let existing: Vec<Condition> = pipeline
        .status
        .as_ref()
        .map(|status| status.conditions.clone())
        .unwrap_or_default();
    let fresh = pipeline
        .spec
        .slo
        .as_ref()
        .map(|slo| verdict(slo, &freshness, now));
    if let Some(fresh) = &fresh {
        announce(context, pipeline, &existing, fresh, true).await;
    }
    let storing = storing(
        previous.as_ref(),
        &freshness,
        &pipeline.dead_letter_topic_name(),
    );
    if let Some(storing) = &storing {
        // Nothing to say about a pipeline that has stored from the start.
        announce(context, pipeline, &existing, storing, false).await;
    }
    let conditions: Vec<Condition> = merge_conditions(
        &existing,
        fresh.into_iter().chain(storing).collect(),
        pipeline.metadata.generation,
        now,
    )
    .into_iter()
    .filter(|condition| {
        condition.type_ == condition_types::FRESH || condition.type_ == condition_types::STORING
    })
    .collect();
    context.metrics.set_pipeline(
        &pipeline.namespace_or_default(),
        &pipeline.name_any(),
        PipelineGauges {
            lag_records: freshness.lag_records,
            lag_seconds: freshness.lag_seconds,
            last_stored_seconds: freshness
                .last_stored_record_time
                .as_deref()
                .and_then(|time| time.parse::<Timestamp>().ok())
                .map(Timestamp::as_second),
            processor_replicas: i64::from(resources::processor::replicas(
                pipeline,
                autoscaling.as_ref().map(|status| status.desired_replicas),
            )),
        },
    );
    let mut status = json!({"freshness": freshness, "conditions": conditions});
    if let Some(autoscaling) = autoscaling {
        status["autoscaling"] = json!(autoscaling);
    }
    if let Some(runs) = runs {
        status["runs"] = json!(runs);
    }
    let body = json!({
        "apiVersion": "rtdp.dev/v1alpha1",
        "kind": "Pipeline",
        "status": status,
    });
    let manager = format!("{}-freshness", context.settings.field_manager);
    let result = context
        .pipelines(pipeline)
        .patch_status(
            &pipeline.name_any(),
            &PatchParams::apply(&manager).force(),
            &Patch::Apply(body),
        )
        .await;
    if let Err(error) = result {
        tracing::warn!(pipeline = %pipeline.name_any(), %error, "writing the freshness");
    }
}

/// An Event when the freshness loop's condition `desired` changes status or reason against
/// `existing`: Normal when it turns True, Warning when False. A condition seen for the first
/// time is announced when False, and when True only with `first_true`.
async fn announce(
    context: &Context,
    pipeline: &Pipeline,
    existing: &[Condition],
    desired: &DesiredCondition,
    first_true: bool,
) {
    let status = if desired.status { "True" } else { "False" };
    let changed = match existing
        .iter()
        .find(|condition| condition.type_ == desired.type_)
    {
        Some(before) => before.status != status || before.reason != desired.reason,
        None => first_true || !desired.status,
    };
    if !changed {
        return;
    }
    context
        .recorder
        .publish_about(
            pipeline,
            if desired.status {
                EventType::Normal
            } else {
                EventType::Warning
            },
            &desired.reason,
            "MeasureFreshness",
            format!("{} is {status}: {}", desired.type_, desired.message),
        )
        .await;
}

/// The autoscaler's part: with `spec.runner.autoscaling`, a recommendation from the lag, a
/// stabilised decision, an Event and a reconcile when the replicas change. Returns what
/// `status.autoscaling` should say (`None` without autoscaling). Without a lag reading, or
/// while suspended, the last decision stands.
async fn autoscale(
    context: &Context,
    pipeline: &Pipeline,
    lag: Option<&GroupLag>,
    now: Timestamp,
    triggers: &Triggers,
) -> Option<AutoscalingStatus> {
    let uid = pipeline.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = &pipeline.spec.runner.autoscaling else {
        context.autoscaler.forget(&uid);
        return None;
    };
    let previous = pipeline
        .status
        .as_ref()
        .and_then(|status| status.autoscaling.clone());
    let current = autoscaler::current_replicas(pipeline, spec, context.autoscaler.decided(&uid));
    let Some(lag) = lag.filter(|_| !pipeline.spec.suspend) else {
        if pipeline.spec.suspend {
            context.autoscaler.forget(&uid);
        }
        return Some(previous.unwrap_or(AutoscalingStatus {
            desired_replicas: current,
            last_scale_time: None,
            message: "no lag reading yet".into(),
        }));
    };
    let partitions = i32::try_from(lag.partitions.len()).unwrap_or(i32::MAX);
    let recommendation = autoscaler::recommend(spec, lag.records(), partitions);
    let (replicas, decision) =
        context
            .autoscaler
            .observe(&uid, spec, &recommendation, current, now);
    let mut message = recommendation.reason.clone();
    if recommendation.replicas != replicas {
        message = format!("{message}; {replicas} kept (stabilisation window)");
    }
    let mut last_scale_time = previous.and_then(|previous| previous.last_scale_time);
    if let Some(decision) = decision {
        let (reason, verb) = if decision.to > decision.from {
            ("ScaledUp", "up")
        } else {
            ("ScaledDown", "down")
        };
        context
            .recorder
            .publish_about(
                pipeline,
                EventType::Normal,
                reason,
                "Autoscale",
                format!(
                    "scaled the processors {verb} from {} to {}: {}",
                    decision.from, decision.to, decision.reason
                ),
            )
            .await;
        last_scale_time = Some(whole_seconds(now).to_string());
        ask_for_reconcile(pipeline, triggers);
    }
    Some(AutoscalingStatus {
        desired_replicas: replicas,
        last_scale_time,
        message,
    })
}

/// Asks the controller serving `pipeline` for a reconcile.
fn ask_for_reconcile(pipeline: &Pipeline, triggers: &Triggers) {
    let reference =
        ObjectRef::<Guarded>::new(&pipeline.name_any()).within(&pipeline.namespace_or_default());
    for (scope, sender) in triggers {
        if scope
            .as_deref()
            .is_none_or(|namespace| namespace == pipeline.namespace_or_default())
        {
            // A closed channel means the controller stopped; nothing to ask then.
            let _ = sender.unbounded_send(reference.clone());
        }
    }
}

/// Reads the lag of the Pipeline's processors from its Kafka cluster.
async fn read_lag(config: &ClientConfig, pipeline: &Pipeline) -> Result<GroupLag, String> {
    read_group_lag(
        config,
        &pipeline.topic_name(),
        &pipeline.consumer_group(),
        READ_TIMEOUT,
    )
    .await
    .map_err(|error| error.to_string())
}

/// Reads a scheduled source's runs from its run ledger into `status.runs`, and publishes a
/// Warning Event for each run that failed, was partial or was skipped since the last reading.
/// When the ledger cannot be read, the last runs stay, with the error.
async fn read_runs(
    context: &Context,
    pipeline: &Pipeline,
    config: Result<&ClientConfig, &String>,
) -> RunsStatus {
    let previous = pipeline
        .status
        .as_ref()
        .and_then(|status| status.runs.clone());
    let read = match config {
        Ok(config) => read_run_ledger(
            config,
            &pipeline.runs_topic_name(),
            runs::LEDGER_TAIL,
            READ_TIMEOUT,
        )
        .await
        .map_err(|error| error.to_string()),
        Err(error) => Err(error.clone()),
    };
    let tail = match read {
        Ok(tail) => tail,
        Err(error) => {
            return RunsStatus {
                error: Some(error),
                ..previous.unwrap_or_default()
            };
        }
    };
    let status = runs::runs_status(&tail.entries);
    for run in new_failures(previous.as_ref(), &status) {
        let reason = match run.outcome.as_str() {
            runs::outcomes::SKIPPED => "RunsSkipped",
            runs::outcomes::PARTIAL => "RunPartial",
            _ => "RunFailed",
        };
        context
            .recorder
            .publish_about(
                pipeline,
                EventType::Warning,
                reason,
                "ReadRuns",
                format!(
                    "{} run of {}: {}",
                    run.trigger,
                    run.interval,
                    run.error.as_deref().unwrap_or(&run.outcome)
                ),
            )
            .await;
    }
    status
}

/// The runs of `current` that need attention and were not in `previous` (a run of the same
/// interval that ended at another time is another run). Pure.
pub fn new_failures<'a>(
    previous: Option<&RunsStatus>,
    current: &'a RunsStatus,
) -> Vec<&'a RunRecord> {
    current
        .recent
        .iter()
        .filter(|run| run.is_failure())
        .filter(|run| {
            previous.is_none_or(|previous| {
                !previous.recent.iter().any(|seen| {
                    seen.interval == run.interval
                        && seen.finished_at == run.finished_at
                        && seen.outcome == run.outcome
                })
            })
        })
        .collect()
}

/// The freshness a lag reading amounts to at `now`. Pure.
pub fn freshness_of(lag: &GroupLag, now: Timestamp) -> FreshnessStatus {
    FreshnessStatus {
        observed_at: Some(whole_seconds(now).to_string()),
        lag_records: lag.records(),
        lag_seconds: lag.lag_seconds(now.as_millisecond()),
        last_stored_record_time: lag
            .last_stored_millis()
            .and_then(|millis| Timestamp::from_millisecond(millis).ok())
            .map(|time| time.to_string()),
        records: Some(lag.records_finished()),
        dead_lettered_by_reason: lag.dead_lettered_by_reason(),
        error: None,
    }
}

/// The fewest records finished since the previous measurement that `Storing` judges.
const STORING_EVIDENCE: i64 = 10;

/// `Storing` from the records the processors finished between two measurements: False when
/// more than half of at least ten were dead-lettered, naming the most frequent reason; `None`
/// (the condition stays as it is) when too few finished to say, or the counts went back (a
/// reset). Pure.
pub fn storing(
    previous: Option<&FreshnessStatus>,
    current: &FreshnessStatus,
    dead_letter_topic: &str,
) -> Option<DesiredCondition> {
    let now = current.records?;
    let before = previous
        .and_then(|previous| previous.records)
        .unwrap_or_default();
    let written = now.written - before.written;
    let dead_lettered = now.dead_lettered - before.dead_lettered;
    if written < 0 || dead_lettered < 0 || written + dead_lettered < STORING_EVIDENCE {
        return None;
    }
    let finished = written + dead_lettered;
    if dead_lettered * 2 <= finished {
        return Some(DesiredCondition::new(
            condition_types::STORING,
            true,
            "MostlyStored",
            format!(
                "{written} of the {finished} records finished since the previous measurement were written"
            ),
        ));
    }
    let empty = BTreeMap::new();
    let before_by_reason = previous.map_or(&empty, |previous| &previous.dead_lettered_by_reason);
    let dominant = current
        .dead_lettered_by_reason
        .iter()
        .map(|(reason, count)| {
            (
                count - before_by_reason.get(reason).copied().unwrap_or(0),
                reason.as_str(),
            )
        })
        .max();
    let cause = match dominant {
        Some((count, reason)) if count > 0 => format!(", most of them for {reason} ({count})"),
        _ => String::new(),
    };
    Some(DesiredCondition::new(
        condition_types::STORING,
        false,
        "MostlyDeadLettered",
        format!(
            "{dead_lettered} of the {finished} records finished since the previous measurement were dead-lettered{cause}: their reasons are in the headers of topic {dead_letter_topic}"
        ),
    ))
}

/// `time` without its fraction of a second, as Kubernetes writes times.
fn whole_seconds(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).unwrap_or(time)
}

/// Whether `freshness` meets `slo` at `now`: the `Fresh` condition. Pure.
pub fn verdict(slo: &SloSpec, freshness: &FreshnessStatus, now: Timestamp) -> DesiredCondition {
    if let Some(error) = &freshness.error {
        return DesiredCondition::new(
            condition_types::FRESH,
            false,
            "NotMeasured",
            format!("the lag could not be read from Kafka: {error}"),
        );
    }
    if let Some(max) = slo.max_lag_seconds
        && freshness.lag_seconds > max
    {
        return DesiredCondition::new(
            condition_types::FRESH,
            false,
            "LagExceeded",
            format!(
                "the oldest record not yet stored has waited {} s, over maxLagSeconds {max} ({} records waiting)",
                freshness.lag_seconds, freshness.lag_records
            ),
        );
    }
    if let Some(max) = slo.max_staleness_seconds {
        let stored = freshness
            .last_stored_record_time
            .as_deref()
            .and_then(|time| time.parse::<Timestamp>().ok());
        let staleness = stored.map(|stored| now.duration_since(stored).as_secs());
        match staleness {
            None => {
                return DesiredCondition::new(
                    condition_types::FRESH,
                    false,
                    "Stale",
                    format!("no record stored yet (maxStalenessSeconds {max})"),
                );
            }
            Some(seconds) if seconds > max => {
                return DesiredCondition::new(
                    condition_types::FRESH,
                    false,
                    "Stale",
                    format!(
                        "the newest stored record was produced {seconds} s ago, over maxStalenessSeconds {max}"
                    ),
                );
            }
            Some(_) => {}
        }
    }
    DesiredCondition::new(
        condition_types::FRESH,
        true,
        "WithinObjective",
        format!(
            "{} records waiting, the oldest for {} s: within spec.slo",
            freshness.lag_records, freshness.lag_seconds
        ),
    )
}

#[cfg(test)]
mod tests {
    use rtdp_crds::RecordCounts;
    use rtdp_provisioning::kafka::PartitionPosition;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("a time")
    }

    fn finished(written: i64, by_reason: &[(&str, i64)]) -> FreshnessStatus {
        FreshnessStatus {
            records: Some(RecordCounts {
                written,
                dead_lettered: by_reason.iter().map(|(_, count)| count).sum(),
                filtered: 0,
            }),
            dead_lettered_by_reason: by_reason
                .iter()
                .map(|(reason, count)| ((*reason).to_string(), *count))
                .collect(),
            ..FreshnessStatus::default()
        }
    }

    #[test]
    fn mostly_dead_lettered_records_say_so_with_the_dominant_reason() {
        let before = finished(100, &[("wrong_type", 5)]);
        let now = finished(104, &[("wrong_type", 30), ("malformed_json", 6)]);
        let verdict = storing(Some(&before), &now, "listings.dlq").expect("enough records");
        assert!(!verdict.status);
        assert_eq!(verdict.reason, "MostlyDeadLettered");
        assert_eq!(
            verdict.message,
            "31 of the 35 records finished since the previous measurement were dead-lettered, most of them for wrong_type (25): their reasons are in the headers of topic listings.dlq"
        );
        // Mostly stored again.
        let later = finished(150, &[("wrong_type", 31), ("malformed_json", 6)]);
        let verdict = storing(Some(&now), &later, "listings.dlq").expect("enough records");
        assert_eq!(
            (verdict.status, verdict.reason.as_str()),
            (true, "MostlyStored")
        );
        // Too few records to judge, or counts that went back: the condition stays.
        assert_eq!(
            storing_of(
                &later,
                &finished(151, &[("wrong_type", 33), ("malformed_json", 6)])
            ),
            None
        );
        assert_eq!(storing_of(&later, &finished(10, &[])), None);
        // The first measurement judges everything counted so far.
        let first = storing(None, &finished(0, &[("not_an_object", 12)]), "t").expect("12 records");
        assert!(
            !first.status && first.message.contains("not_an_object (12)"),
            "{}",
            first.message
        );
    }

    fn storing_of(before: &FreshnessStatus, now: &FreshnessStatus) -> Option<DesiredCondition> {
        storing(Some(before), now, "t")
    }

    fn lag(waiting_since: Option<i64>, stored_at: Option<i64>) -> GroupLag {
        GroupLag {
            partitions: vec![PartitionPosition {
                partition: 0,
                low: 0,
                high: 10,
                committed: Some(if waiting_since.is_some() { 7 } else { 10 }),
                last_stored_millis: stored_at.map(|seconds| at(seconds).as_millisecond()),
                oldest_waiting_millis: waiting_since.map(|seconds| at(seconds).as_millisecond()),
                records: RecordCounts {
                    written: 5,
                    dead_lettered: 1,
                    filtered: 1,
                },
                write_time_micros: None,
                last_written_millis: None,
                dead_lettered_by_reason: BTreeMap::new(),
            }],
        }
    }

    #[test]
    fn each_failed_run_is_announced_once() {
        let run = |interval: &str, outcome: &str, finished: &str| RunRecord {
            interval: interval.into(),
            outcome: outcome.into(),
            finished_at: Some(finished.into()),
            ..RunRecord::default()
        };
        let before = RunsStatus {
            recent: vec![run("a", runs::outcomes::FAILED, "1")],
            ..RunsStatus::default()
        };
        let after = RunsStatus {
            recent: vec![
                // The retry of a, failed again later: a new failure.
                run("a", runs::outcomes::FAILED, "2"),
                run("b", runs::outcomes::SUCCEEDED, "2"),
                run("c", runs::outcomes::SKIPPED, "2"),
            ],
            ..RunsStatus::default()
        };
        let announced: Vec<&str> = new_failures(Some(&before), &after)
            .iter()
            .map(|run| run.interval.as_str())
            .collect();
        assert_eq!(announced, vec!["a", "c"]);
        assert!(new_failures(Some(&after), &after).is_empty());
        assert_eq!(new_failures(None, &before).len(), 1);
    }

    #[test]
    fn freshness_reports_records_age_and_the_last_stored_time() {
        let freshness = freshness_of(&lag(Some(100), Some(90)), at(130));
        assert_eq!(freshness.lag_records, 3);
        assert_eq!(freshness.lag_seconds, 30);
        assert_eq!(
            freshness.last_stored_record_time.as_deref(),
            Some("2023-11-14T22:14:50Z")
        );
        assert_eq!(
            freshness
                .records
                .map(|records| records.written + records.dead_lettered + records.filtered),
            Some(7),
            "the records before the committed offset"
        );
        let caught_up = freshness_of(&lag(None, Some(90)), at(130));
        assert_eq!((caught_up.lag_records, caught_up.lag_seconds), (0, 0));
    }

    #[test]
    fn the_verdict_names_the_objective_missed() {
        let slo = SloSpec {
            max_lag_seconds: Some(60),
            max_staleness_seconds: Some(300),
        };
        let fresh = verdict(
            &slo,
            &freshness_of(&lag(Some(100), Some(90)), at(130)),
            at(130),
        );
        assert_eq!(
            (fresh.status, fresh.reason.as_str()),
            (true, "WithinObjective")
        );
        let late = verdict(
            &slo,
            &freshness_of(&lag(Some(100), Some(90)), at(200)),
            at(200),
        );
        assert_eq!((late.status, late.reason.as_str()), (false, "LagExceeded"));
        assert!(
            late.message.contains("100 s, over maxLagSeconds 60"),
            "{}",
            late.message
        );
        let stale = verdict(&slo, &freshness_of(&lag(None, Some(90)), at(500)), at(500));
        assert_eq!((stale.status, stale.reason.as_str()), (false, "Stale"));
        let never = verdict(&slo, &freshness_of(&lag(None, None), at(500)), at(500));
        assert_eq!((never.status, never.reason.as_str()), (false, "Stale"));
        let unread = FreshnessStatus {
            error: Some("Kafka is unreachable".into()),
            ..FreshnessStatus::default()
        };
        let unknown = verdict(&slo, &unread, at(500));
        assert_eq!(
            (unknown.status, unknown.reason.as_str()),
            (false, "NotMeasured")
        );
    }
}

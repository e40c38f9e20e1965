//! Replays (`spec.replay`): a one-shot operation per `id`. While a replay is pending the
//! processors are held at zero replicas; once no processor pod is left, the consumer group's
//! committed offsets are moved back (`rtdp_provisioning::kafka::rewind_group`) and the
//! processors start again from there. `status.replay` says where it stands; Events mark the
//! start, the end and a failure. Run by the reconcile, which owns the processor Deployment.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::EventType;
use rtdp_crds::{Pipeline, ReplaySpec, ReplayStatus};
use rtdp_provisioning::kafka::{RewindTo, Rewound, rewind_group};

use super::Context;
use crate::kafka::client_config_of;
use crate::resources;

/// How long the rewind's Kafka requests may take.
const REWIND_TIMEOUT: Duration = Duration::from_secs(15);
/// How soon to look again while the processors stop.
pub(super) const POLL: Duration = Duration::from_secs(2);

/// Where a replay stands after this reconcile's step.
#[derive(Debug, Default)]
pub(super) struct ReplayProgress {
    /// Keep the processors at zero replicas.
    pub(super) hold_processors: bool,
    /// `status.replay` to write.
    pub(super) status: Option<ReplayStatus>,
}

/// The state names of `status.replay.state`.
pub(super) mod states {
    pub(crate) const STOPPING: &str = "Stopping";
    pub(crate) const COMPLETED: &str = "Completed";
    pub(crate) const FAILED: &str = "Failed";
}

/// Advances the Pipeline's replay, if one is pending.
pub(super) async fn step(pipeline: &Pipeline, context: &Context) -> ReplayProgress {
    let current = pipeline
        .status
        .as_ref()
        .and_then(|status| status.replay.clone());
    let Some(replay) = &pipeline.spec.replay else {
        return ReplayProgress {
            hold_processors: false,
            status: current,
        };
    };
    // Finished: in the status, or (the status the reflector holds may lag the write) in this
    // process's memory.
    let uid = pipeline.metadata.uid.clone().unwrap_or_default();
    let remembered = context
        .finished_replays
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&uid)
        .filter(|status| status.id == replay.id)
        .cloned();
    if let Some(remembered) = remembered {
        return ReplayProgress {
            hold_processors: false,
            status: Some(remembered),
        };
    }
    let finished = current.as_ref().is_some_and(|status| {
        status.id == replay.id
            && (status.state == states::COMPLETED || status.state == states::FAILED)
    });
    if finished {
        return ReplayProgress {
            hold_processors: false,
            status: current,
        };
    }
    let now = whole_seconds(Timestamp::now()).to_string();
    let started_at = current
        .as_ref()
        .filter(|status| status.id == replay.id)
        .and_then(|status| status.started_at.clone())
        .unwrap_or_else(|| now.clone());
    if current.as_ref().is_none_or(|status| status.id != replay.id) {
        context
            .recorder
            .publish_about(
                pipeline,
                EventType::Normal,
                "ReplayStarted",
                "Replay",
                format!(
                    "replay {} from {}: stopping the processors",
                    replay.id, replay.from
                ),
            )
            .await;
    }
    let stopping = |message: String| ReplayProgress {
        hold_processors: true,
        status: Some(ReplayStatus {
            id: replay.id.clone(),
            state: states::STOPPING.to_string(),
            message,
            started_at: Some(started_at.clone()),
            finished_at: None,
        }),
    };
    match running_processors(pipeline, context).await {
        Ok(0) => {}
        Ok(pods) => {
            return stopping(format!(
                "waiting for {pods} processor pods to stop before moving the offsets"
            ));
        }
        Err(error) => return stopping(format!("reading the processor Deployment: {error}")),
    }
    let outcome = match rewind_to(replay) {
        Ok(to) => rewind(pipeline, context, to).await,
        Err(error) => Err(error),
    };
    let (state, message, event_type, reason) = match outcome {
        Ok(rewound) => (
            states::COMPLETED,
            describe(&rewound),
            EventType::Normal,
            "ReplayCompleted",
        ),
        Err(error) if is_retryable(&error) => {
            return stopping(format!("moving the offsets failed, retrying: {error}"));
        }
        Err(error) => (states::FAILED, error, EventType::Warning, "ReplayFailed"),
    };
    context
        .recorder
        .publish_about(
            pipeline,
            event_type,
            reason,
            "Replay",
            format!("replay {}: {message}", replay.id),
        )
        .await;
    let status = ReplayStatus {
        id: replay.id.clone(),
        state: state.to_string(),
        message,
        started_at: Some(started_at),
        finished_at: Some(now),
    };
    context
        .finished_replays
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(uid, status.clone());
    ReplayProgress {
        hold_processors: false,
        status: Some(status),
    }
}

/// Where the replay starts, from its `from`. Pure.
pub(super) fn rewind_to(replay: &ReplaySpec) -> Result<RewindTo, String> {
    if replay.from == "earliest" {
        return Ok(RewindTo::Earliest);
    }
    replay
        .from
        .parse::<Timestamp>()
        .map(|time| RewindTo::Time(time.as_millisecond()))
        .map_err(|error| {
            format!(
                "replay.from {:?} is not an RFC 3339 time: {error}",
                replay.from
            )
        })
}

/// What the rewind did, in one line. Pure.
pub(super) fn describe(rewound: &[Rewound]) -> String {
    let records: i64 = rewound
        .iter()
        .map(|partition| partition.high - partition.to)
        .sum();
    let partitions: Vec<String> = rewound
        .iter()
        .map(|partition| {
            let from = partition
                .from
                .map_or_else(|| "none".to_string(), |offset| offset.to_string());
            format!("{}: {from} → {}", partition.partition, partition.to)
        })
        .collect();
    format!(
        "offsets moved ({}); {records} records to process again",
        partitions.join(", ")
    )
}

/// A failure worth another try (Kafka away, members still leaving) rather than a verdict.
fn is_retryable(error: &str) -> bool {
    !error.starts_with("replay.from")
}

async fn rewind(
    pipeline: &Pipeline,
    context: &Context,
    to: RewindTo,
) -> Result<Vec<Rewound>, String> {
    let config = client_config_of(&context.client, pipeline)
        .await
        .map_err(|error| error.to_string())?;
    let (topic, group) = (pipeline.topic_name(), pipeline.consumer_group());
    rewind_group(&config, &topic, &group, to, REWIND_TIMEOUT)
        .await
        .map_err(|error| error.to_string())
}

/// Processor pods that still exist (of any template).
async fn running_processors(pipeline: &Pipeline, context: &Context) -> Result<i32, kube::Error> {
    let api: Api<Deployment> =
        Api::namespaced(context.client.clone(), &pipeline.namespace_or_default());
    Ok(api
        .get_opt(&resources::processor::name(pipeline))
        .await?
        .and_then(|deployment| deployment.status)
        .and_then(|status| status.replicas)
        .unwrap_or_default())
}

fn whole_seconds(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).unwrap_or(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_is_earliest_or_a_time() {
        let replay = |from: &str| ReplaySpec {
            id: "r".into(),
            from: from.into(),
        };
        assert_eq!(rewind_to(&replay("earliest")), Ok(RewindTo::Earliest));
        assert_eq!(
            rewind_to(&replay("2026-11-27T00:00:01Z")),
            Ok(RewindTo::Time(1_795_737_601_000))
        );
        let error = rewind_to(&replay("2026-13-01T00:00:00Z")).expect_err("no 13th month");
        assert!(error.starts_with("replay.from"), "{error}");
        assert!(!is_retryable(&error));
    }

    #[test]
    fn the_description_counts_what_is_processed_again() {
        let rewound = [
            Rewound {
                partition: 0,
                from: Some(10),
                to: 0,
                high: 10,
            },
            Rewound {
                partition: 1,
                from: None,
                to: 3,
                high: 5,
            },
        ];
        assert_eq!(
            describe(&rewound),
            "offsets moved (0: 10 → 0, 1: none → 3); 12 records to process again"
        );
    }
}

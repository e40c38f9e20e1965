//! The Kafka topics of a Pipeline: its topic and dead-letter topic. A topic that exists is
//! adopted; partitions grow in place; managed configs that drift are set back; a partition
//! decrease or a replication-factor change is refused (Kafka cannot do either in place).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rtdp_crds::Pipeline;

use super::client::client_config;
use crate::ProvisionError;

/// A shared Kafka admin client (shared so blocking metadata calls can move to a thread).
pub type Admin = Arc<AdminClient<DefaultClientContext>>;

/// How long one admin operation may take before it counts as Kafka being unavailable.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// A topic as the Pipeline declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDefinition {
    /// The topic name.
    pub name: String,
    /// Declared partitions.
    pub partitions: i32,
    /// Declared replication factor.
    pub replication_factor: i32,
    /// Managed configuration entries.
    pub config: BTreeMap<String, String>,
}

/// The topic config that makes the broker, not the producers, stamp each record's time.
pub const TIMESTAMP_TYPE: &str = "message.timestamp.type";

/// The topic and the dead-letter topic of a Pipeline.
///
/// The main topic uses `message.timestamp.type=LogAppendTime` unless the Pipeline declares
/// otherwise: the runner writes each row with its record's Kafka time (made strictly
/// increasing per partition), and with the broker's clock a producer whose clock is behind
/// cannot make its newer updates lose to older ones.
pub fn topic_definitions(pipeline: &Pipeline) -> Vec<TopicDefinition> {
    let topic = &pipeline.spec.topic;
    let mut config = topic.config.clone();
    config
        .entry(TIMESTAMP_TYPE.to_string())
        .or_insert_with(|| "LogAppendTime".to_string());
    [
        TopicDefinition {
            name: pipeline.topic_name(),
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            config,
        },
        TopicDefinition {
            name: pipeline.dead_letter_topic_name(),
            partitions: topic.dead_letter.partitions.unwrap_or(1),
            replication_factor: topic.replication_factor,
            config: topic.dead_letter.config.clone(),
        },
    ]
    .into_iter()
    .chain(pipeline.schedule().map(|_| runs_topic_definition(pipeline)))
    .collect()
}

/// The run ledger of a scheduled source (`rtdp_crds::runs`): one partition, so the runs stay
/// in order; compacted, so it keeps the latest run of each interval for as long as the
/// Pipeline lives.
pub fn runs_topic_definition(pipeline: &Pipeline) -> TopicDefinition {
    TopicDefinition {
        name: pipeline.runs_topic_name(),
        partitions: 1,
        replication_factor: pipeline.spec.topic.replication_factor,
        config: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
    }
}

/// What exists in Kafka for one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingTopic {
    /// Partitions.
    pub partitions: i32,
    /// Replicas of partition 0.
    pub replication_factor: i32,
}

/// What reconciling a topic takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicPlan {
    /// Create it.
    Create,
    /// Grow it to this many partitions.
    AddPartitions(i32),
    /// The partitions are right.
    UpToDate,
}

/// Compares a declared topic with what exists. Pure.
pub fn plan_topic(
    declared: &TopicDefinition,
    existing: Option<&ExistingTopic>,
) -> Result<TopicPlan, ProvisionError> {
    let Some(existing) = existing else {
        return Ok(TopicPlan::Create);
    };
    if existing.replication_factor != declared.replication_factor {
        return Err(ProvisionError::TopicNotSupported {
            topic: declared.name.clone(),
            message: format!(
                "replication factor is {} in Kafka but declared {}; Kafka cannot change it in place (reassign partitions with kafka-reassign-partitions, then update the Pipeline)",
                existing.replication_factor, declared.replication_factor
            ),
        });
    }
    if existing.partitions > declared.partitions {
        return Err(ProvisionError::TopicNotSupported {
            topic: declared.name.clone(),
            message: format!(
                "has {} partitions in Kafka but declares {}; Kafka cannot remove partitions (declare at least {})",
                existing.partitions, declared.partitions, existing.partitions
            ),
        });
    }
    Ok(if existing.partitions < declared.partitions {
        TopicPlan::AddPartitions(declared.partitions)
    } else {
        TopicPlan::UpToDate
    })
}

/// What `ensure_topics` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicReport {
    /// Topics created.
    pub created: Vec<String>,
    /// Topics that already existed and were adopted or kept.
    pub existing: Vec<String>,
    /// Topics whose partitions grew.
    pub grown: Vec<String>,
    /// Topics whose managed configs were set back, as `topic: key`.
    pub config_reset: Vec<String>,
}

/// An admin client for the given bootstrap servers and extra client properties.
pub fn admin_client(
    bootstrap_servers: &str,
    properties: &BTreeMap<String, String>,
) -> Result<Admin, ProvisionError> {
    client_config(bootstrap_servers, properties)
        .create()
        .map(Arc::new)
        .map_err(|error| ProvisionError::kafka("creating the Kafka admin client", error))
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(OPERATION_TIMEOUT))
        .request_timeout(Some(OPERATION_TIMEOUT))
}

/// Reads a topic's partitions and replication factor; `None` when it does not exist.
pub async fn read_topic(
    admin: &Admin,
    topic: &str,
) -> Result<Option<ExistingTopic>, ProvisionError> {
    let admin = Arc::clone(admin);
    let name = topic.to_string();
    // librdkafka's metadata call blocks; keep it off the async workers.
    let metadata = tokio::task::spawn_blocking(move || {
        admin.inner().fetch_metadata(Some(&name), OPERATION_TIMEOUT)
    })
    .await
    .map_err(|error| ProvisionError::Internal(format!("metadata task failed: {error}")))?
    .map_err(|error| ProvisionError::kafka(format!("reading metadata of topic {topic}"), error))?;
    let Some(found) = metadata
        .topics()
        .iter()
        .find(|candidate| candidate.name() == topic)
    else {
        return Ok(None);
    };
    match found.error() {
        None => {}
        Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            return Ok(None);
        }
        Some(code) => {
            return Err(ProvisionError::kafka(
                format!("reading metadata of topic {topic}"),
                KafkaError::MetadataFetch(RDKafkaErrorCode::from(code)),
            ));
        }
    }
    let partitions = i32::try_from(found.partitions().len()).unwrap_or(i32::MAX);
    let replication_factor = found
        .partitions()
        .first()
        .map(|partition| i32::try_from(partition.replicas().len()).unwrap_or(i32::MAX))
        .unwrap_or_default();
    Ok(Some(ExistingTopic {
        partitions,
        replication_factor,
    }))
}

/// Creates, adopts or grows the Pipeline's topics and sets drifted managed configs back.
/// Refuses, changing nothing, when a topic would need a partition decrease or a
/// replication-factor change.
pub async fn ensure_topics(
    admin: &Admin,
    pipeline: &Pipeline,
) -> Result<TopicReport, ProvisionError> {
    let definitions = topic_definitions(pipeline);
    let mut plans = Vec::new();
    for definition in &definitions {
        let existing = read_topic(admin, &definition.name).await?;
        plans.push(plan_topic(definition, existing.as_ref())?);
    }

    let mut report = TopicReport::default();
    for (definition, plan) in definitions.iter().zip(plans) {
        match plan {
            TopicPlan::Create => {
                if create_topic(admin, definition).await? {
                    report.created.push(definition.name.clone());
                } else {
                    // Metadata lagged behind a creation moments ago: adopted, checked next time.
                    report.existing.push(definition.name.clone());
                }
                continue;
            }
            TopicPlan::AddPartitions(total) => {
                let count = usize::try_from(total).unwrap_or_default();
                let outcome = admin
                    .create_partitions(&[NewPartitions::new(&definition.name, count)], &options())
                    .await;
                admin_outcome(
                    outcome,
                    &format!("adding partitions to {}", definition.name),
                )?;
                report.grown.push(definition.name.clone());
            }
            TopicPlan::UpToDate => {}
        }
        report.existing.push(definition.name.clone());
        for key in reset_drifted_configs(admin, definition).await? {
            report
                .config_reset
                .push(format!("{}: {key}", definition.name));
        }
    }
    Ok(report)
}

/// Creates the topic; `false` when it already existed.
async fn create_topic(admin: &Admin, definition: &TopicDefinition) -> Result<bool, ProvisionError> {
    let mut topic = NewTopic::new(
        &definition.name,
        definition.partitions,
        TopicReplication::Fixed(definition.replication_factor),
    );
    for (key, value) in &definition.config {
        topic = topic.set(key, value);
    }
    let results = admin
        .create_topics(&[topic], &options())
        .await
        .map_err(|error| {
            ProvisionError::kafka(format!("creating topic {}", definition.name), error)
        })?;
    let mut created = true;
    for result in results {
        match result {
            Ok(_) => {}
            // Another reconcile (or another runner) created it first.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => created = false,
            Err((topic, code)) => {
                return Err(ProvisionError::kafka(
                    format!("creating topic {topic}"),
                    KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(created)
}

/// Sets managed config entries that differ back to their declared values. The legacy
/// AlterConfigs request replaces a topic's whole dynamic config, so every other dynamic entry
/// is sent along unchanged.
async fn reset_drifted_configs(
    admin: &Admin,
    definition: &TopicDefinition,
) -> Result<Vec<String>, ProvisionError> {
    let drift = drifted_configs(admin, definition).await?;
    if drift.drifted.is_empty() {
        return Ok(Vec::new());
    }
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&definition.name));
    for (key, value) in &drift.alter {
        alter = alter.set(key, value);
    }
    let outcome = admin.alter_configs(&[alter], &options()).await;
    admin_outcome(
        outcome,
        &format!("setting configs of topic {}", definition.name),
    )?;
    Ok(drift.drifted.into_iter().map(|(key, _)| key).collect())
}

/// The managed configs of a topic that differ from the declaration.
struct ConfigDrift {
    /// Each drifted key with its current value (`None`: unset).
    drifted: Vec<(String, Option<String>)>,
    /// The whole dynamic config to send: the current dynamic entries, the declared ones on top.
    alter: BTreeMap<String, String>,
}

async fn drifted_configs(
    admin: &Admin,
    definition: &TopicDefinition,
) -> Result<ConfigDrift, ProvisionError> {
    if definition.config.is_empty() {
        return Ok(ConfigDrift {
            drifted: Vec::new(),
            alter: BTreeMap::new(),
        });
    }
    let context = || format!("reading configs of topic {}", definition.name);
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(&definition.name)], &options())
        .await
        .map_err(|error| ProvisionError::kafka(context(), error))?;
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    let mut dynamic: BTreeMap<String, String> = BTreeMap::new();
    for result in results {
        let resource =
            result.map_err(|code| ProvisionError::kafka(context(), KafkaError::AdminOp(code)))?;
        for entry in resource.entries {
            if let Some(value) = entry.value {
                if entry.source == ConfigSource::DynamicTopic {
                    dynamic.insert(entry.name.clone(), value.clone());
                }
                current.insert(entry.name, value);
            }
        }
    }
    let drifted = definition
        .config
        .iter()
        .filter(|(key, value)| current.get(*key) != Some(*value))
        .map(|(key, _)| (key.clone(), current.get(key).cloned()))
        .collect();
    dynamic.extend(definition.config.clone());
    Ok(ConfigDrift {
        drifted,
        alter: dynamic,
    })
}

/// What `ensure_topics` would do, changing nothing: a line per change, in the order it would
/// make them. A change Kafka cannot make is the same error `ensure_topics` returns.
pub async fn plan_topics(
    admin: &Admin,
    pipeline: &Pipeline,
) -> Result<Vec<String>, ProvisionError> {
    let mut lines = Vec::new();
    for definition in &topic_definitions(pipeline) {
        let existing = read_topic(admin, &definition.name).await?;
        let name = &definition.name;
        match (plan_topic(definition, existing.as_ref())?, &existing) {
            (TopicPlan::Create, _) => {
                let config: Vec<String> = definition
                    .config
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                lines.push(format!(
                    "create topic {name}: {} partitions, replication factor {}, config {}",
                    definition.partitions,
                    definition.replication_factor,
                    if config.is_empty() {
                        "none".to_string()
                    } else {
                        config.join(", ")
                    }
                ));
                continue;
            }
            (TopicPlan::AddPartitions(total), Some(existing)) => lines.push(format!(
                "grow topic {name} from {} to {total} partitions",
                existing.partitions
            )),
            _ => {}
        }
        for (key, current) in drifted_configs(admin, definition).await?.drifted {
            let declared = definition.config.get(&key).cloned().unwrap_or_default();
            lines.push(format!(
                "set config {key} of topic {name} back to {declared} (now {})",
                current.unwrap_or_else(|| "unset".to_string())
            ));
        }
    }
    Ok(lines)
}

/// An admin request's outcome as one result: the request's own error or the first error of
/// a resource it names, both with `context`.
fn admin_outcome<Resource, Failed>(
    outcome: KafkaResult<Vec<Result<Resource, (Failed, RDKafkaErrorCode)>>>,
    context: &str,
) -> Result<(), ProvisionError> {
    let results = outcome.map_err(|error| ProvisionError::kafka(context, error))?;
    for result in results {
        result.map_err(|(_, code)| ProvisionError::kafka(context, KafkaError::AdminOp(code)))?;
    }
    Ok(())
}

/// Deletes the Pipeline's topics; topics already gone are fine.
pub async fn delete_topics(admin: &Admin, pipeline: &Pipeline) -> Result<(), ProvisionError> {
    // The run ledger too when the schedule was removed since: it must not outlive the Pipeline.
    let mut names: Vec<String> = topic_definitions(pipeline)
        .into_iter()
        .map(|topic| topic.name)
        .collect();
    if pipeline.schedule().is_none() {
        names.push(runs_topic_definition(pipeline).name);
    }
    let references: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(&references, &options())
        .await
        .map_err(|error| ProvisionError::kafka("deleting topics", error))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(ProvisionError::kafka(
                    format!("deleting topic {topic}"),
                    KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

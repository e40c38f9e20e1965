//! `rtdp-operator plan -f pipeline.yaml`: what applying a Pipeline manifest would do, across
//! Kubernetes, Kafka and Cassandra, changing nothing.
//!
//! Every answer comes from the place that would act: the API server judges the Pipeline
//! (server-side apply, dry run: the CRD's rules and the admission webhook), Kafka and
//! Cassandra are read and compared by the same planning code the reconcile uses
//! (`rtdp_provisioning::kafka::plan_topics`, `rtdp_provisioning::cassandra::plan_schema`), and
//! each owned object is applied with the operator's field manager as a dry run and compared
//! with the live one. Nothing is written: every write is a dry run, and Kafka and Cassandra are
//! only read.

use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use rtdp_crds::Pipeline;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cassandra::CassandraSessions;
use crate::controller::autoscaler;
use crate::kafka::KafkaClients;
use crate::resources::{self, BuildContext, Ingest};

/// A placeholder uid for the owner references of a Pipeline that does not exist yet.
const NEW_PIPELINE_UID: &str = "00000000-0000-0000-0000-000000000000";

/// What applying the manifest would do.
#[derive(Debug, Default)]
pub struct Plan {
    /// `namespace/name`.
    pub pipeline: String,
    /// Whether the Pipeline exists already.
    pub exists: bool,
    /// The Pipeline's own spec changes, one line each.
    pub spec_changes: Vec<String>,
    /// What would happen to the topics.
    pub kafka: Vec<String>,
    /// The CQL statements that would run.
    pub cassandra: Vec<String>,
    /// What would happen to the owned Kubernetes objects.
    pub kubernetes: Vec<String>,
    /// What would be refused, and why.
    pub refused: Vec<String>,
    /// Whether Kafka, Cassandra and the objects were planned (not when the API server
    /// refuses the Pipeline itself).
    pub planned: bool,
}

impl Plan {
    /// Whether applying would be refused somewhere.
    pub fn is_refused(&self) -> bool {
        !self.refused.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.exists { "changed" } else { "created" };
        writeln!(formatter, "Pipeline {} would be {state}.", self.pipeline)?;
        let sections = [
            ("Pipeline spec", &self.spec_changes),
            ("Kafka", &self.kafka),
            ("Cassandra", &self.cassandra),
            ("Kubernetes", &self.kubernetes),
            ("Refused", &self.refused),
        ];
        for (title, lines) in sections {
            writeln!(formatter, "\n{title}:")?;
            if lines.is_empty() {
                let planned = self.planned || title == "Refused";
                writeln!(
                    formatter,
                    "  {}",
                    if planned {
                        "(no change)"
                    } else {
                        "(not planned)"
                    }
                )?;
            }
            for line in lines {
                writeln!(formatter, "  {line}")?;
            }
        }
        writeln!(
            formatter,
            "\nNothing was changed (dry run). {}",
            if self.is_refused() {
                "Applying it would be refused as above."
            } else {
                "Apply with kubectl apply -f."
            }
        )
    }
}

/// Plans `pipeline` (its namespace set) against the cluster, Kafka and Cassandra.
pub async fn plan(client: &Client, mut pipeline: Pipeline, build: &BuildContext) -> Plan {
    let namespace = pipeline.namespace_or_default();
    let name = pipeline.name_any();
    let mut plan = Plan {
        pipeline: format!("{namespace}/{name}"),
        ..Plan::default()
    };
    let api: Api<Pipeline> = Api::namespaced(client.clone(), &namespace);
    let live = match api.get_opt(&name).await {
        Ok(live) => live,
        Err(error) => {
            plan.refused.push(format!(
                "reading Pipeline {namespace}/{name}: {}",
                api_message(&error)
            ));
            return plan;
        }
    };
    plan.exists = live.is_some();

    // The API server's verdict: the CRD's schema and rules, and the admission webhook.
    let dry_run = PatchParams::apply("rtdp-plan").force().dry_run();
    let mut manifest = serde_json::to_value(&pipeline).unwrap_or(Value::Null);
    if let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.retain(|key, _| {
            matches!(
                key.as_str(),
                "name" | "namespace" | "labels" | "annotations"
            )
        });
    }
    if let Some(object) = manifest.as_object_mut() {
        object.remove("status");
    }
    match api.patch(&name, &dry_run, &Patch::Apply(&manifest)).await {
        Ok(applied) => {
            if let Some(live) = &live {
                plan.spec_changes = changed_paths(
                    "spec",
                    &serde_json::to_value(&live.spec).unwrap_or(Value::Null),
                    &serde_json::to_value(&applied.spec).unwrap_or(Value::Null),
                );
            }
        }
        Err(error) => {
            plan.refused.push(format!(
                "the API server refuses the Pipeline: {}",
                api_message(&error)
            ));
            return plan;
        }
    }
    plan.planned = true;
    if let Some(live) = &live {
        pipeline.metadata.uid = live.metadata.uid.clone();
        pipeline.metadata.generation = live.metadata.generation;
        pipeline.status = live.status.clone();
    } else {
        pipeline.metadata.uid = Some(NEW_PIPELINE_UID.to_string());
    }

    let kafka = KafkaClients::default();
    match kafka.admin(client, &pipeline).await {
        Ok(admin) => match rtdp_provisioning::kafka::plan_topics(&admin, &pipeline).await {
            Ok(lines) => plan.kafka = lines,
            Err(error) => plan.refused.push(format!("Kafka: {error}")),
        },
        Err(error) => plan.refused.push(format!("Kafka: {error}")),
    }
    let cassandra = CassandraSessions::default();
    match cassandra.session(client, &pipeline).await {
        Ok(session) => match rtdp_provisioning::cassandra::plan_schema(&session, &pipeline).await {
            Ok(statements) => plan.cassandra = statements,
            Err(error) => plan.refused.push(format!("Cassandra: {error}")),
        },
        Err(error) => plan.refused.push(format!("Cassandra: {error}")),
    }

    let autoscaled = pipeline
        .spec
        .runner
        .autoscaling
        .as_ref()
        .map(|spec| autoscaler::current_replicas(&pipeline, spec, None));
    let replicas = resources::processor::replicas(&pipeline, autoscaled);
    match resources::desired_objects(&pipeline, build, replicas) {
        Ok(desired) => plan.kubernetes = plan_objects(client, &pipeline, desired).await,
        Err(error) => plan.refused.push(format!("Kubernetes objects: {error}")),
    }
    plan
}

/// Each owned object: created, changed (which fields) or unchanged; an ingest workload of the
/// other kind deleted.
async fn plan_objects(
    client: &Client,
    pipeline: &Pipeline,
    desired: resources::DesiredObjects,
) -> Vec<String> {
    let namespace = pipeline.namespace_or_default();
    let mut lines = vec![
        plan_object(client, &namespace, &desired.config_map).await,
        plan_object(client, &namespace, &desired.processor).await,
    ];
    let ingest = resources::ingest::name(pipeline);
    match &desired.ingest {
        Some(Ingest::Scheduled(cron_job)) => {
            lines.push(plan_object(client, &namespace, cron_job.as_ref()).await);
            lines.extend(deleted::<Deployment>(client, &namespace, &ingest).await);
        }
        Some(Ingest::Continuous(deployment)) => {
            lines.push(plan_object(client, &namespace, deployment.as_ref()).await);
            lines.extend(deleted::<CronJob>(client, &namespace, &ingest).await);
        }
        None => {
            lines.extend(deleted::<Deployment>(client, &namespace, &ingest).await);
            lines.extend(deleted::<CronJob>(client, &namespace, &ingest).await);
        }
    }
    lines.push(plan_object(client, &namespace, &desired.service).await);
    lines
}

async fn plan_object<K>(client: &Client, namespace: &str, object: &K) -> String
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.name_any();
    let kind = K::kind(&());
    let live = match api.get_opt(&name).await {
        Ok(Some(live)) => live,
        Ok(None) => return format!("create {kind} {namespace}/{name}"),
        Err(error) => {
            return format!(
                "{kind} {namespace}/{name}: cannot be read: {}",
                api_message(&error)
            );
        }
    };
    let dry_run = PatchParams::apply("rtdp-operator").force().dry_run();
    match api.patch(&name, &dry_run, &Patch::Apply(object)).await {
        Ok(applied) => {
            let changes = changed_paths("", &comparable(&live), &comparable(&applied));
            if changes.is_empty() {
                format!("{kind} {namespace}/{name}: unchanged")
            } else {
                format!("change {kind} {namespace}/{name}: {}", changes.join("; "))
            }
        }
        Err(error) => format!(
            "{kind} {namespace}/{name}: the API server refuses it: {}",
            api_message(&error)
        ),
    }
}

async fn deleted<K>(client: &Client, namespace: &str, name: &str) -> Option<String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    matches!(api.get_opt(name).await, Ok(Some(_)))
        .then(|| format!("delete {} {namespace}/{name}", K::kind(&())))
}

/// The API server's own message for a refused request, without the status' wrapping.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(response) => response.message.clone(),
        other => other.to_string(),
    }
}

/// An object without what the server maintains (status, resource version, managed fields,
/// timestamps), for comparing.
fn comparable<K: Serialize>(object: &K) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in [
                "managedFields",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "uid",
            ] {
                metadata.remove(key);
            }
        }
    }
    value
}

/// The paths where `after` differs from `before`, with both values when they are short
/// scalars (`spec.replicas: 2 → 3`). Pure.
pub fn changed_paths(prefix: &str, before: &Value, after: &Value) -> Vec<String> {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match (before, after) {
        (Value::Object(before), Value::Object(after)) => {
            let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|key| {
                    changed_paths(
                        &join(key),
                        before.get(key).unwrap_or(&Value::Null),
                        after.get(key).unwrap_or(&Value::Null),
                    )
                })
                .collect()
        }
        (before, after) if before == after => Vec::new(),
        (before, after) => {
            let short = |value: &Value| match value {
                Value::Null => Some("(none)".to_string()),
                Value::String(text) if text.len() <= 60 && !text.contains('\n') => {
                    Some(text.clone())
                }
                Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
                _ => None,
            };
            let path = if prefix.is_empty() { "(root)" } else { prefix };
            match (short(before), short(after)) {
                (Some(before), Some(after)) => vec![format!("{path}: {before} → {after}")],
                _ => vec![path.to_string()],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn changed_paths_name_each_difference_with_short_values() {
        let before = json!({"spec": {"replicas": 2, "template": {"args": ["process"]}, "same": 1},
                            "data": {"pipeline.yaml": "a\nb"}});
        let after = json!({"spec": {"replicas": 3, "template": {"args": ["ingest"]}, "same": 1},
                           "data": {"pipeline.yaml": "a\nc"}, "extra": "x"});
        assert_eq!(
            changed_paths("", &before, &after),
            [
                "data.pipeline.yaml",
                "extra: (none) → x",
                "spec.replicas: 2 → 3",
                "spec.template.args",
            ]
        );
        assert!(changed_paths("spec", &before, &before).is_empty());
    }

    #[test]
    fn the_plan_says_nothing_was_changed_and_whether_it_would_be_refused() {
        let mut plan = Plan {
            pipeline: "demo/listings".into(),
            exists: true,
            planned: true,
            kafka: vec!["grow topic demo.listings from 2 to 3 partitions".into()],
            ..Plan::default()
        };
        let text = plan.to_string();
        assert!(
            text.starts_with("Pipeline demo/listings would be changed."),
            "{text}"
        );
        for expected in [
            "Kafka:\n  grow topic demo.listings from 2 to 3 partitions",
            "Cassandra:\n  (no change)",
            "Nothing was changed (dry run).",
        ] {
            assert!(text.contains(expected), "{expected:?} in {text}");
        }
        plan.refused.push("Kafka: no".into());
        assert!(plan.is_refused());
        assert!(plan.to_string().contains("would be refused"));
    }
}

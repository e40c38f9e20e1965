//! The Pipeline CRD against the real API server of the local stack: every example is accepted
//! (server-side dry run), each invalid manifest is rejected with a message naming the problem,
//! and a partition decrease is refused on update. Needs `dev/stack up`.

use std::path::{Path, PathBuf};

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use rtdp_crds::Pipeline;
use rtdp_test_support::process::{run, run_ok};
use rtdp_test_support::{kube_client, required_env, unique_name};
use serde_json::{Value, json};

async fn install_crd(client: &Client) {
    rtdp_test_support::kubernetes::install_crd(client, &rtdp_crds::crd()).await;
}

fn pipelines(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<Pipeline>(&());
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn examples() -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .expect("reading examples/")
        .map(|entry| entry.expect("an examples/ entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "examples/ holds at least two Pipelines");
    files
}

#[tokio::test]
async fn every_example_applies_with_server_side_dry_run() {
    let client = kube_client().await;
    install_crd(&client).await;
    // The same command a user types, with the kubectl that `dev/stack env` puts on PATH.
    let kubeconfig = required_env("KUBECONFIG");
    for example in examples() {
        let path = example.to_str().expect("a UTF-8 path");
        let stdout = run_ok(
            "kubectl",
            &[
                "--kubeconfig",
                &kubeconfig,
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "--namespace",
                "default",
                "-f",
                path,
            ],
            None,
        );
        assert!(
            stdout.contains("(server dry run)"),
            "unexpected kubectl output: {stdout}"
        );
    }
}

#[test]
fn every_example_parses_into_the_rust_types() {
    for example in examples() {
        let pipeline = rtdp_crds::load_pipeline(&example)
            .unwrap_or_else(|error| panic!("{}: {error}", example.display()));
        assert!(!pipeline.spec.schema.fields.is_empty());
    }
}

/// A small valid Pipeline that each invalid case changes in one place.
fn valid_pipeline(name: &str) -> Value {
    json!({
        "apiVersion": "rtdp.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "kafka": {"bootstrapServers": ["127.0.0.1:9092"]},
            "topic": {"partitions": 3},
            "source": {"http": {
                "url": "http://127.0.0.1:8089/search",
                "recordsPointer": "/results",
                "keyField": "/zpid",
                "schedule": "@daily"
            }},
            "schema": {
                "fields": [
                    {"name": "zpid", "path": "/zpid", "type": "bigint", "required": true},
                    {"name": "city", "type": "text", "required": true},
                    {"name": "price", "type": "bigint", "required": true}
                ],
                "derived": [{"name": "price_band", "type": "text", "expression": "price > 500000 ? 'high' : 'low'"}]
            },
            "cassandra": {
                "contactPoints": ["127.0.0.1:9042"],
                "keyspace": {"name": "listings"},
                "tables": [
                    {"name": "by_id", "partitionKey": ["zpid"]},
                    {"name": "by_city", "partitionKey": ["city"],
                     "clusteringColumns": [{"name": "price"}, {"name": "zpid"}]}
                ]
            }
        }
    })
}

/// Sets the value at a JSON pointer whose parent exists.
fn set(mut document: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer with a parent");
    let parent = document
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no parent for {pointer}"));
    match parent {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("an array index");
            items[index] = value;
        }
        other => panic!("cannot set {pointer} inside {other}"),
    }
    document
}

fn remove(mut document: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer with a parent");
    if let Some(Value::Object(map)) = document.pointer_mut(parent) {
        map.remove(key);
    }
    document
}

struct InvalidCase {
    what: &'static str,
    manifest: Value,
    /// Every fragment must appear in the API server's message.
    expected: &'static [&'static str],
}

fn invalid_cases(name: &str) -> Vec<InvalidCase> {
    let valid = || valid_pipeline(name);
    vec![
        InvalidCase {
            what: "a backfill id that is not a DNS label",
            manifest: set(
                valid(),
                "/spec/backfill",
                json!({"id": "Week 47", "from": "2026-11-20T00:00:00Z", "to": "2026-11-27T00:00:00Z"}),
            ),
            expected: &["spec.backfill.id", "should match"],
        },
        InvalidCase {
            what: "a backfill with no parallelism",
            manifest: set(
                valid(),
                "/spec/backfill",
                json!({"id": "week-47", "from": "2026-11-20T00:00:00Z", "to": "2026-11-27T00:00:00Z", "parallelism": 0}),
            ),
            expected: &["spec.backfill.parallelism", "greater than or equal to 1"],
        },
        InvalidCase {
            what: "a backfill from a date without a time",
            manifest: set(
                valid(),
                "/spec/backfill",
                json!({"id": "week-47", "from": "2026-11-20", "to": "2026-11-27T00:00:00Z"}),
            ),
            expected: &["spec.backfill.from", "should match"],
        },
        InvalidCase {
            what: "a catch-up on a polling source",
            manifest: set(
                set(
                    remove(valid(), "/spec/source/http/schedule"),
                    "/spec/source/http/pollInterval",
                    json!("5m"),
                ),
                "/spec/source/http/catchUp",
                json!({"policy": "All"}),
            ),
            expected: &[
                "spec.source.http.catchUp",
                "catchUp is about the runs of a schedule",
            ],
        },
        InvalidCase {
            what: "a catch-up policy that does not exist",
            manifest: set(
                valid(),
                "/spec/source/http/catchUp",
                json!({"policy": "Some"}),
            ),
            expected: &["spec.source.http.catchUp.policy", "Unsupported value"],
        },
        InvalidCase {
            what: "a catch-up of no intervals",
            manifest: set(
                valid(),
                "/spec/source/http/catchUp",
                json!({"maxIntervals": 0}),
            ),
            expected: &[
                "spec.source.http.catchUp.maxIntervals",
                "greater than or equal to 1",
            ],
        },
        InvalidCase {
            what: "zero partitions",
            manifest: set(valid(), "/spec/topic/partitions", json!(0)),
            expected: &["spec.topic.partitions", "greater than or equal to 1"],
        },
        InvalidCase {
            what: "no bootstrap servers",
            manifest: set(valid(), "/spec/kafka/bootstrapServers", json!([])),
            expected: &[
                "spec.kafka.bootstrapServers",
                "should have at least 1 items",
            ],
        },
        InvalidCase {
            what: "duplicate field names",
            manifest: set(
                valid(),
                "/spec/schema/fields/2",
                json!({"name": "city", "type": "text"}),
            ),
            expected: &["spec.schema.fields[2]", "Duplicate value"],
        },
        InvalidCase {
            what: "a field name that is not a CQL identifier",
            manifest: set(valid(), "/spec/schema/fields/1/name", json!("City-Name")),
            expected: &["spec.schema.fields[1].name", "should match"],
        },
        InvalidCase {
            what: "an unknown CQL type",
            manifest: set(valid(), "/spec/schema/fields/2/type", json!("string")),
            expected: &[
                "spec.schema.fields[2].type",
                "Unsupported value: \"string\"",
            ],
        },
        InvalidCase {
            what: "a partition key that is not a declared field",
            manifest: set(
                valid(),
                "/spec/cassandra/tables/0/partitionKey",
                json!(["listing_id"]),
            ),
            expected: &[
                "spec.cassandra.tables",
                "every partitionKey column must be a field or derived field",
            ],
        },
        InvalidCase {
            what: "a partition key read from an optional field without a default",
            manifest: set(
                valid(),
                "/spec/schema/fields/1",
                json!({"name": "city", "type": "text"}),
            ),
            expected: &[
                "spec.cassandra.tables",
                "a partitionKey column may never be null",
            ],
        },
        InvalidCase {
            what: "a clustering column read from an optional field without a default",
            manifest: set(
                valid(),
                "/spec/schema/fields/2",
                json!({"name": "price", "type": "bigint"}),
            ),
            expected: &[
                "spec.cassandra.tables",
                "a clusteringColumns column may never be null",
            ],
        },
        InvalidCase {
            what: "a clustering column that is not a declared field",
            manifest: set(
                valid(),
                "/spec/cassandra/tables/1/clusteringColumns/0/name",
                json!("bedrooms"),
            ),
            expected: &[
                "spec.cassandra.tables",
                "every clusteringColumns entry must name a field",
            ],
        },
        InvalidCase {
            what: "a column in both the partition key and the clustering columns",
            manifest: set(
                valid(),
                "/spec/cassandra/tables/1/clusteringColumns/0/name",
                json!("city"),
            ),
            expected: &[
                "spec.cassandra.tables[1]",
                "both in partitionKey and clusteringColumns",
            ],
        },
        InvalidCase {
            what: "a schedule that is not cron",
            manifest: set(
                valid(),
                "/spec/source/http/schedule",
                json!("every day at noon"),
            ),
            expected: &["spec.source.http.schedule", "should match"],
        },
        InvalidCase {
            what: "both a schedule and a poll interval",
            manifest: set(valid(), "/spec/source/http/pollInterval", json!("5m")),
            expected: &[
                "spec.source.http",
                "exactly one of schedule (cron) or pollInterval",
            ],
        },
        InvalidCase {
            what: "a source with neither http nor generator",
            manifest: set(valid(), "/spec/source", json!({})),
            expected: &["spec.source", "exactly one of http or generator"],
        },
        InvalidCase {
            what: "a key field that is not a declared field's path",
            manifest: set(valid(), "/spec/source/http/keyField", json!("/id")),
            expected: &[
                "spec.source.http.keyField",
                "must be the path of a field declared",
            ],
        },
        InvalidCase {
            what: "no tables",
            manifest: set(valid(), "/spec/cassandra/tables", json!([])),
            expected: &["spec.cassandra.tables", "should have at least 1 items"],
        },
        InvalidCase {
            what: "an unknown deletion policy",
            manifest: set(valid(), "/spec/deletionPolicy", json!("Orphan")),
            expected: &["spec.deletionPolicy", "Unsupported value: \"Orphan\""],
        },
        InvalidCase {
            what: "autoscaling bounds upside down",
            manifest: set(
                valid(),
                "/spec/runner",
                json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}),
            ),
            expected: &[
                "spec.runner.autoscaling",
                "minReplicas must not exceed maxReplicas",
            ],
        },
        InvalidCase {
            what: "an objective without a bound",
            manifest: set(valid(), "/spec/slo", json!({})),
            expected: &["spec.slo", "set maxLagSeconds, maxStalenessSeconds or both"],
        },
        InvalidCase {
            what: "a Pipeline name that is not a DNS label",
            manifest: set(valid(), "/metadata/name", json!("listings.v2")),
            expected: &["metadata.name must be a DNS label"],
        },
        InvalidCase {
            what: "a datacenter with replication 0",
            manifest: set(
                valid(),
                "/spec/cassandra/keyspace/replication",
                json!({"strategy": "NetworkTopologyStrategy", "datacenters": {"dc1": 0}}),
            ),
            expected: &[
                "spec.cassandra.keyspace.replication.datacenters",
                "between 1 and 16",
            ],
        },
        InvalidCase {
            what: "a datacenter replication beyond any cluster (and beyond i32)",
            manifest: set(
                valid(),
                "/spec/cassandra/keyspace/replication",
                json!({"strategy": "NetworkTopologyStrategy", "datacenters": {"dc1": 5_000_000_000u64}}),
            ),
            expected: &[
                "spec.cassandra.keyspace.replication.datacenters",
                "between 1 and 16",
            ],
        },
        InvalidCase {
            what: "the dead-letter topic named like the main topic",
            manifest: set(
                valid(),
                "/spec/topic",
                json!({"name": "listings", "deadLetter": {"name": "listings"}}),
            ),
            expected: &["spec.topic.deadLetter.name", "must differ from topic.name"],
        },
        InvalidCase {
            what: "a topic named ..",
            manifest: set(valid(), "/spec/topic", json!({"name": ".."})),
            expected: &["spec.topic.name", "may not be . or .."],
        },
        InvalidCase {
            what: "a dead-letter topic named .",
            manifest: set(valid(), "/spec/topic", json!({"deadLetter": {"name": "."}})),
            expected: &["spec.topic.deadLetter.name", "may not be . or .."],
        },
        InvalidCase {
            what: "a body with a GET request",
            manifest: set(
                valid(),
                "/spec/source/http/body",
                json!("{\"location\": \"houston\"}"),
            ),
            expected: &["spec.source.http.body", "only with method: POST"],
        },
        InvalidCase {
            what: "PageNumber pagination without the page parameter",
            manifest: set(
                valid(),
                "/spec/source/http/pagination",
                json!({"type": "PageNumber"}),
            ),
            expected: &[
                "spec.source.http.pagination",
                "PageNumber pagination needs pageParam",
            ],
        },
        InvalidCase {
            what: "a start page beyond any API's page count (and beyond i32)",
            manifest: set(
                valid(),
                "/spec/source/http/pagination",
                json!({"type": "PageNumber", "pageParam": "page", "startPage": 5_000_000_000u64}),
            ),
            expected: &[
                "spec.source.http.pagination.startPage",
                "less than or equal to 1000000",
            ],
        },
        InvalidCase {
            what: "a derived field reusing a field's name",
            manifest: set(valid(), "/spec/schema/derived/0/name", json!("price")),
            expected: &["spec.schema.derived", "must not reuse the name of a field"],
        },
        InvalidCase {
            what: "a records pointer that is not a JSON pointer",
            manifest: set(
                valid(),
                "/spec/source/http/recordsPointer",
                json!("results"),
            ),
            expected: &["spec.source.http.recordsPointer", "should match"],
        },
        InvalidCase {
            what: "NetworkTopologyStrategy without datacenters",
            manifest: set(
                valid(),
                "/spec/cassandra/keyspace/replication",
                json!({"strategy": "NetworkTopologyStrategy"}),
            ),
            expected: &[
                "spec.cassandra.keyspace.replication",
                "NetworkTopologyStrategy needs datacenters",
            ],
        },
        InvalidCase {
            what: "a header with an inline value and a Secret reference",
            manifest: set(
                valid(),
                "/spec/source/http/headers",
                json!([{"name": "X-Api-Key", "value": "s3cret",
                        "valueFrom": {"secretKeyRef": {"name": "api", "key": "key"}}}]),
            ),
            expected: &[
                "spec.source.http.headers[0]",
                "exactly one of value or valueFrom",
            ],
        },
        InvalidCase {
            what: "a missing schema",
            manifest: remove(valid(), "/spec/schema"),
            expected: &["spec.schema", "Required value"],
        },
        InvalidCase {
            what: "an inline Kafka password (unknown field)",
            manifest: set(
                valid(),
                "/spec/kafka/sasl",
                json!({"mechanism": "PLAIN", "credentialsSecretRef": {"name": "kafka"},
                       "password": "hunter2"}),
            ),
            expected: &["unknown field \"spec.kafka.sasl.password\""],
        },
    ]
}

/// `kubectl apply --dry-run=server` of a manifest given on stdin: what a user types, with
/// kubectl's default strict field validation (unknown fields are errors, not pruned).
fn kubectl_apply_dry_run(manifest: &Value) -> Result<String, String> {
    let kubeconfig = required_env("KUBECONFIG");
    let output = run(
        "kubectl",
        &[
            "--kubeconfig",
            &kubeconfig,
            "apply",
            "--dry-run=server",
            "--namespace",
            "default",
            "-f",
            "-",
        ],
        Some(&manifest.to_string()),
    );
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_a_message_naming_the_field() {
    let client = kube_client().await;
    install_crd(&client).await;
    let name = unique_name("invalid");

    // The base manifest itself is valid, so each rejection is due to its one change.
    kubectl_apply_dry_run(&valid_pipeline(&name))
        .expect("the base manifest of the invalid cases is valid");

    let cases = invalid_cases(&name);
    // Those the schema refuses; what needs a parser (cron, CEL, defaults) is refused by the
    // operator's admission webhook (operator/tests/it/webhook.rs) from rtdp_crds::validate.
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        match kubectl_apply_dry_run(&case.manifest) {
            Ok(_) => failures.push(format!("{}: accepted, expected a rejection", case.what)),
            Err(message) => {
                let missing: Vec<_> = case
                    .expected
                    .iter()
                    .filter(|fragment| !message.contains(**fragment))
                    .collect();
                if !missing.is_empty() {
                    failures.push(format!(
                        "{}: message lacks {missing:?}: {message}",
                        case.what
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "invalid manifests not rejected as expected:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn partitions_never_decrease() {
    let client = kube_client().await;
    install_crd(&client).await;
    let api = pipelines(&client, "default");
    let name = unique_name("partitions");
    let manifest = set(valid_pipeline(&name), "/spec/topic/partitions", json!(6));
    api.patch(
        &name,
        &PatchParams::apply("rtdp-tests"),
        &Patch::Apply(&manifest),
    )
    .await
    .expect("creating the Pipeline");

    let grow = set(manifest.clone(), "/spec/topic/partitions", json!(8));
    api.patch(
        &name,
        &PatchParams::apply("rtdp-tests"),
        &Patch::Apply(&grow),
    )
    .await
    .expect("growing partitions is allowed");

    let shrink = set(manifest, "/spec/topic/partitions", json!(4));
    let error = api
        .patch(
            &name,
            &PatchParams::apply("rtdp-tests"),
            &Patch::Apply(&shrink),
        )
        .await
        .expect_err("shrinking partitions must be rejected");
    let message = error.to_string();
    assert!(
        message.contains("spec.topic.partitions") && message.contains("can only increase"),
        "unexpected rejection: {message}"
    );
    let stored = api.get(&name).await.expect("reading the Pipeline back");
    assert_eq!(
        stored.data.pointer("/spec/topic/partitions"),
        Some(&json!(8))
    );

    api.delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the Pipeline");
}

/// Changes Kafka cannot make, refused on update: the topic renamed, the dead-letter topic's
/// partitions lowered. (Raising them is allowed.)
#[tokio::test]
async fn a_topic_rename_and_fewer_dead_letter_partitions_are_refused_on_update() {
    let client = kube_client().await;
    install_crd(&client).await;
    let api = pipelines(&client, "default");
    let name = unique_name("immutable");
    let manifest = set(
        valid_pipeline(&name),
        "/spec/topic",
        json!({"name": format!("{name}-topic"), "partitions": 3, "deadLetter": {"partitions": 2}}),
    );
    let apply = |manifest: Value| {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.patch(
                &name,
                &PatchParams::apply("rtdp-tests"),
                &Patch::Apply(&manifest),
            )
            .await
        }
    };
    apply(manifest.clone())
        .await
        .expect("creating the Pipeline");
    apply(set(
        manifest.clone(),
        "/spec/topic/deadLetter/partitions",
        json!(3),
    ))
    .await
    .expect("growing the dead-letter topic is allowed");

    let renamed = set(manifest.clone(), "/spec/topic/name", json!("another-topic"));
    let message = apply(renamed)
        .await
        .expect_err("renaming the topic must be rejected")
        .to_string();
    assert!(
        message.contains("spec.topic.name") && message.contains("topic.name is immutable"),
        "unexpected rejection: {message}"
    );
    let fewer = set(manifest, "/spec/topic/deadLetter/partitions", json!(1));
    let message = apply(fewer)
        .await
        .expect_err("fewer dead-letter partitions must be rejected")
        .to_string();
    assert!(
        message.contains("spec.topic.deadLetter.partitions")
            && message.contains("can only increase"),
        "unexpected rejection: {message}"
    );
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the Pipeline");
}

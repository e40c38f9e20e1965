//! The chart's monitoring (docs/kubernetes.md, "Monitoring"; docs/operations.md): the
//! ServiceMonitor, PodMonitor and PrometheusRule render where the cluster serves their kinds
//! (`enabled: auto`) or when forced, never otherwise; they select what they should (the
//! PodMonitor: the pods the operator really builds for the examples' Pipelines, on their
//! metrics port, and not the operator's own); the alerts are well-formed, configurable and
//! link to a runbook section that exists; the Grafana dashboard ships in a sidecar ConfigMap
//! as valid JSON with its panels filtered by the template variables; and every metric the
//! dashboard and the alerts name is one the operator or the runner exposes (their real
//! registries, encoded as `/metrics` serves them).
//!
//! Prometheus itself judges the PromQL: `promtool check rules` parses the rendered alert rules
//! and every dashboard query, and `promtool test rules` runs the alerts' unit tests
//! (`operator/tests/promtool/alerts.test.yaml`: each alert fires for what it should, after its
//! `for`, with its labels and annotations, and stays quiet for a healthy neighbour).
//!
//! Needs `helm` and `promtool` on PATH (`dev/stack build` fetches promtool, `eval "$(dev/stack
//! env)"` puts both there), no cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::helm::CHART;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use rtdp_operator::resources::{BuildContext, Ingest, desired_objects};
use rtdp_test_support::process::{output_text, run, run_ok};
use serde::Deserialize;
use serde_json::Value;

const KUBE_VERSION: &str = "1.35.0";
const RELEASE_NAMESPACE: &str = "rtdp-system";
const MONITORING_KINDS: [&str; 3] = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];
const DASHBOARD_KEY: &str = "rtdp-pipelines.json";

/// The alerts, each with a section of docs/operations.md.
const ALERTS: [&str; 7] = [
    "RtdpPipelineLagHigh",
    "RtdpPipelineStalled",
    "RtdpPipelineDeadLetters",
    "RtdpCassandraWriteErrors",
    "RtdpRunnerDown",
    "RtdpOperatorReconcileFailures",
    "RtdpOperatorNoLeader",
];

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repository_root().join(relative))
        .unwrap_or_else(|error| panic!("reading {relative}: {error}"))
}

/// `helm template rtdp <chart> -n rtdp-system` with `args`; the rendered objects.
fn render(args: &[&str]) -> Vec<Value> {
    let mut all = vec![
        "template",
        "rtdp",
        CHART,
        "--namespace",
        RELEASE_NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ];
    all.extend_from_slice(args);
    parse_documents(&run_ok("helm", &all, None))
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|error| panic!("a rendered document is not YAML: {error}\n{text}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|object| object["kind"].as_str().map(str::to_string))
        .collect()
}

/// The one object of `kind`, failing with the kinds rendered when there is not exactly one.
fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|object| object["kind"] == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind}, rendered kinds: {:?}",
        kinds(objects)
    );
    found[0]
}

fn api_versions(kinds: &[&str]) -> Vec<String> {
    kinds
        .iter()
        .flat_map(|kind| {
            [
                "--api-versions".to_string(),
                format!("monitoring.coreos.com/v1/{kind}"),
            ]
        })
        .collect()
}

fn strings(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(key, value)| {
                    let text = value
                        .as_str()
                        .unwrap_or_else(|| panic!("{key}: {value} is not a string"));
                    (key.clone(), text.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = string_map(&selector["matchLabels"]);
    let labels_match = match_labels
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions = selector["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let expressions_match = expressions.iter().all(|expression| {
        let key = expression["key"].as_str().expect("an expression's key");
        let values: Vec<&str> = expression["values"]
            .as_array()
            .map(|values| values.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match expression["operator"].as_str() {
            Some("Exists") => labels.contains_key(key),
            Some("DoesNotExist") => !labels.contains_key(key),
            Some("In") => labels
                .get(key)
                .is_some_and(|v| values.contains(&v.as_str())),
            Some("NotIn") => labels
                .get(key)
                .is_none_or(|v| !values.contains(&v.as_str())),
            other => panic!("unknown selector operator {other:?}"),
        }
    });
    assert!(
        !(match_labels.is_empty() && expressions.is_empty()),
        "an empty selector selects everything: {selector}"
    );
    labels_match && expressions_match
}

#[test]
fn monitoring_objects_render_only_where_the_cluster_serves_them() {
    let monitoring = |objects: &[Value]| -> BTreeSet<String> {
        kinds(objects)
            .into_iter()
            .filter(|kind| MONITORING_KINDS.contains(&kind.as_str()))
            .collect()
    };
    let all: BTreeSet<String> = MONITORING_KINDS
        .iter()
        .map(|kind| kind.to_string())
        .collect();

    // Default values, no Prometheus Operator API: nothing of it, and no dashboard either.
    let plain = render(&[]);
    assert_eq!(monitoring(&plain), BTreeSet::new(), "default values");
    assert!(
        !kinds(&plain).contains("ConfigMap"),
        "the dashboard is off by default: {:?}",
        kinds(&plain)
    );

    // auto: each kind renders exactly when its own API is served.
    for kind in MONITORING_KINDS {
        let args = api_versions(&[kind]);
        let expected = BTreeSet::from([kind.to_string()]);
        assert_eq!(
            monitoring(&render(&strings(&args))),
            expected,
            "only monitoring.coreos.com/v1/{kind} served"
        );
    }
    let every_api = api_versions(&MONITORING_KINDS);
    assert_eq!(monitoring(&render(&strings(&every_api))), all);

    // false wins over a served API; true renders without one (as serviceMonitor.enabled=true
    // always did).
    let mut off = every_api.clone();
    let mut on = Vec::new();
    for value in ["serviceMonitor", "podMonitor", "prometheusRule"] {
        off.extend(["--set".to_string(), format!("{value}.enabled=false")]);
        on.extend(["--set".to_string(), format!("{value}.enabled=true")]);
    }
    assert_eq!(
        monitoring(&render(&strings(&off))),
        BTreeSet::new(),
        "false"
    );
    assert_eq!(monitoring(&render(&strings(&on))), all, "true");
    let explicit_auto = render(&[
        "--set",
        "podMonitor.enabled=auto",
        "--set",
        "serviceMonitor.enabled=auto",
    ]);
    assert_eq!(monitoring(&explicit_auto), BTreeSet::new(), "auto, no API");

    // Anything else is refused, naming the key.
    for command in ["template", "lint"] {
        let output = run(
            "helm",
            &[
                command,
                CHART,
                "--kube-version",
                KUBE_VERSION,
                "--set",
                "podMonitor.enabled=sometimes",
            ],
            None,
        );
        let message = output_text(&output);
        assert!(
            !output.status.success() && message.contains("/podMonitor/enabled"),
            "helm {command} accepted podMonitor.enabled=sometimes or did not name it:\n{message}"
        );
    }

    // Clean lint with everything on.
    let mut lint = vec![
        "lint",
        "--strict",
        CHART,
        "--set",
        "dashboards.enabled=true",
    ];
    for value in [
        "serviceMonitor.enabled=true",
        "podMonitor.enabled=true",
        "prometheusRule.enabled=true",
    ] {
        lint.extend(["--set", value]);
    }
    let output = run_ok("helm", &lint, None);
    assert!(
        !output.contains("[WARNING]") && !output.contains("[ERROR]"),
        "{output}"
    );
}

/// The pod templates the operator builds for the examples' Pipelines (processor and ingest).
fn runner_pod_templates() -> Vec<(String, PodTemplateSpec)> {
    let mut templates = Vec::new();
    for file in [
        "property-listings.yaml",
        "generated-listings.yaml",
        "web-events.yaml",
    ] {
        let text = read(&format!("examples/{file}"));
        let mut pipeline = rtdp_crds::parse_pipeline(&text, file)
            .unwrap_or_else(|error| panic!("examples/{file}: {error}"));
        pipeline.metadata.namespace = Some("team-a".into());
        pipeline.metadata.uid = Some("6f2f1c6e-0000-4000-8000-000000000001".into());
        let objects = desired_objects(
            &pipeline,
            &BuildContext {
                default_image: "ghcr.io/rtdp-dev/pipeline-runner:test".into(),
            },
            rtdp_operator::resources::processor::replicas(&pipeline, None),
        )
        .unwrap_or_else(|error| panic!("building the objects of examples/{file}: {error}"));
        let processor = objects
            .processor
            .spec
            .expect("the processor's spec")
            .template;
        templates.push((format!("{file} processor"), processor));
        match objects.ingest {
            Some(Ingest::Scheduled(cron_job)) => templates.push((
                format!("{file} ingest CronJob"),
                cron_job
                    .spec
                    .expect("the CronJob's spec")
                    .job_template
                    .spec
                    .expect("the Job's spec")
                    .template,
            )),
            Some(Ingest::Continuous(deployment)) => templates.push((
                format!("{file} ingest Deployment"),
                deployment.spec.expect("the Deployment's spec").template,
            )),
            None => {}
        }
    }
    assert!(
        templates.iter().any(|(name, _)| name.contains("CronJob"))
            && templates
                .iter()
                .any(|(name, _)| name.contains("ingest Deployment")),
        "the examples should cover both ingest kinds: {:?}",
        templates.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );
    templates
}

/// Prometheus' name for a pod label in service discovery.
fn discovered_label(key: &str) -> String {
    let sanitized: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__meta_kubernetes_pod_label_{sanitized}")
}

#[test]
fn pod_monitor_selects_the_runner_pods_on_their_metrics_port() {
    let objects = render(&strings(&api_versions(&MONITORING_KINDS)));
    let monitor = the(&objects, "PodMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], RELEASE_NAMESPACE);
    let spec = &monitor["spec"];
    let selector = &spec["selector"];
    let endpoints = spec["podMetricsEndpoints"]
        .as_array()
        .expect("podMetricsEndpoints");
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let endpoint = &endpoints[0];
    let port = endpoint["port"].as_str().expect("the endpoint's port name");
    assert_eq!(endpoint["path"], "/metrics");
    let job_label = spec["jobLabel"].as_str().expect("jobLabel");

    let rule = the(&objects, "PrometheusRule");
    let runner_down = rule_named(rule, "RtdpRunnerDown");
    let runner_down_expr = runner_down["expr"].as_str().expect("an expr");

    for (name, template) in runner_pod_templates() {
        let metadata = template.metadata.expect("pod template metadata");
        let labels = metadata.labels.expect("pod template labels");
        assert!(
            selects(selector, &labels),
            "the PodMonitor's selector {selector} does not select the {name} pods {labels:?}"
        );
        let pod = template.spec.expect("a pod spec");
        let container = pod
            .containers
            .iter()
            .find(|container| container.name == "runner")
            .unwrap_or_else(|| panic!("{name}: no runner container"));
        let ports = container.ports.clone().unwrap_or_default();
        let metrics = ports
            .iter()
            .find(|candidate| candidate.name.as_deref() == Some(port))
            .unwrap_or_else(|| {
                panic!("{name}: the runner container has no port named {port}: {ports:?}")
            });
        assert_eq!(
            metrics.container_port, 9090,
            "{name}: docs/runner-contract.md"
        );
        // What the relabelings read is on the pods, and the alert's job is the pods' jobLabel.
        for relabeling in endpoint["relabelings"].as_array().expect("relabelings") {
            for source in relabeling["sourceLabels"].as_array().expect("sourceLabels") {
                let source = source.as_str().expect("a label name");
                assert!(
                    labels.keys().any(|key| discovered_label(key) == source),
                    "{name}: the relabeling reads {source}, which no pod label gives: {labels:?}"
                );
            }
        }
        let job = labels
            .get(job_label)
            .unwrap_or_else(|| panic!("{name}: no {job_label} label for the job: {labels:?}"));
        assert!(
            runner_down_expr.contains(&format!("up{{job=\"{job}\"}}")),
            "RtdpRunnerDown must read the runners' job {job}: {runner_down_expr}"
        );
    }
    let targets: BTreeSet<&str> = endpoint["relabelings"]
        .as_array()
        .expect("relabelings")
        .iter()
        .filter_map(|relabeling| relabeling["targetLabel"].as_str())
        .collect();
    assert_eq!(targets, BTreeSet::from(["pipeline_name", "role"]));
    assert!(
        !targets.contains("pipeline"),
        "a target label `pipeline` would rename the runners' own to exported_pipeline"
    );

    // Not the operator's pods, nor the uninstall check's.
    let operator = the(&objects, "Deployment");
    let operator_labels = string_map(&operator["spec"]["template"]["metadata"]["labels"]);
    assert!(!selects(selector, &operator_labels), "{operator_labels:?}");
    let check = the(&objects, "Job");
    let check_labels = string_map(&check["spec"]["template"]["metadata"]["labels"]);
    assert!(!selects(selector, &check_labels), "{check_labels:?}");

    // Namespaces: every one, or the served ones.
    assert_eq!(spec["namespaceSelector"], serde_json::json!({"any": true}));
    let served = render(&[
        "--set",
        "podMonitor.enabled=true",
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "podMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "podMonitor.interval=15s",
    ]);
    let served = the(&served, "PodMonitor");
    assert_eq!(
        served["spec"]["namespaceSelector"],
        serde_json::json!({"matchNames": ["team-a", "team-b"]})
    );
    assert_eq!(
        served["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(served["spec"]["podMetricsEndpoints"][0]["interval"], "15s");
}

#[test]
fn service_monitor_scrapes_the_operator_metrics_service() {
    let objects = render(&strings(&api_versions(&MONITORING_KINDS)));
    let monitor = the(&objects, "ServiceMonitor");
    let service = objects
        .iter()
        .find(|object| {
            object["kind"] == "Service"
                && object["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| name.ends_with("-metrics"))
        })
        .expect("the metrics Service");
    let service_name = service["metadata"]["name"].as_str().expect("a name");
    let service_labels = string_map(&service["metadata"]["labels"]);
    assert!(
        selects(&monitor["spec"]["selector"], &service_labels),
        "the ServiceMonitor does not select {service_name}: {service_labels:?}"
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        serde_json::json!({"matchNames": [RELEASE_NAMESPACE]})
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        endpoint["honorLabels"], true,
        "the per-Pipeline gauges' namespace label must not become exported_namespace"
    );

    // The operator alerts read the job Prometheus gives this ServiceMonitor's targets: the
    // Service's name, in the release namespace.
    let rule = the(&objects, "PrometheusRule");
    let selector = format!("{{job=\"{service_name}\", namespace=\"{RELEASE_NAMESPACE}\"}}");
    for alert in ["RtdpOperatorReconcileFailures", "RtdpOperatorNoLeader"] {
        let expr = rule_named(rule, alert)["expr"].as_str().expect("an expr");
        assert!(expr.contains(&selector), "{alert}: {expr} lacks {selector}");
    }
}

fn rules(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("a group's rules").iter())
        .collect()
}

fn rule_named<'a>(rule: &'a Value, alert: &str) -> &'a Value {
    rules(rule)
        .into_iter()
        .find(|candidate| candidate["alert"] == alert)
        .unwrap_or_else(|| panic!("no alert {alert} in the PrometheusRule"))
}

fn is_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|unit| rest.starts_with(unit));
        match unit {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}

/// Parentheses, brackets and braces of a PromQL expression balance (outside string literals).
fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in expr.chars() {
        if in_string {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !in_string
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn prometheus_rule_is_well_formed_and_every_alert_has_a_runbook() {
    let objects = render(&["--set", "prometheusRule.enabled=true"]);
    let rule = the(&objects, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], RELEASE_NAMESPACE);
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    assert!(!groups.is_empty());
    for group in groups {
        assert!(
            group["name"].as_str().is_some_and(|name| !name.is_empty()),
            "a group without a name: {group}"
        );
        assert!(
            group["rules"]
                .as_array()
                .is_some_and(|rules| !rules.is_empty()),
            "a group without rules: {group}"
        );
    }

    let operations = read("docs/operations.md");
    let headings: BTreeMap<String, String> = operations
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(|heading| (anchor(heading), heading.trim().to_string()))
        .collect();
    let base = "https://github.com/rtdp-dev/rtdp/blob/main/docs/operations.md";
    let runner = runner_metrics();
    let mut seen = Vec::new();
    for rule in rules(rule) {
        let object = rule.as_object().expect("a rule is a mapping");
        let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["alert", "expr", "for", "labels", "annotations"]),
            "{rule}"
        );
        let alert = rule["alert"].as_str().expect("alert is a string");
        seen.push(alert.to_string());
        let expr = rule["expr"].as_str().expect("expr is a string");
        assert!(!expr.trim().is_empty() && balanced(expr), "{alert}: {expr}");
        let duration = rule["for"].as_str().expect("for is a string");
        assert!(is_duration(duration), "{alert}: for {duration}");
        assert!(
            ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{alert}: {}",
            rule["labels"]
        );
        let annotations = string_map(&rule["annotations"]);
        let keys: BTreeSet<&str> = annotations.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["summary", "description", "runbook_url"]),
            "{alert}"
        );
        let scope: &[&str] = if alert.starts_with("RtdpOperator") {
            &["$labels.namespace"]
        } else {
            &["$labels.namespace", "$labels.pipeline"]
        };
        for key in ["summary", "description"] {
            for label in scope {
                assert!(
                    annotations[key].contains(label),
                    "{alert}: the {key} should name {label}: {}",
                    annotations[key]
                );
            }
        }
        let slug = anchor(alert);
        assert_eq!(annotations["runbook_url"], format!("{base}#{slug}"));
        assert_eq!(
            headings.get(&slug).map(String::as_str),
            Some(alert),
            "docs/operations.md has no section `## {alert}`"
        );
        // Runner series name their Pipeline "<namespace>/<name>": the alerts split it so that
        // every pipeline alert has the operator gauges' two labels.
        if metric_names(expr).iter().any(|name| runner.contains(name)) {
            for split in [
                r#""namespace", "$1", "pipeline", "([^/]+)/.+""#,
                r#""pipeline", "$1", "pipeline", "[^/]+/(.+)""#,
            ] {
                assert!(expr.contains(split), "{alert}: {expr} lacks {split}");
            }
        }
    }
    assert_eq!(
        seen.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(ALERTS),
        "the alerts"
    );
    assert_eq!(seen.len(), ALERTS.len(), "an alert twice: {seen:?}");
    // Every alert section of the runbook is an alert, and its links between sections resolve.
    for heading in headings.values() {
        if heading.starts_with("Rtdp") {
            assert!(
                ALERTS.contains(&heading.as_str()),
                "## {heading}: no such alert"
            );
        }
    }
    for (index, _) in operations.match_indices("](#") {
        let rest = &operations[index + 3..];
        let target = &rest[..rest.find(')').expect("a closed link")];
        assert!(
            headings.contains_key(target),
            "docs/operations.md links to #{target}, which is no heading"
        );
    }
}

#[test]
fn alert_thresholds_and_switches_are_values() {
    let objects = render(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.alerts.lagHigh.seconds=42",
        "--set",
        "prometheusRule.alerts.lagHigh.for=3m",
        "--set",
        "prometheusRule.alerts.stalled.seconds=7200",
        "--set",
        "prometheusRule.alerts.cassandraWriteErrors.perSecond=0.5",
        "--set",
        "prometheusRule.alerts.reconcileFailures.perSecond=0.25",
        "--set",
        "prometheusRule.alerts.noLeader.severity=warning",
        "--set",
        "prometheusRule.alerts.deadLetters.enabled=false",
        "--set",
        "prometheusRule.labels.release=kube-prometheus-stack",
        "--set",
        "prometheusRule.runbookBaseUrl=https://docs.example.com/ops",
    ]);
    let rule = the(&objects, "PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let lag = rule_named(rule, "RtdpPipelineLagHigh");
    assert!(
        lag["expr"].as_str().expect("expr").ends_with("> 42"),
        "{}",
        lag["expr"]
    );
    assert_eq!(lag["for"], "3m");
    assert!(
        lag["annotations"]["description"]
            .as_str()
            .expect("a description")
            .contains("42 s"),
        "{}",
        lag["annotations"]["description"]
    );
    assert_eq!(
        lag["annotations"]["runbook_url"],
        "https://docs.example.com/ops#rtdppipelinelaghigh"
    );
    let stalled = rule_named(rule, "RtdpPipelineStalled")["expr"]
        .as_str()
        .expect("expr");
    assert!(stalled.contains(") > 7200\n"), "{stalled}");
    let errors = rule_named(rule, "RtdpCassandraWriteErrors")["expr"]
        .as_str()
        .expect("expr");
    assert!(errors.contains("[5m])) > 0.5,"), "{errors}");
    let failures = rule_named(rule, "RtdpOperatorReconcileFailures")["expr"]
        .as_str()
        .expect("expr");
    assert!(failures.ends_with("> 0.25"), "{failures}");
    assert_eq!(
        rule_named(rule, "RtdpOperatorNoLeader")["labels"]["severity"],
        "warning"
    );
    assert!(
        rules(rule)
            .iter()
            .all(|candidate| candidate["alert"] != "RtdpPipelineDeadLetters"),
        "deadLetters.enabled=false still renders the alert"
    );
    assert_eq!(rules(rule).len(), ALERTS.len() - 1);
}

fn dashboard_file() -> Value {
    let text = read(&format!("helm/rtdp/dashboards/{DASHBOARD_KEY}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("helm/rtdp/dashboards/{DASHBOARD_KEY}: {error}"))
}

fn dashboard_config_map(objects: &[Value]) -> Option<&Value> {
    objects
        .iter()
        .find(|object| object["kind"] == "ConfigMap" && !object["data"][DASHBOARD_KEY].is_null())
}

#[test]
fn the_dashboard_ships_in_a_config_map_for_the_grafana_sidecar() {
    assert!(
        dashboard_config_map(&render(&[])).is_none(),
        "off by default"
    );

    let objects = render(&[
        "--set",
        "dashboards.enabled=true",
        "--set",
        "dashboards.annotations.grafana_folder=RTDP",
    ]);
    let config_map = dashboard_config_map(&objects).expect("the dashboard ConfigMap");
    assert_eq!(config_map["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        config_map["metadata"]["annotations"]["grafana_folder"],
        "RTDP"
    );
    let text = config_map["data"][DASHBOARD_KEY]
        .as_str()
        .expect("the JSON");
    let shipped: Value = serde_json::from_str(text)
        .unwrap_or_else(|error| panic!("the ConfigMap's dashboard is not JSON: {error}"));
    assert_eq!(shipped, dashboard_file(), "the ConfigMap carries the file");

    // Another namespace and another sidecar label.
    let objects = render(&[
        "--set",
        "dashboards.enabled=true",
        "--set",
        "dashboards.namespace=monitoring",
        "--set",
        "dashboards.labels.grafana_dashboard=null",
        "--set",
        "dashboards.labels.dashboards=rtdp",
    ]);
    let config_map = dashboard_config_map(&objects).expect("the dashboard ConfigMap");
    assert_eq!(config_map["metadata"]["namespace"], "monitoring");
    let labels = string_map(&config_map["metadata"]["labels"]);
    assert_eq!(labels.get("dashboards").map(String::as_str), Some("rtdp"));
    assert!(!labels.contains_key("grafana_dashboard"), "{labels:?}");
}

/// Every panel of the dashboard (rows' nested panels too).
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        found.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            found.extend(nested);
        }
    }
    found
}

/// Every PromQL text of the dashboard: the panels' exprs and the variables' queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries: Vec<String> = panels(dashboard)
        .into_iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap_or_default().to_string())
        .collect();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        if variable["type"] == "query" {
            for query in [
                &variable["definition"],
                &variable["query"]["query"],
                &variable["query"],
            ] {
                if let Some(text) = query.as_str() {
                    queries.push(text.to_string());
                }
            }
        }
    }
    queries
}

#[test]
fn the_dashboard_is_a_valid_grafana_dashboard_filtered_by_its_variables() {
    let dashboard = dashboard_file();
    assert_eq!(dashboard["uid"], "rtdp-pipelines");
    assert!(
        dashboard["title"]
            .as_str()
            .is_some_and(|title| !title.is_empty())
    );
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|variable| {
            (
                variable["name"].as_str().expect("a variable's name"),
                variable,
            )
        })
        .collect();
    let datasource = variables.get("datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for name in ["namespace", "pipeline"] {
        let variable = variables
            .get(name)
            .unwrap_or_else(|| panic!("no {name} variable"));
        assert_eq!(variable["type"], "query", "{name}");
        assert_eq!(variable["datasource"]["uid"], "${datasource}", "{name}");
        assert!(
            variable["query"]["query"]
                .as_str()
                .is_some_and(|query| query.starts_with("label_values(")
                    && query.ends_with(&format!(", {name})"))),
            "{name}: {}",
            variable["query"]
        );
    }

    let runner = runner_metrics();
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24)
                && grid["h"].as_u64().is_some()
                && grid["y"].as_u64().is_some(),
            "{title}: gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut references = BTreeSet::new();
        for target in targets {
            assert!(references.insert(target["refId"].to_string()), "{title}");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().expect("an expr");
            assert!(!expr.trim().is_empty() && balanced(expr), "{title}: {expr}");
            // Filtered by the variables: the runners' series by pipeline="<ns>/<name>", the
            // operator's per-Pipeline gauges by namespace and pipeline.
            for name in metric_names(expr) {
                for selector in selectors_after(expr, &name) {
                    if runner.contains(&name) {
                        assert!(
                            selector.contains(r#"pipeline=~"$namespace/$pipeline""#),
                            "{title}: {name}{selector} is not filtered by the variables"
                        );
                    } else if name.starts_with("rtdp_pipeline_") {
                        assert!(
                            selector.contains(r#"namespace=~"$namespace""#)
                                && selector.contains(r#"pipeline=~"$pipeline""#),
                            "{title}: {name}{selector} is not filtered by the variables"
                        );
                    }
                }
            }
        }
    }
    assert!(graphs >= 10, "{graphs} panels");

    // What issue #14 asks the dashboard to show.
    let used: BTreeSet<String> = dashboard_queries(&dashboard)
        .iter()
        .flat_map(|query| metric_names(query))
        .collect();
    for required in [
        "rtdp_records_consumed_total",
        "rtdp_records_written_total",
        "rtdp_records_dead_lettered_total",
        "rtdp_records_filtered_total",
        "rtdp_write_latency_seconds_bucket",
        "rtdp_cassandra_errors_total",
        "rtdp_pipeline_lag_records",
        "rtdp_pipeline_lag_seconds",
        "rtdp_pipeline_last_stored_record_timestamp_seconds",
        "rtdp_pipeline_processor_replicas",
        "rtdp_operator_reconciles_total",
        "rtdp_operator_reconcile_failures_total",
    ] {
        assert!(used.contains(required), "no panel shows {required}");
    }
}

/// The selector (`{...}`, or "" when there is none) after each use of the metric `name` in
/// `expr`.
fn selectors_after(expr: &str, name: &str) -> Vec<String> {
    let is_identifier = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    expr.match_indices(name)
        .filter(|(index, _)| {
            !expr[..*index]
                .chars()
                .next_back()
                .is_some_and(is_identifier)
                && !expr[index + name.len()..]
                    .chars()
                    .next()
                    .is_some_and(is_identifier)
        })
        .map(|(index, _)| {
            let rest = &expr[index + name.len()..];
            if rest.starts_with('{') {
                rest[..=rest.find('}').expect("a closed selector")].to_string()
            } else {
                String::new()
            }
        })
        .collect()
}

/// The `rtdp_...` metric names in a PromQL text (identifiers that start with `rtdp_`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_identifier = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (index, _) in expr.match_indices("rtdp_") {
        if expr[..index].chars().next_back().is_some_and(is_identifier) {
            continue;
        }
        let name: String = expr[index..]
            .chars()
            .take_while(|c| is_identifier(*c))
            .collect();
        names.insert(name);
    }
    names
}

/// The sample names one registry exposes, read from its own encoding (OpenMetrics text, as
/// `/metrics` serves it): a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`,
/// a gauge's name. Families with no series yet are encoded with their `# TYPE` line.
fn exposed_names(encoded: &str) -> BTreeSet<String> {
    encoded
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .flat_map(|declaration| {
            let (name, kind) = declaration
                .split_once(' ')
                .unwrap_or_else(|| panic!("a # TYPE line without a type: {declaration}"));
            match kind {
                "counter" => vec![format!("{name}_total")],
                "gauge" => vec![name.to_string()],
                "histogram" => ["bucket", "sum", "count"]
                    .iter()
                    .map(|suffix| format!("{name}_{suffix}"))
                    .collect(),
                other => panic!("{name}: metric type {other}; teach tests/it/monitoring.rs"),
            }
        })
        .collect()
}

/// Every metric name the operator and the runner expose, encoded from their real registries
/// with one series in each labelled family (prometheus-client encodes a family only once it
/// has one), with where it comes from.
fn source_metrics() -> BTreeMap<String, &'static str> {
    use pipeline_runner::telemetry::{KindLabel, OutcomeLabel, PartitionLabel};
    use rtdp_operator::metrics::{PipelineGauges, ReconcileStep};

    let operator = rtdp_operator::metrics::Metrics::new();
    operator.reconciled(std::time::Duration::from_millis(5), true);
    operator.step_finished(ReconcileStep::Topics, std::time::Duration::from_millis(1));
    operator.failed("InvalidSpec");
    operator.external_check();
    operator.set_leader(true);
    operator.set_pipeline(
        "default",
        "listings",
        PipelineGauges {
            lag_records: 0,
            lag_seconds: 0,
            last_stored_seconds: Some(1),
            processor_replicas: 1,
        },
    );
    let runner = pipeline_runner::telemetry::Metrics::new("monitoring-test");
    runner.dead_lettered(pipeline_runner::record::RejectReason::MalformedJson);
    runner
        .consumer_lag
        .get_or_create(&PartitionLabel {
            topic: "listings".into(),
            partition: "0".into(),
        })
        .set(0);
    runner
        .cassandra_errors
        .get_or_create(&KindLabel {
            kind: "timeout".into(),
        })
        .inc();
    for family in [&runner.source_requests, &runner.source_runs] {
        family
            .get_or_create(&OutcomeLabel {
                outcome: "succeeded".into(),
            })
            .inc();
    }
    let (operator, runner) = (operator.encode(), runner.encode());
    exposed_names(&operator)
        .into_iter()
        .map(|name| (name, "operator"))
        .chain(
            exposed_names(&runner)
                .into_iter()
                .map(|name| (name, "runner")),
        )
        .collect()
}

/// The runner's metric names.
fn runner_metrics() -> BTreeSet<String> {
    source_metrics()
        .into_iter()
        .filter(|(_, origin)| *origin == "runner")
        .map(|(name, _)| name)
        .collect()
}

/// The names `queries` use that neither registry exposes.
fn unknown_metrics(queries: &[String], known: &BTreeMap<String, &'static str>) -> Vec<String> {
    queries
        .iter()
        .flat_map(|query| metric_names(query))
        .filter(|name| !known.contains_key(name))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn dashboard_and_alerts_name_only_metrics_that_exist() {
    let known = source_metrics();
    // The reading itself: what operator/src/metrics.rs and pipeline-runner/src/telemetry.rs
    // register today, with prometheus-client's suffixes, the per-Pipeline gauges included.
    for (name, origin) in [
        ("rtdp_operator_reconciles_total", "operator"),
        ("rtdp_operator_reconcile_failures_total", "operator"),
        (
            "rtdp_operator_reconcile_duration_seconds_bucket",
            "operator",
        ),
        ("rtdp_operator_leader", "operator"),
        ("rtdp_records_consumed_total", "runner"),
        ("rtdp_records_dead_lettered_total", "runner"),
        ("rtdp_write_latency_seconds_bucket", "runner"),
        ("rtdp_consumer_lag", "runner"),
        ("rtdp_pipeline_lag_records", "operator"),
        (
            "rtdp_pipeline_last_stored_record_timestamp_seconds",
            "operator",
        ),
    ] {
        assert_eq!(
            known.get(name).copied(),
            Some(origin),
            "{name} in {known:?}"
        );
    }
    for absent in [
        "rtdp_operator_leader_total",
        "rtdp_consumer_lag_total",
        "rtdp_records_consumed",
    ] {
        assert!(
            !known.contains_key(absent),
            "{absent} is not exposed: {known:?}"
        );
    }
    // And the check catches a name that does not exist.
    assert_eq!(
        unknown_metrics(
            &["sum(rate(rtdp_records_writen_total[5m])) + rtdp_operator_leader".to_string()],
            &known
        ),
        vec!["rtdp_records_writen_total".to_string()]
    );

    let dashboard = dashboard_queries(&dashboard_file());
    let objects = render(&["--set", "prometheusRule.enabled=true"]);
    let rule = the(&objects, "PrometheusRule");
    let alerts: Vec<String> = rules(rule)
        .iter()
        .map(|rule| rule["expr"].as_str().expect("an expr").to_string())
        .collect();
    for (what, queries) in [("the dashboard", &dashboard), ("the alerts", &alerts)] {
        let used: BTreeSet<String> = queries
            .iter()
            .flat_map(|query| metric_names(query))
            .collect();
        assert!(used.len() >= 4, "{what} names only {used:?}");
        let unknown = unknown_metrics(queries, &known);
        assert!(
            unknown.is_empty(),
            "{what} names metrics that neither the operator's nor the runner's registry exposes: \
             {unknown:?}\nknown: {:?}",
            known.keys().collect::<Vec<_>>()
        );
    }
}

/// A fresh scratch directory for promtool's files.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    // Left over from an earlier run, or absent: either way it is rebuilt below.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("creating {dir:?}: {error}"));
    dir
}

/// Writes a Prometheus rules file (`groups: ...`) and checks it with `promtool check rules`;
/// returns promtool's report.
fn promtool_check_rules(path: &Path, groups: &Value) -> String {
    let text = serde_yaml_ng::to_string(&serde_json::json!({ "groups": groups }))
        .expect("the groups as YAML");
    std::fs::write(path, text).unwrap_or_else(|error| panic!("writing {path:?}: {error}"));
    run_ok(
        "promtool",
        &["check", "rules", path.to_str().expect("a UTF-8 path")],
        None,
    )
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let objects = render(&["--set", "prometheusRule.enabled=true"]);
    let rule = the(&objects, "PrometheusRule");
    let dir = scratch("promtool-alerts");
    let report = promtool_check_rules(&dir.join("rules.yaml"), &rule["spec"]["groups"]);
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{report}"
    );

    // The unit tests name `rules.yaml`, resolved next to themselves.
    let tests = read("operator/tests/promtool/alerts.test.yaml");
    for alert in ALERTS {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "alerts.test.yaml has no case for {alert}"
        );
    }
    let test_file = dir.join("alerts.test.yaml");
    std::fs::write(&test_file, tests).expect("writing the unit tests");
    let output = run_ok(
        "promtool",
        &["test", "rules", test_file.to_str().expect("a UTF-8 path")],
        None,
    );
    assert!(output.contains("SUCCESS"), "{output}");
}

/// A dashboard query as PromQL: Grafana's variables replaced by values of their kind, and
/// `label_values(SELECTOR, LABEL)` (a Grafana function) reduced to its selector.
fn as_promql(query: &str) -> String {
    let query = query
        .replace("$__rate_interval", "5m")
        .replace("${datasource}", "prometheus")
        .replace("$namespace", "shop")
        .replace("$pipeline", "orders");
    match query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.rsplit_once(','))
    {
        Some((selector, _label)) => selector.trim().to_string(),
        None => query,
    }
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let queries = dashboard_queries(&dashboard_file());
    assert!(queries.len() > 10, "the dashboard's queries: {queries:?}");
    // Each query as a recording rule, so promtool parses it as Prometheus would.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(index, query)| {
            serde_json::json!({"record": format!("dashboard_query_{index}"), "expr": as_promql(query)})
        })
        .collect();
    let groups = serde_json::json!([{ "name": "dashboard", "rules": rules }]);
    let report = promtool_check_rules(&scratch("promtool-dashboard").join("rules.yaml"), &groups);
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{report}"
    );
}

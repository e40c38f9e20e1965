//! Unit tests of the builders, and the example Pipelines other modules' tests build from.

use super::pod::header_env_name;
use super::*;

/// A Pipeline parsed from an example, as if read from the API server.
pub(crate) fn example(text: &str, name: &str) -> Pipeline {
    let mut pipeline = rtdp_crds::parse_pipeline(text, name).expect("the example parses");
    pipeline.metadata.namespace = Some("demo".into());
    pipeline.metadata.uid = Some("0b5e3f5c-1111-2222-3333-444455556666".into());
    pipeline.metadata.generation = Some(1);
    pipeline
}

pub(crate) fn listings() -> Pipeline {
    example(
        include_str!("../../../examples/property-listings.yaml"),
        "property-listings.yaml",
    )
}

pub(crate) fn generated() -> Pipeline {
    example(
        include_str!("../../../examples/generated-listings.yaml"),
        "generated-listings.yaml",
    )
}

pub(crate) fn web_events() -> Pipeline {
    example(
        include_str!("../../../examples/web-events.yaml"),
        "web-events.yaml",
    )
}

pub(crate) fn context() -> BuildContext {
    BuildContext {
        default_image: "ghcr.io/rtdp-dev/pipeline-runner:0.1.0".into(),
    }
}

/// The objects `desired_objects` builds for a Pipeline with the test context.
pub(crate) fn objects_of(pipeline: &Pipeline) -> DesiredObjects {
    desired_objects(pipeline, &context(), processor::replicas(pipeline, None))
        .expect("the desired objects build")
}

/// The CronJob of a scheduled source.
pub(crate) fn cron_job_of(pipeline: &Pipeline) -> CronJob {
    match objects_of(pipeline).ingest {
        Some(Ingest::Scheduled(cron_job)) => *cron_job,
        _ => panic!("expected a CronJob for a scheduled source"),
    }
}

/// The Deployment of a continuous source.
pub(crate) fn continuous_ingest_of(pipeline: &Pipeline) -> Deployment {
    match objects_of(pipeline).ingest {
        Some(Ingest::Continuous(deployment)) => *deployment,
        _ => panic!("expected a Deployment for a continuous source"),
    }
}

#[test]
fn header_env_names_follow_the_contract() {
    assert_eq!(
        header_env_name("X-RapidAPI-Key"),
        "RTDP_HTTP_HEADER_X_RAPIDAPI_KEY"
    );
}

#[test]
fn every_object_is_owned_and_labelled() {
    let pipeline = listings();
    let objects = objects_of(&pipeline);
    let mut metas = vec![
        &objects.config_map.metadata,
        &objects.processor.metadata,
        &objects.service.metadata,
    ];
    match &objects.ingest {
        Some(Ingest::Scheduled(cron_job)) => metas.push(&cron_job.metadata),
        other => panic!("expected a CronJob, got {other:?}"),
    }
    for meta in metas {
        let owners = meta.owner_references.as_ref().expect("owner references");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Pipeline");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].uid, "0b5e3f5c-1111-2222-3333-444455556666");
        assert_eq!(meta.namespace.as_deref(), Some("demo"));
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get(PIPELINE_LABEL).map(String::as_str),
            Some(pipeline.name_any().as_str())
        );
    }
}

#[test]
fn the_image_defaults_to_the_operators() {
    let mut pipeline = generated();
    assert_eq!(
        runner_image(&pipeline, &context()),
        "ghcr.io/rtdp-dev/pipeline-runner:0.1.0"
    );
    pipeline.spec.runner.image = Some("registry.local/runner:dev".into());
    assert_eq!(
        runner_image(&pipeline, &context()),
        "registry.local/runner:dev"
    );
}

#[test]
fn pods_are_restricted() {
    let pipeline = generated();
    let objects = objects_of(&pipeline);
    let template = objects.processor.spec.expect("spec").template;
    let pod = template.spec.expect("pod spec");
    let pod_security = pod.security_context.expect("pod security context");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod_security.seccomp_profile.map(|profile| profile.type_),
        Some("RuntimeDefault".to_string())
    );
    let container = &pod.containers[0];
    let security = container
        .security_context
        .clone()
        .expect("security context");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security
            .capabilities
            .and_then(|capabilities| capabilities.drop),
        Some(vec!["ALL".to_string()])
    );
    let liveness = container.liveness_probe.clone().expect("liveness probe");
    assert_eq!(
        liveness.http_get.and_then(|get| get.path).as_deref(),
        Some("/healthz")
    );
    let readiness = container.readiness_probe.clone().expect("readiness probe");
    assert_eq!(
        readiness.http_get.and_then(|get| get.path).as_deref(),
        Some("/readyz")
    );
    let mount = container
        .volume_mounts
        .as_ref()
        .and_then(|mounts| mounts.iter().find(|mount| mount.name == "config"))
        .expect("the config mount");
    assert_eq!(mount.mount_path, CONFIG_PATH);
    assert_eq!(mount.read_only, Some(true));
}

#[test]
fn secrets_reach_the_runner_as_secret_key_refs() {
    let pipeline = web_events();
    let objects = objects_of(&pipeline);
    let pod = objects
        .processor
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let names: Vec<&str> = env.iter().map(|var| var.name.as_str()).collect();
    for expected in [
        "RTDP_KAFKA_USERNAME",
        "RTDP_KAFKA_PASSWORD",
        "RTDP_LOG_FORMAT",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for var in env
        .iter()
        .filter(|var| var.name.starts_with("RTDP_KAFKA_U"))
    {
        assert!(var.value.is_none(), "a secret must not be inlined: {var:?}");
        assert!(
            var.value_from
                .as_ref()
                .and_then(|from| from.secret_key_ref.as_ref())
                .is_some()
        );
    }
}

#[test]
fn requests_and_limits_reach_every_runner_container() {
    let mut pipeline = listings();
    let resources: k8s_openapi::api::core::v1::ResourceRequirements =
        serde_json::from_value(serde_json::json!({
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"}
        }))
        .expect("resources");
    pipeline.spec.runner.resources = Some(resources.clone());
    let objects = objects_of(&pipeline);
    let processor = objects.processor.spec.expect("spec").template;
    let Some(Ingest::Scheduled(cron_job)) = objects.ingest else {
        panic!("a scheduled source is a CronJob");
    };
    let ingest = cron_job
        .spec
        .expect("spec")
        .job_template
        .spec
        .expect("job spec")
        .template;
    for template in [processor, ingest] {
        let containers = template.spec.expect("pod spec").containers;
        assert_eq!(containers[0].resources.as_ref(), Some(&resources));
    }
}

#[test]
fn suspend_stops_every_workload_and_keeps_the_rest() {
    let replicas = |deployment: Deployment| deployment.spec.and_then(|spec| spec.replicas);
    let mut scheduled = listings();
    scheduled.spec.suspend = true;
    let cron_job = cron_job_of(&scheduled);
    assert_eq!(cron_job.spec.and_then(|spec| spec.suspend), Some(true));
    assert_eq!(replicas(objects_of(&scheduled).processor), Some(0));
    scheduled.spec.suspend = false;
    let cron_job = cron_job_of(&scheduled);
    assert_eq!(cron_job.spec.and_then(|spec| spec.suspend), Some(false));

    let mut continuous = generated();
    continuous.spec.suspend = true;
    assert_eq!(replicas(continuous_ingest_of(&continuous)), Some(0));
    let objects = objects_of(&continuous);
    assert_eq!(replicas(objects.processor), Some(0));
    // The ConfigMap and the Service stay: resuming needs nothing recreated.
    assert!(objects.config_map.data.is_some());
    continuous.spec.suspend = false;
    assert_eq!(replicas(continuous_ingest_of(&continuous)), Some(1));
}

#[test]
fn the_client_certificate_is_mounted_where_the_runner_reads_it() {
    let mut pipeline = listings();
    pipeline.spec.kafka.tls = Some(rtdp_crds::KafkaTls {
        ca_secret_ref: None,
        client_certificate_secret_ref: Some(rtdp_crds::SecretReference {
            name: "kafka-client-cert".into(),
        }),
    });
    let processor = objects_of(&pipeline)
        .processor
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let ingest = cron_job_of(&pipeline)
        .spec
        .expect("spec")
        .job_template
        .spec
        .expect("job spec")
        .template
        .spec
        .expect("pod spec");
    for pod in [processor, ingest] {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == "kafka-client")
            .unwrap_or_else(|| panic!("no kafka-client volume in {:?}", pod.volumes));
        let secret = volume.secret.as_ref().expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("kafka-client-cert"));
        // All its keys, so `tls.crt` and `tls.key` (a kubernetes.io/tls Secret's) are files.
        assert_eq!(secret.items, None);
        let container = &pod.containers[0];
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|mount| mount.name == "kafka-client")
            .expect("the kafka-client volume is mounted");
        assert_eq!(mount.read_only, Some(true));
        let env: BTreeMap<&str, Option<&str>> = container
            .env
            .iter()
            .flatten()
            .map(|var| (var.name.as_str(), var.value.as_deref()))
            .collect();
        let certificate = format!("{}/tls.crt", mount.mount_path);
        let key = format!("{}/tls.key", mount.mount_path);
        assert_eq!(
            env.get("RTDP_KAFKA_CERTIFICATE_FILE"),
            Some(&Some(certificate.as_str()))
        );
        assert_eq!(env.get("RTDP_KAFKA_KEY_FILE"), Some(&Some(key.as_str())));
        // No CA Secret: the system trust store, no CA file.
        assert!(!env.contains_key("RTDP_KAFKA_CA_FILE"), "{env:?}");
    }
}

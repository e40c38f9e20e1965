//! Pure builders of the Kubernetes objects a Pipeline owns: the runner's ConfigMap, the
//! processor Deployment, the ingest CronJob or Deployment, and the metrics Service. Nothing
//! here talks to a server; `desired_objects` is what the reconcile applies, and what the unit
//! tests check against docs/runner-contract.md.

pub mod config_map;
pub mod ingest;
pub mod processor;
pub mod service;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use rtdp_crds::Pipeline;

use crate::error::{Error, Result};

/// The annotation on pod templates holding the SHA-256 of the runner's config.
pub const CONFIG_HASH_ANNOTATION: &str = "rtdp.dev/config-hash";
/// The label every owned object carries: the Pipeline's name.
pub const PIPELINE_LABEL: &str = "rtdp.dev/pipeline";
/// The component label: `processor` or `ingest` on workloads.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Where the ConfigMap's `pipeline.yaml` is mounted in runner containers.
pub const CONFIG_PATH: &str = "/etc/rtdp/pipeline.yaml";
/// The runner's metrics port (its `--metrics-address` default) and the port's name.
pub const METRICS_PORT: i32 = 9090;
/// The name of the runner containers' metrics port.
pub const METRICS_PORT_NAME: &str = "metrics";
/// The runner containers' name.
pub const CONTAINER_NAME: &str = "runner";
/// The user and group runner containers run as (the distroless `nonroot` user).
pub const RUNNER_USER: i64 = 65532;

/// What building the objects needs besides the Pipeline.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The runner image when the Pipeline does not set `spec.runner.image`.
    pub default_image: String,
}

/// Everything a Pipeline owns in Kubernetes.
#[derive(Clone, Debug)]
pub struct DesiredObjects {
    /// `<pipeline>-runner`: the runner's config.
    pub config_map: ConfigMap,
    /// `<pipeline>-processor`: `pipeline-runner process`.
    pub processor: Deployment,
    /// `<pipeline>-ingest`, when the Pipeline has a source.
    pub ingest: Option<Ingest>,
    /// `<pipeline>-metrics`: the runner pods' metrics port.
    pub service: Service,
}

/// The ingest workload: scheduled or continuous.
#[derive(Clone, Debug)]
pub enum Ingest {
    /// An HTTP source with a cron `schedule`: `pipeline-runner ingest --once`.
    Scheduled(Box<CronJob>),
    /// An HTTP source with `pollInterval`, or a generator: `pipeline-runner ingest`.
    Continuous(Box<Deployment>),
}

/// The runner roles, each with its own workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Consumes the topic and writes Cassandra.
    Processor,
    /// Pulls the source and produces to the topic.
    Ingest,
}

impl Role {
    /// The role's name as used in object names and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Processor => "processor",
            Role::Ingest => "ingest",
        }
    }
}

/// Builds every object the Pipeline owns. Pure.
pub fn desired_objects(pipeline: &Pipeline, context: &BuildContext) -> Result<DesiredObjects> {
    let owner = owner_reference(pipeline)?;
    let config_map = config_map::build(pipeline, &owner)?;
    let config_hash = config_map::hash_of(&config_map);
    let image = runner_image(pipeline, context);
    let workload = Workload {
        pipeline,
        owner: &owner,
        image: &image,
        config_hash: &config_hash,
    };
    Ok(DesiredObjects {
        processor: processor::build(&workload),
        ingest: ingest::build(&workload),
        service: service::build(pipeline, &owner),
        config_map,
    })
}

/// The image runner containers use: the Pipeline's, or the operator's default.
pub fn runner_image(pipeline: &Pipeline, context: &BuildContext) -> String {
    pipeline
        .spec
        .runner
        .image
        .clone()
        .unwrap_or_else(|| context.default_image.clone())
}

/// The Pipeline as controlling owner, so the garbage collector removes what it owns.
pub fn owner_reference(pipeline: &Pipeline) -> Result<OwnerReference> {
    let mut owner = pipeline.controller_owner_ref(&()).ok_or_else(|| {
        Error::Internal(format!(
            "Pipeline {} has no name or uid; it must come from the API server",
            pipeline.name_any()
        ))
    })?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// The name of an object the Pipeline owns: `<pipeline>-<suffix>`.
pub fn child_name(pipeline: &Pipeline, suffix: &str) -> String {
    format!("{}-{suffix}", pipeline.name_any())
}

/// Labels of every owned object.
pub fn common_labels(pipeline: &Pipeline) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "pipeline-runner".into()),
        ("app.kubernetes.io/instance".into(), pipeline.name_any()),
        (
            "app.kubernetes.io/managed-by".into(),
            "rtdp-operator".into(),
        ),
        (PIPELINE_LABEL.into(), pipeline.name_any()),
    ])
}

/// The labels that select one role's pods.
pub fn selector_labels(pipeline: &Pipeline, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PIPELINE_LABEL.into(), pipeline.name_any()),
        (COMPONENT_LABEL.into(), role.as_str().into()),
    ])
}

/// Metadata of an owned object.
pub fn object_meta(
    pipeline: &Pipeline,
    name: String,
    owner: &OwnerReference,
    role: Option<Role>,
) -> ObjectMeta {
    let mut labels = common_labels(pipeline);
    if let Some(role) = role {
        labels.insert(COMPONENT_LABEL.into(), role.as_str().into());
    }
    ObjectMeta {
        name: Some(name),
        namespace: pipeline.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// What every runner pod template needs.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    /// The Pipeline.
    pub pipeline: &'a Pipeline,
    /// Its owner reference.
    pub owner: &'a OwnerReference,
    /// The runner image.
    pub image: &'a str,
    /// The SHA-256 of the runner's config.
    pub config_hash: &'a str,
}

impl Workload<'_> {
    /// A runner pod template for `role` running `args`, per docs/runner-contract.md: the
    /// config mounted read-only, secrets as `secretKeyRef` environment variables, probes on
    /// the metrics port and a restricted security context.
    pub fn pod_template(&self, role: Role, args: &[&str], restart_policy: &str) -> PodTemplateSpec {
        let pipeline = self.pipeline;
        let mut labels = common_labels(pipeline);
        labels.extend(selector_labels(pipeline, role));
        let (env, mut volumes, mut mounts) = secrets(pipeline, role);
        volumes.push(Volume {
            name: "config".into(),
            config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                name: config_map::name(pipeline),
                items: Some(vec![KeyToPath {
                    key: config_map::KEY.into(),
                    path: config_map::KEY.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_PATH.into(),
            sub_path: Some(config_map::KEY.into()),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "tmp".into(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        });
        mounts.sort_by(|left, right| left.mount_path.cmp(&right.mount_path));

        let probe = |path: &str, period: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::String(METRICS_PORT_NAME.into()),
                ..Default::default()
            }),
            period_seconds: Some(period),
            timeout_seconds: Some(3),
            failure_threshold: Some(3),
            ..Default::default()
        };
        let container = Container {
            name: CONTAINER_NAME.into(),
            image: Some(self.image.to_string()),
            args: Some(args.iter().map(ToString::to_string).collect()),
            env: Some(env),
            ports: Some(vec![ContainerPort {
                name: Some(METRICS_PORT_NAME.into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            liveness_probe: Some(probe("/healthz", 10)),
            readiness_probe: Some(probe("/readyz", 5)),
            resources: pipeline.spec.runner.resources.clone(),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Default::default()
                }),
                privileged: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..Default::default()
            }),
            volume_mounts: Some(mounts),
            ..Default::default()
        };
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    CONFIG_HASH_ANNOTATION.into(),
                    self.config_hash.to_string(),
                )])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![container],
                volumes: Some(volumes),
                restart_policy: Some(restart_policy.into()),
                automount_service_account_token: Some(false),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(RUNNER_USER),
                    run_as_group: Some(RUNNER_USER),
                    fs_group: Some(RUNNER_USER),
                    seccomp_profile: Some(runtime_default_seccomp()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    }
}

/// The environment variable an HTTP header's secret value reaches the runner as:
/// `X-RapidAPI-Key` → `RTDP_HTTP_HEADER_X_RAPIDAPI_KEY`.
pub fn header_env_name(header: &str) -> String {
    format!(
        "RTDP_HTTP_HEADER_{}",
        header.to_ascii_uppercase().replace('-', "_")
    )
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The environment, volumes and mounts that bring a role its secrets (never the ConfigMap).
fn secrets(pipeline: &Pipeline, role: Role) -> (Vec<EnvVar>, Vec<Volume>, Vec<VolumeMount>) {
    let spec = &pipeline.spec;
    let mut env = vec![plain_env("RTDP_LOG_FORMAT", "json")];
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();

    if let Some(sasl) = &spec.kafka.sasl {
        let credentials = &sasl.credentials_secret_ref;
        env.push(secret_env(
            "RTDP_KAFKA_USERNAME",
            &credentials.name,
            &credentials.username_key,
        ));
        env.push(secret_env(
            "RTDP_KAFKA_PASSWORD",
            &credentials.name,
            &credentials.password_key,
        ));
    }
    if let Some(tls) = &spec.kafka.tls {
        if let Some(ca) = &tls.ca_secret_ref {
            volumes.push(Volume {
                name: "kafka-ca".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(ca.name.clone()),
                    items: Some(vec![KeyToPath {
                        key: ca.key.clone(),
                        path: "ca.crt".into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "kafka-ca".into(),
                mount_path: "/etc/rtdp/kafka-ca".into(),
                read_only: Some(true),
                ..Default::default()
            });
            env.push(plain_env("RTDP_KAFKA_CA_FILE", "/etc/rtdp/kafka-ca/ca.crt"));
        }
        if let Some(client) = &tls.client_certificate_secret_ref {
            volumes.push(Volume {
                name: "kafka-client".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(client.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "kafka-client".into(),
                mount_path: "/etc/rtdp/kafka-client".into(),
                read_only: Some(true),
                ..Default::default()
            });
            env.push(plain_env(
                "RTDP_KAFKA_CERTIFICATE_FILE",
                "/etc/rtdp/kafka-client/tls.crt",
            ));
            env.push(plain_env(
                "RTDP_KAFKA_KEY_FILE",
                "/etc/rtdp/kafka-client/tls.key",
            ));
        }
    }
    match role {
        Role::Processor => {
            if let Some(credentials) = &spec.cassandra.credentials_secret_ref {
                env.push(secret_env(
                    "RTDP_CASSANDRA_USERNAME",
                    &credentials.name,
                    &credentials.username_key,
                ));
                env.push(secret_env(
                    "RTDP_CASSANDRA_PASSWORD",
                    &credentials.name,
                    &credentials.password_key,
                ));
            }
        }
        Role::Ingest => {
            let headers = spec
                .source
                .as_ref()
                .and_then(|source| source.http.as_ref())
                .map(|http| http.headers.as_slice())
                .unwrap_or_default();
            for header in headers {
                if let Some(from) = &header.value_from {
                    env.push(secret_env(
                        &header_env_name(&header.name),
                        &from.secret_key_ref.name,
                        &from.secret_key_ref.key,
                    ));
                }
            }
        }
    }
    (env, volumes, mounts)
}

#[cfg(test)]
pub(crate) mod tests {
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
        let objects = desired_objects(&pipeline, &context()).expect("builds");
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
        let objects = desired_objects(&pipeline, &context()).expect("builds");
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
        let objects = desired_objects(&pipeline, &context()).expect("builds");
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
}

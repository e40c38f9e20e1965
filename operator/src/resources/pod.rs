//! The runner pod template every workload shares, per docs/runner-contract.md.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rtdp_crds::Pipeline;

use super::*;

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
    /// The processor Deployment's replicas (see `processor::replicas`).
    pub processor_replicas: i32,
}

impl Workload<'_> {
    /// A runner Deployment named `name` for `role`, running `args` in `replicas` pods.
    pub fn deployment(
        &self,
        name: String,
        role: Role,
        replicas: i32,
        strategy: Option<DeploymentStrategy>,
        args: &[&str],
    ) -> Deployment {
        Deployment {
            metadata: object_meta(self.pipeline, name, self.owner, Some(role)),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy,
                selector: LabelSelector {
                    match_labels: Some(selector_labels(self.pipeline, role)),
                    ..Default::default()
                },
                template: self.pod_template(role, args, "Always"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

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

/// A read-only volume of a Secret (all its keys, or `items`), mounted at `/etc/rtdp/<name>`.
fn secret_volume(name: &str, secret: &str, items: Option<Vec<KeyToPath>>) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: name.into(),
        mount_path: format!("/etc/rtdp/{name}"),
        read_only: Some(true),
        ..Default::default()
    };
    (volume, mount)
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
            let items = vec![KeyToPath {
                key: ca.key.clone(),
                path: "ca.crt".into(),
                ..Default::default()
            }];
            let (volume, mount) = secret_volume("kafka-ca", &ca.name, Some(items));
            volumes.push(volume);
            mounts.push(mount);
            env.push(plain_env("RTDP_KAFKA_CA_FILE", "/etc/rtdp/kafka-ca/ca.crt"));
        }
        if let Some(client) = &tls.client_certificate_secret_ref {
            let (volume, mount) = secret_volume("kafka-client", &client.name, None);
            volumes.push(volume);
            mounts.push(mount);
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

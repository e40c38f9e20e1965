//! Pod templates run as processes, for tests on the local stack (which has no kubelet): the
//! container's args, its environment with `secretKeyRef` values read from the real Secret,
//! and its ConfigMap mounts written to a directory that stands in for the mount path.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret};
use kube::api::Api;
use rtdp_test_support::process::Process;

use super::TestWorld;

/// The runner binary of this workspace. `cargo test --workspace` (what `make test` runs)
/// builds it; a cargo build from inside a running test would wait on cargo's own lock.
pub(crate) fn runner_binary() -> PathBuf {
    let binary =
        PathBuf::from(env!("CARGO_BIN_EXE_rtdp-operator")).with_file_name("pipeline-runner");
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build -p pipeline-runner` (make test does)",
        binary.display()
    );
    binary
}

/// Starts the pod template's container as a process: args, env (secrets resolved from the
/// API server), and the ConfigMap mount written under `root` (args that name a path under a
/// mount are rewritten to the stand-in directory).
pub(crate) async fn start_pod(
    world: &TestWorld,
    template: &PodTemplateSpec,
    root: &Path,
    name: &str,
) -> Process {
    let spec = template.spec.as_ref().expect("a pod spec");
    let container = spec.containers.first().expect("a container");
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == mount.name)
            .unwrap_or_else(|| panic!("mount {} has no volume", mount.name));
        let local = root.join(mount.mount_path.trim_start_matches('/'));
        if let Some(source) = &volume.config_map {
            let config_maps: Api<ConfigMap> = world.api();
            let config_map = config_maps.get(&source.name).await.unwrap_or_else(|error| {
                panic!("the pod mounts ConfigMap {}: {error}", source.name)
            });
            let data = config_map.data.unwrap_or_default();
            match &mount.sub_path {
                Some(sub_path) => {
                    std::fs::create_dir_all(local.parent().expect("a parent")).expect("mkdir");
                    std::fs::write(&local, &data[sub_path]).expect("writing the mounted file");
                }
                None => {
                    std::fs::create_dir_all(&local).expect("mkdir");
                    for (key, value) in &data {
                        std::fs::write(local.join(key), value).expect("writing a mounted key");
                    }
                }
            }
        } else {
            std::fs::create_dir_all(&local).expect("mkdir");
        }
        mounts.push((mount.mount_path.clone(), local));
    }
    let rewrite = |argument: &str| {
        for (mount_path, local) in &mounts {
            if let Some(rest) = argument.strip_prefix(mount_path.as_str()) {
                return format!("{}{rest}", local.display());
            }
        }
        argument.to_string()
    };
    let mut command = Command::new(runner_binary());
    command.args(
        container
            .command
            .iter()
            .flatten()
            .skip(1)
            .map(|part| rewrite(part)),
    );
    command.args(container.args.iter().flatten().map(|part| rewrite(part)));
    command.env_clear();
    command.env("PATH", std::env::var("PATH").unwrap_or_default());
    for variable in container.env.iter().flatten() {
        let value = match (&variable.value, &variable.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(source)) => {
                let reference = source
                    .secret_key_ref
                    .as_ref()
                    .unwrap_or_else(|| panic!("env {} is not from a Secret", variable.name));
                let secrets: Api<Secret> = world.api();
                let secret = secrets
                    .get(&reference.name)
                    .await
                    .expect("reading the Secret");
                let bytes = secret
                    .data
                    .unwrap_or_default()
                    .remove(&reference.key)
                    .unwrap_or_else(|| {
                        panic!("Secret {} has no {}", reference.name, reference.key)
                    });
                String::from_utf8(bytes.0).expect("a UTF-8 secret")
            }
            (None, None) => String::new(),
        };
        command.env(&variable.name, rewrite(&value));
    }
    command.env("RTDP_METRICS_ADDRESS", "127.0.0.1:0");
    command.env("RUST_LOG", "info");
    Process::spawn(
        &format!("the runner {name}"),
        command,
        &root.join(format!("{name}.log")),
    )
}

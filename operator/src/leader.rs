//! Leader election with a `coordination.k8s.io/v1` Lease, used directly: a replica acquires
//! the Lease when it is free or its holder stopped renewing, renews it with
//! resourceVersion-guarded replaces, and steps down when it cannot renew in time (the
//! controller stops at once and the replica stands by to acquire the Lease again; the process
//! keeps running, so an API server outage is not a crash loop). Only the leader runs the
//! controller.
//!
//! `kube-lease-manager` (and kube-runtime, which has no leader election) was considered and not
//! taken: it judges expiry by comparing the holder's renewTime with the local clock (skew
//! between nodes matters), keeps reporting leadership while it cannot renew (no renew
//! deadline: two leaders during a partition) and does not recover a deleted Lease.
//!
//! Expiry is judged by this replica's own clock: a Lease counts as expired when its record has
//! not changed for a whole lease duration since this replica last saw it change, so clock skew
//! between replicas does not matter.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (the Lease's holderIdentity).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// The leader steps down when it could not renew for this long (less than the duration,
    /// so it stops before another replica may take over).
    pub renew_deadline: Duration,
    /// How often a follower tries to acquire.
    pub retry_interval: Duration,
    /// Create the Lease when it does not exist. The Helm chart creates the Lease itself (so
    /// `helm uninstall` removes it) and turns this off, so that an operator still stopping
    /// during the uninstall cannot create it again.
    pub create: bool,
}

impl LeaseSettings {
    /// The defaults: a 15 s lease renewed every 5 s, given up after 10 s without renewal.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry_interval: Duration::from_secs(2),
            create: true,
        }
    }
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LostLeadership {
    /// Another replica holds the Lease now.
    #[error("lease {lease} is now held by {holder}")]
    TakenOver {
        /// The Lease.
        lease: String,
        /// The new holder.
        holder: String,
    },
    /// The Lease was deleted (e.g. by `helm uninstall`) and this replica does not create it.
    #[error("lease {lease} was deleted")]
    Deleted {
        /// The Lease.
        lease: String,
    },
    /// Renewing failed for longer than the renew deadline.
    #[error("could not renew lease {lease} for {elapsed:?}: {error}")]
    RenewFailed {
        /// The Lease.
        lease: String,
        /// How long since the last renewal.
        elapsed: Duration,
        /// The last error.
        error: String,
    },
}

/// What one acquire-or-renew attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease.
    Held,
    /// Another replica holds it.
    HeldBy(String),
    /// The Lease does not exist, and this replica does not create it.
    Missing,
}

/// Acquires and keeps a Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The Lease record last seen (resourceVersion) and when it was first seen.
    observed: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    /// An elector for the Lease in the settings.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: tokio::sync::Mutex::new(None),
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "acquired the leader lease");
                    return;
                }
                Ok(Attempt::Missing) => {
                    if last_holder.is_none() {
                        tracing::info!(lease = %self.settings.name, namespace = %self.settings.namespace, "waiting for the leader lease to exist (the Helm chart creates it)");
                        last_holder = Some(String::new());
                    }
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.settings.name, %holder, "waiting for the leader lease");
                        last_holder = Some(holder);
                    }
                }
                Err(error) => tracing::warn!(%error, "trying to acquire the leader lease"),
            }
            tokio::time::sleep(self.settings.retry_interval).await;
        }
    }

    /// Renews the Lease until leadership is lost; returns why.
    pub async fn hold(&self) -> LostLeadership {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.renew_interval).await;
            let outcome =
                tokio::time::timeout(self.settings.renew_deadline, self.try_acquire_or_renew())
                    .await;
            match outcome {
                Ok(Ok(Attempt::Held)) => renewed = Instant::now(),
                Ok(Ok(Attempt::Missing)) => {
                    return LostLeadership::Deleted {
                        lease: self.settings.name.clone(),
                    };
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    return LostLeadership::TakenOver {
                        lease: self.settings.name.clone(),
                        holder,
                    };
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "renewing the leader lease");
                    if renewed.elapsed() >= self.settings.renew_deadline {
                        return LostLeadership::RenewFailed {
                            lease: self.settings.name.clone(),
                            elapsed: renewed.elapsed(),
                            error: error.to_string(),
                        };
                    }
                }
                Err(_) => {
                    return LostLeadership::RenewFailed {
                        lease: self.settings.name.clone(),
                        elapsed: renewed.elapsed(),
                        error: "the renewal timed out".into(),
                    };
                }
            }
        }
    }

    /// Gives the Lease up so another replica takes over at once (graceful shutdown).
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(lease = %self.settings.name, "released the leader lease"),
            Err(error) => tracing::warn!(%error, "releasing the leader lease"),
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_seconds =
            i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(existing) = self.api.get_opt(&self.settings.name).await? else {
            if !self.settings.create {
                return Ok(Attempt::Missing);
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.settings.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Attempt::HeldBy("another replica".into()))
                }
                Err(error) => Err(error),
            };
        };

        let version = existing
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let spec = existing.spec.clone().unwrap_or_default();
        let holder = spec
            .holder_identity
            .clone()
            .filter(|holder| !holder.is_empty());
        let held_by_us = holder.as_deref() == Some(self.settings.identity.as_str());
        let expired = {
            let mut observed = self.observed.lock().await;
            let first_seen = match observed.as_ref() {
                Some((seen_version, seen_at)) if *seen_version == version => *seen_at,
                _ => {
                    *observed = Some((version.clone(), Instant::now()));
                    Instant::now()
                }
            };
            let duration = spec
                .lease_duration_seconds
                .and_then(|seconds| u64::try_from(seconds).ok())
                .map_or(self.settings.lease_duration, Duration::from_secs);
            first_seen.elapsed() >= duration
        };
        if !held_by_us && holder.is_some() && !expired {
            return Ok(Attempt::HeldBy(holder.unwrap_or_default()));
        }

        let mut lease = existing;
        let spec = lease.spec.get_or_insert_with(Default::default);
        if !held_by_us {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or_default() + 1);
            spec.holder_identity = Some(self.settings.identity.clone());
        }
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(now);
        // The resourceVersion from the read guards the replace: a concurrent writer wins, we
        // get a conflict.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                let mut observed = self.observed.lock().await;
                *observed = updated
                    .metadata
                    .resource_version
                    .map(|version| (version, Instant::now()));
                Ok(Attempt::Held)
            }
            // Someone else wrote the Lease since we read it.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldBy(
                "another replica (the lease changed concurrently)".into(),
            )),
            Err(error) => Err(error),
        }
    }
}

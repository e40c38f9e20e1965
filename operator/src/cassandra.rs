//! The Pipeline's keyspace and tables, through `rtdp_provisioning::cassandra`, with one
//! session per distinct cluster and credentials shared by every Pipeline that uses them.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use rtdp_crds::Pipeline;
use rtdp_provisioning::ProvisionError;
use rtdp_provisioning::cassandra::{self, SchemaReport};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use crate::client_cache::{ClientCache, cache_key};
use crate::error::Result;
use crate::secrets::read_key;

/// How long connecting to a cluster may take before it counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions by cluster and credentials.
#[derive(Debug, Default)]
pub struct CassandraSessions {
    sessions: ClientCache<Arc<Session>>,
}

impl CassandraSessions {
    /// The session for the Pipeline's cluster, connected on first use.
    pub async fn session(&self, client: &Client, pipeline: &Pipeline) -> Result<Arc<Session>> {
        let spec = &pipeline.spec.cassandra;
        let credentials = match &spec.credentials_secret_ref {
            Some(reference) => {
                let namespace = pipeline.namespace_or_default();
                Some((
                    read_key(client, &namespace, &reference.name, &reference.username_key).await?,
                    read_key(client, &namespace, &reference.name, &reference.password_key).await?,
                ))
            }
            None => None,
        };
        let contact_points = spec.contact_points.join(",");
        let key = match &credentials {
            Some((username, password)) => cache_key([contact_points.as_str(), username, password]),
            None => cache_key([contact_points.as_str()]),
        };
        let connect = async {
            // The operator reads system_schema itself and routes no data, so the driver keeps
            // no schema metadata: with it, every DDL statement re-read the whole cluster's
            // keyspaces, tables and columns after its schema agreement, which grows with every
            // Pipeline (a thousand tables made each CREATE TABLE take seconds). The nodes and
            // their datacenters (system.local, system.peers) are still read.
            let mut builder = SessionBuilder::new()
                .known_nodes(&spec.contact_points)
                .connection_timeout(CONNECT_TIMEOUT)
                .fetch_schema_metadata(false)
                .fetch_full_schema_metadata(false);
            if let Some((username, password)) = credentials {
                builder = builder.user(username, password);
            }
            let failed = |message: String| ProvisionError::Cassandra {
                context: format!("connecting to Cassandra at {contact_points}"),
                message,
            };
            let session = tokio::time::timeout(CONNECT_TIMEOUT * 2, builder.build())
                .await
                .map_err(|_| failed(format!("timed out after {:?}", CONNECT_TIMEOUT * 2)))?
                .map_err(|error| failed(error.to_string()))?;
            Ok::<_, ProvisionError>(Arc::new(session))
        };
        Ok(self.sessions.get_or_connect(key, connect).await?)
    }

    /// Checks that `localDatacenter` is one of the cluster's datacenters (refused, before any
    /// DDL, when it is not), then creates the keyspace and tables and adds new columns;
    /// refuses incompatible changes.
    /// The keyspace's replication is set only by its owner (see
    /// `Context::replication_owner`): the schema is first ensured leaving an existing
    /// replication as it is, and only when it differs from the declared one is `owner` asked
    /// (`None`: this Pipeline owns it, and the declared one is applied). Pipelines sharing a
    /// keyspace never ALTER it back and forth.
    pub async fn ensure(
        &self,
        client: &Client,
        pipeline: &Pipeline,
        owner: impl FnOnce() -> Option<String>,
    ) -> Result<SchemaReport> {
        let session = self.session(client, pipeline).await?;
        cassandra::check_local_datacenter(&session, &pipeline.spec.cassandra)?;
        let mut report = cassandra::ensure_schema_with(
            &session,
            pipeline,
            cassandra::Replication::LeaveExisting,
        )
        .await?;
        let Some(left) = report.replication_left.take() else {
            return Ok(report);
        };
        match owner() {
            None => {
                let applied = cassandra::ensure_schema_with(
                    &session,
                    pipeline,
                    cassandra::Replication::Apply,
                )
                .await?;
                report.replication_changed = applied.replication_changed;
            }
            Some(owner) => {
                report.replication_left = Some(format!(
                    "Pipeline {owner} (the oldest declaring keyspace {} on these contact points) sets it; {left} left as it is",
                    pipeline.spec.cassandra.keyspace.name
                ));
            }
        }
        Ok(report)
    }

    /// Drops the tables (the keyspace stays).
    pub async fn drop_tables(&self, client: &Client, pipeline: &Pipeline) -> Result<()> {
        let session = self.session(client, pipeline).await?;
        Ok(cassandra::drop_tables(&session, pipeline).await?)
    }
}

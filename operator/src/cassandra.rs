//! The Pipeline's keyspace and tables, through `rtdp_provisioning::cassandra`, with one
//! session per distinct cluster and credentials shared by every Pipeline that uses them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use rtdp_crds::Pipeline;
use rtdp_provisioning::ProvisionError;
use rtdp_provisioning::cassandra::{self, SchemaReport};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use tokio::sync::Mutex;

use crate::error::Result;
use crate::secrets::read_key;

/// How long connecting to a cluster may take before it counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions by cluster and credentials.
#[derive(Default)]
pub struct CassandraSessions {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl std::fmt::Debug for CassandraSessions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CassandraSessions")
            .finish_non_exhaustive()
    }
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
        let mut key = spec.contact_points.join(",");
        if let Some((username, password)) = &credentials {
            key.push_str(&format!("\0{username}\0{password}"));
        }
        // One connection attempt at a time: Pipelines sharing a cluster share its session.
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(&key) {
            return Ok(Arc::clone(session));
        }
        let mut builder = SessionBuilder::new()
            .known_nodes(&spec.contact_points)
            .connection_timeout(CONNECT_TIMEOUT);
        if let Some((username, password)) = credentials {
            builder = builder.user(username, password);
        }
        let session = tokio::time::timeout(CONNECT_TIMEOUT * 2, builder.build())
            .await
            .map_err(|_| ProvisionError::Cassandra {
                context: format!(
                    "connecting to Cassandra at {}",
                    spec.contact_points.join(",")
                ),
                message: format!("timed out after {:?}", CONNECT_TIMEOUT * 2),
            })?
            .map_err(|error| ProvisionError::Cassandra {
                context: format!(
                    "connecting to Cassandra at {}",
                    spec.contact_points.join(",")
                ),
                message: error.to_string(),
            })?;
        let session = Arc::new(session);
        sessions.insert(key, Arc::clone(&session));
        Ok(session)
    }

    /// Creates the keyspace and tables and adds new columns; refuses incompatible changes.
    pub async fn ensure(&self, client: &Client, pipeline: &Pipeline) -> Result<SchemaReport> {
        let session = self.session(client, pipeline).await?;
        Ok(cassandra::ensure_schema(&session, &pipeline.spec).await?)
    }

    /// Drops the tables (the keyspace stays).
    pub async fn drop_tables(&self, client: &Client, pipeline: &Pipeline) -> Result<()> {
        let session = self.session(client, pipeline).await?;
        Ok(cassandra::drop_tables(&session, &pipeline.spec).await?)
    }
}

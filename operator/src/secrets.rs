//! Reading the credentials a Pipeline refers to, for the operator's own connections to Kafka
//! and Cassandra (the runner gets them as `secretKeyRef` environment variables instead).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::error::{Error, Result};

/// Reads one key of a Secret as UTF-8 text.
pub async fn read_key(client: &Client, namespace: &str, name: &str, key: &str) -> Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let missing = |message: String| Error::Secret {
        namespace: namespace.to_string(),
        name: name.to_string(),
        message,
    };
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|error| Error::kube(format!("reading secret {namespace}/{name}"), error))?
        .ok_or_else(|| missing("not found".into()))?;
    if let Some(value) = secret.string_data.as_ref().and_then(|data| data.get(key)) {
        return Ok(value.clone());
    }
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| missing(format!("has no key {key}")))?;
    String::from_utf8(bytes.0.clone()).map_err(|_| missing(format!("key {key} is not UTF-8 text")))
}

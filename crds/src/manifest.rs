//! Reading Pipeline manifests from files, for the runner's standalone mode and tools that work
//! without an API server.

use std::path::Path;

use serde::Deserialize;

use crate::Pipeline;

/// Why a manifest could not be read as a Pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The manifest's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not match the Pipeline schema.
    #[error("parsing {origin} as a Pipeline: {source}")]
    Parse {
        /// Where the manifest came from.
        origin: String,
        /// The YAML error, with its line and column.
        source: serde_yaml_ng::Error,
    },
    /// A document is not a `rtdp.dev/v1alpha1` Pipeline.
    #[error(
        "{origin}: expected apiVersion rtdp.dev/v1alpha1 and kind Pipeline, found {api_version} {kind}"
    )]
    WrongKind {
        /// Where the manifest came from.
        origin: String,
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
    /// The Pipeline breaks a rule the API server (its schema or the operator's admission
    /// webhook) would enforce at apply time.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the manifest came from.
        origin: String,
        /// Which rule, and how to fix it.
        message: String,
    },
    /// The file holds no Pipeline document.
    #[error("{origin}: no Pipeline document found")]
    Empty {
        /// Where the manifest came from.
        origin: String,
    },
}

/// Reads the first Pipeline from a YAML file (other documents, such as Secrets, are skipped).
pub fn load_pipeline(path: &Path) -> Result<Pipeline, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_pipeline(&text, &path.display().to_string())
}

/// Parses the first Pipeline from YAML text holding one or more documents.
pub fn parse_pipeline(text: &str, origin: &str) -> Result<Pipeline, ManifestError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TypeMeta {
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        kind: String,
    }
    let mut wrong_kind = None;
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value =
            serde_yaml_ng::Value::deserialize(document).map_err(|source| ManifestError::Parse {
                origin: origin.to_string(),
                source,
            })?;
        if value.is_null() {
            continue;
        }
        let type_meta: TypeMeta =
            serde_yaml_ng::from_value(value.clone()).map_err(|source| ManifestError::Parse {
                origin: origin.to_string(),
                source,
            })?;
        if type_meta.api_version == "rtdp.dev/v1alpha1" && type_meta.kind == "Pipeline" {
            let pipeline: Pipeline =
                serde_yaml_ng::from_value(value).map_err(|source| ManifestError::Parse {
                    origin: origin.to_string(),
                    source,
                })?;
            // The same checks as the operator's admission webhook and reconcile.
            let errors = crate::validate(&pipeline);
            if !errors.is_empty() {
                return Err(ManifestError::Invalid {
                    origin: origin.to_string(),
                    message: crate::validation::describe(&errors),
                });
            }
            return Ok(pipeline);
        }
        wrong_kind.get_or_insert(ManifestError::WrongKind {
            origin: origin.to_string(),
            api_version: type_meta.api_version,
            kind: type_meta.kind,
        });
    }
    Err(wrong_kind.unwrap_or(ManifestError::Empty {
        origin: origin.to_string(),
    }))
}

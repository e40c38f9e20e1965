//! What the CRD's schema cannot check, checked before anything is applied. Pure.

use kube::ResourceExt;
use rtdp_crds::Pipeline;

use crate::error::{Error, Result};
use crate::resources;

/// Checks what the CRD's schema cannot: names that must fit Kubernetes limits. Pure.
pub fn validate(pipeline: &Pipeline) -> Result<()> {
    let name = pipeline.name_any();
    // Label values are at most 63 characters; a CronJob's name at most 52 (its Jobs append 11).
    let longest = if resources::ingest::schedule(pipeline).is_some() {
        52 - "-ingest".len()
    } else {
        63
    };
    if name.len() > longest {
        return Err(Error::InvalidSpec(format!(
            "metadata.name {name:?} is {} characters; at most {longest} fit the runner's object names and labels",
            name.len()
        )));
    }
    let nullable = pipeline.nullable_key_columns();
    if !nullable.is_empty() {
        return Err(Error::InvalidSpec(format!(
            "spec.cassandra.tables: key columns {} may be null (their fields are neither required nor defaulted); mark each field required: true or give it a default",
            nullable.join(", ")
        )));
    }
    if pipeline.spec.runner.image.as_deref() == Some("") {
        return Err(Error::InvalidSpec("spec.runner.image is empty".into()));
    }
    let tables = pipeline.qualified_table_names();
    for (index, table) in tables.iter().enumerate() {
        if tables[..index].contains(table) {
            return Err(Error::InvalidSpec(format!(
                "table {table} is declared twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{generated, listings};

    #[test]
    fn names_must_fit_kubernetes_limits() {
        let mut pipeline = listings();
        assert!(validate(&pipeline).is_ok());
        pipeline.metadata.name = Some("a".repeat(46));
        let error = validate(&pipeline).expect_err("too long for a CronJob");
        assert!(error.is_permanent());
        assert_eq!(error.reason(), "InvalidSpec");
        assert!(error.to_string().contains("at most 45"), "{error}");

        let mut continuous = generated();
        continuous.metadata.name = Some("a".repeat(63));
        assert!(validate(&continuous).is_ok());
        continuous.metadata.name = Some("a".repeat(64));
        assert!(validate(&continuous).is_err());
    }
}

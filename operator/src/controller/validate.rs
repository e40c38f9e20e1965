//! What the CRD's schema cannot check, checked before anything is applied: the shared
//! `rtdp_crds::validate` (the same checks as the admission webhook and `pipeline-runner
//! validate`, so every path gives the same message). Pure.

use rtdp_crds::Pipeline;
use rtdp_crds::validation::describe;

use crate::error::{Error, Result};

/// Refuses a Pipeline that would fail later (in the API server, in CQL, in the runner).
pub fn validate(pipeline: &Pipeline) -> Result<()> {
    let errors = rtdp_crds::validate(pipeline);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidSpec(describe(&errors)))
    }
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
        assert!(error.to_string().contains("metadata.name"), "{error}");
        assert!(error.to_string().contains("at most 45"), "{error}");

        let mut continuous = generated();
        continuous.metadata.name = Some("a".repeat(63));
        assert!(validate(&continuous).is_ok());
        continuous.metadata.name = Some("a".repeat(64));
        assert!(validate(&continuous).is_err());
    }

    #[test]
    fn an_expression_reading_an_undeclared_field_is_refused() {
        let mut pipeline = generated();
        pipeline.spec.schema.filter = Some("prize > 0".into());
        let error = validate(&pipeline).expect_err("undeclared field");
        assert!(error.to_string().contains("spec.schema.filter"), "{error}");
    }
}

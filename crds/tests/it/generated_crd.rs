//! The CRD YAML the chart ships must be exactly what the Rust types generate.

#[test]
fn checked_in_crd_matches_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../helm/rtdp/crds/pipelines.rtdp.dev.yaml");
    let checked_in = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}; run `make crds`", path.display()));
    let generated = rtdp_crds::crd_yaml().expect("serialising the CRD");
    assert!(
        checked_in == generated,
        "{} is out of date with the types in crds/src/pipeline.rs and crds/src/pipeline/: run `make crds` and commit the result",
        path.display()
    );
}

//! Writes the Pipeline CRD YAML generated from the Rust types.
//!
//! `crdgen` prints it; `crdgen --write` updates the chart's copy
//! (helm/rtdp/crds/pipelines.rtdp.dev.yaml), which a test keeps in sync.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match rtdp_crds::crd_yaml() {
        Ok(yaml) => yaml,
        Err(error) => {
            eprintln!("crdgen: serialising the CRD: {error}");
            return ExitCode::FAILURE;
        }
    };
    let write = std::env::args().any(|argument| argument == "--write");
    if !write {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm/rtdp/crds/pipelines.rtdp.dev.yaml");
    if let Err(error) = std::fs::write(&path, yaml) {
        eprintln!("crdgen: writing {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    eprintln!("crdgen: wrote {}", path.display());
    ExitCode::SUCCESS
}

//! The API types' integration tests (the CRD, its doc, the API server), one binary.

mod api_server;
mod fields_doc;
mod generated_crd;

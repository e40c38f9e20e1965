//! The operator's integration tests, one binary (`cargo test -p rtdp-operator --test it`; one module per
//! area, named as the file was). `api_server_outage` and `scale` stay binaries of their own: the
//! first stops the shared API server, the second is `make bench-operator`.

mod common;

mod autoscaling;
mod backfill;
mod external_checks;
mod freshness;
mod helm_chart;
mod local_stack;
mod logging;
mod monitoring;
mod operations;
mod plan;
mod pod_templates_as_processes;
mod reconcile;
mod replay;
mod secured;
mod uninstall;
mod unreadable;
mod webhook;

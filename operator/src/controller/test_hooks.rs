//! Hooks for tests that restart the operator in the middle of a reconcile. Compiled in only
//! with the `test-hooks` feature (`make test` enables it); the released operator has neither
//! the flag nor the pause.

use super::Context;

/// A point to pause a reconcile at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    /// After the topics are in place.
    Topics,
    /// After the keyspace and tables are in place.
    Schema,
    /// After the Kubernetes objects are applied, before the status.
    Workloads,
}

/// What the test hooks do in this process.
#[cfg(feature = "test-hooks")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TestHooks {
    /// Pause every reconcile after this step for an hour.
    pub pause_after: Option<Step>,
}

/// Pauses the reconcile after `step` when a test asked for it.
#[cfg(feature = "test-hooks")]
pub(super) async fn pause_after(context: &Context, step: Step) {
    if context.settings.test_hooks.pause_after == Some(step) {
        tracing::warn!(?step, "pausing the reconcile (--test-pause-after)");
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

/// Without the `test-hooks` feature there is nothing to pause.
#[cfg(not(feature = "test-hooks"))]
pub(super) async fn pause_after(_context: &Context, _step: Step) {}

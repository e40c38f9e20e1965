//! The run ledger of a scheduled source (`rtdp_crds::runs`): read before a scheduled run to
//! find the intervals missed since the last one, appended to after each run once its records
//! are acknowledged, so an entry never claims records Kafka does not have.
//!
//! The ledger is a record of the runs, not a gate on the data: when it cannot be read the
//! run covers the latest interval (as a first run does), and when an entry cannot be written
//! the run's records are in Kafka all the same. Both are logged as warnings and reported by
//! the operator in `status.runs.error`.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::FutureRecord;
use rtdp_crds::Pipeline;
use rtdp_crds::jiff::Timestamp;
use rtdp_crds::runs::{self, LedgerEntry, RunPlan, RunRecord, Skipped, triggers};
use rtdp_crds::template::Interval;
use rtdp_provisioning::kafka::read_run_ledger;

use crate::kafka::Producer;

/// How long reading the ledger, or one append, may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A scheduled source's ledger, and the covered end as the runs of this process advance it.
pub struct RunLedger<'a> {
    producer: &'a Producer,
    topic: String,
    covered: Option<Timestamp>,
}

impl std::fmt::Debug for RunLedger<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RunLedger")
            .field("topic", &self.topic)
            .field("covered", &self.covered)
            .finish()
    }
}

impl<'a> RunLedger<'a> {
    /// Reads the ledger of `pipeline` (a scheduled source's) through `config`.
    pub async fn open(pipeline: &Pipeline, config: &ClientConfig, producer: &'a Producer) -> Self {
        let topic = pipeline.runs_topic_name();
        let covered = match read_run_ledger(config, &topic, runs::LEDGER_TAIL, TIMEOUT).await {
            Ok(tail) => {
                if tail.unreadable > 0 {
                    tracing::warn!(%topic, unreadable = tail.unreadable, "entries of the run ledger are not run records; skipped");
                }
                runs::covered_through(&tail.entries)
            }
            Err(error) => {
                tracing::warn!(%topic, %error, "the run ledger could not be read: this run covers the latest interval only, as a first run does");
                None
            }
        };
        Self {
            producer,
            topic,
            covered,
        }
    }

    /// Where the scheduled runs stopped, as read (and advanced by this process's runs).
    pub fn covered(&self) -> Option<Timestamp> {
        self.covered
    }

    /// The intervals a scheduled run at `now` covers, per the Pipeline's `catchUp`.
    pub fn plan(&self, pipeline: &Pipeline, now: Timestamp) -> Result<RunPlan, String> {
        let (Some(schedule), Some(catch_up)) = (pipeline.schedule(), pipeline.catch_up()) else {
            return Err("the source has no schedule".to_string());
        };
        let max_intervals = usize::try_from(catch_up.max_intervals).unwrap_or(1).max(1);
        runs::plan_scheduled_run(schedule, catch_up.policy, max_intervals, self.covered, now)
    }

    /// Records intervals that were not run.
    pub async fn record_skipped(&mut self, skipped: &Skipped) {
        self.covered = self.covered.max(Some(skipped.range.end));
        let covered = self.covered.unwrap_or(skipped.range.end);
        tracing::warn!(interval = %skipped.range, count = skipped.count, reason = %skipped.reason, "intervals of the schedule are not run; a backfill runs them");
        self.append(runs::skipped_entry(skipped, covered)).await;
    }

    /// Records a run whose records Kafka acknowledged; a scheduled or catch-up run advances
    /// the covered end.
    pub async fn record(&mut self, run: RunRecord, interval: &Interval) {
        if run.trigger != triggers::BACKFILL {
            self.covered = self.covered.max(Some(interval.end));
        }
        let entry = LedgerEntry {
            run,
            covered_through: self.covered.map(|time| time.to_string()),
        };
        self.append(entry).await;
    }

    async fn append(&self, entry: LedgerEntry) {
        let payload = match serde_json::to_vec(&entry) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%error, "encoding a run ledger entry");
                return;
            }
        };
        let record = FutureRecord::to(&self.topic)
            .key(entry.key())
            .payload(&payload);
        if let Err((error, _)) = self.producer.send(record, TIMEOUT).await {
            tracing::warn!(topic = %self.topic, %error, interval = %entry.run.interval, "the run could not be recorded in the run ledger; its records are in Kafka");
        }
    }
}

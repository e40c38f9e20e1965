//! The ingest role: records from the Pipeline's source into its topic.

pub mod generator;
pub mod http;
pub mod ledger;
pub mod sink;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rtdp_crds::jiff::{SignedDuration, Timestamp};
use rtdp_crds::runs::{RunRecord, outcomes, triggers};
use rtdp_crds::template::{self, Interval};
use rtdp_crds::{HttpSource, Pipeline};
use tokio::sync::watch;

use crate::connect::{EndpointOverrides, kafka_client_config};
use crate::error::RunnerError;
use crate::kafka::{ProducerCallbacks, producer};
use crate::telemetry::{Health, Metrics, OutcomeLabel};
use http::HttpIngest;
use ledger::RunLedger;
use sink::Sink;

/// What the ingest role needs besides the manifest.
#[derive(Debug)]
pub struct IngestOptions {
    /// Endpoint overrides.
    pub overrides: EndpointOverrides,
    /// One pass (an HTTP source) or `totalRecords` (a generator), then return.
    pub once: bool,
    /// The logical intervals to run, one pass each, in order (`--interval`, `--backfill`);
    /// empty: each pass covers its own interval (`pass_interval`).
    pub intervals: Vec<Interval>,
    /// Flips to true on SIGTERM/SIGINT.
    pub shutdown: watch::Receiver<bool>,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Health to report.
    pub health: Arc<Health>,
}

/// What the ingest role did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Records acknowledged by Kafka.
    pub records: u64,
    /// Pages fetched (HTTP source).
    pub pages: u64,
    /// Pages or records that failed after retries.
    pub failures: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Each run of an HTTP source (one pass over one interval), in order.
    pub runs: Vec<RunReport>,
}

impl IngestReport {
    /// True when something failed after its retries.
    pub fn is_partial(&self) -> bool {
        self.failures > 0
    }
}

/// One run: one pass of an HTTP source over one logical interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// The interval its request templates were filled in with.
    pub interval: Interval,
    /// What started it: `Scheduled`, `CatchUp` or `Backfill` (`rtdp_crds::runs::triggers`).
    pub trigger: &'static str,
    /// Pages fetched and produced.
    pub pages: u64,
    /// Records handed to Kafka.
    pub records: u64,
    /// Pages that failed after their retries.
    pub failed_pages: u64,
    /// Records Kafka refused after the producer's retries (counted once the run is flushed).
    pub failed_deliveries: u64,
    /// The first failure.
    pub error: Option<String>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every page was fetched and every record reached Kafka.
    Succeeded,
    /// Some pages failed after their retries, or Kafka refused some records.
    Partial,
    /// No page could be fetched.
    Failed,
}

impl RunOutcome {
    /// The `outcome` label of `rtdp_source_runs_total`, as the report line prints it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }

    /// The outcome as the run ledger records it (`rtdp_crds::runs::outcomes`).
    pub fn ledger_name(self) -> &'static str {
        match self {
            Self::Succeeded => outcomes::SUCCEEDED,
            Self::Partial => outcomes::PARTIAL,
            Self::Failed => outcomes::FAILED,
        }
    }
}

impl RunReport {
    /// How the run ended, from its pages and its records' deliveries.
    pub fn outcome(&self) -> RunOutcome {
        match (self.pages, self.failed_pages, self.failed_deliveries) {
            (_, 0, 0) => RunOutcome::Succeeded,
            (0, _, _) => RunOutcome::Failed,
            _ => RunOutcome::Partial,
        }
    }

    /// The run as the run ledger records it.
    fn record(&self, started: Timestamp, finished: Timestamp) -> RunRecord {
        RunRecord {
            started_at: Some(started.to_string()),
            finished_at: Some(finished.to_string()),
            pages: i64::try_from(self.pages).unwrap_or(i64::MAX),
            records: i64::try_from(self.records).unwrap_or(i64::MAX),
            ..RunRecord::new(&self.interval, self.trigger, self.outcome().ledger_name())
        }
        .with_error(self.error.as_deref())
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}  {:<9} {:<9} {:>3} pages {:>6} records",
            self.interval,
            self.trigger,
            self.outcome().label(),
            self.pages,
            self.records
        )?;
        if let Some(error) = &self.error {
            write!(formatter, "  ({error})")?;
        }
        Ok(())
    }
}

/// The intervals a run of `pipeline` covers: `interval` alone (`--interval`), or each
/// schedule interval within `backfill` (`--backfill`); none for each pass's own.
pub fn planned_intervals(
    pipeline: &Pipeline,
    interval: Option<Interval>,
    backfill: Option<Interval>,
) -> Result<Vec<Interval>, RunnerError> {
    if let Some(range) = backfill {
        let schedule = pipeline.schedule().ok_or_else(|| {
                RunnerError::Config(
                    "--backfill runs the intervals of spec.source.http.schedule, and this Pipeline's source has no schedule"
                        .to_string(),
                )
            })?;
        return Interval::scheduled_within(schedule, range)
            .map_err(|error| RunnerError::Config(format!("--backfill: {error}")));
    }
    Ok(interval.into_iter().collect())
}

/// The logical interval of a pass starting at `now`: a scheduled source's latest schedule
/// interval; a polling source's time since its previous pass (`poll_interval` before the
/// first). Pure.
pub fn pass_interval(
    source: &HttpSource,
    previous_pass: Option<Timestamp>,
    now: Timestamp,
) -> Result<Interval, RunnerError> {
    if let Some(schedule) = &source.schedule {
        return Interval::scheduled(schedule, now).map_err(RunnerError::Config);
    }
    let poll = source
        .poll_interval
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .unwrap_or(Duration::from_secs(60));
    let start = previous_pass.unwrap_or_else(|| {
        now.checked_sub(SignedDuration::try_from(poll).unwrap_or(SignedDuration::ZERO))
            .unwrap_or(now)
    });
    Ok(Interval { start, end: now })
}

/// Whether any request field uses a template variable.
fn source_is_templated(source: &HttpSource) -> bool {
    template::is_templated(&source.url)
        || source
            .query_params
            .values()
            .any(|value| template::is_templated(value))
        || source
            .headers
            .iter()
            .filter_map(|header| header.value.as_deref())
            .any(template::is_templated)
        || source.body.as_deref().is_some_and(template::is_templated)
}

/// Runs the ingest role.
pub async fn run(pipeline: &Pipeline, options: IngestOptions) -> Result<IngestReport, RunnerError> {
    let IngestOptions {
        overrides,
        once,
        intervals: planned,
        mut shutdown,
        metrics,
        health,
    } = options;
    let Some(source) = &pipeline.spec.source else {
        return Err(RunnerError::Config(
            "the Pipeline declares no source, so ingest has nothing to do (records reach its topic from elsewhere)"
                .to_string(),
        ));
    };
    let base = kafka_client_config(&pipeline.spec.kafka, &overrides)?;
    // Readiness follows the producer's broker connections (librdkafka statistics).
    let producer = producer(
        &base,
        &pipeline.spec.runner.batch,
        ProducerCallbacks::reporting_to(Arc::clone(&health)),
    )?;
    let topic = pipeline.topic_name();
    let mut sink = Sink::new(&producer, &topic, &metrics);
    let mut report = IngestReport::default();

    if let Some(generator) = &source.generator {
        let sent = generator::run(generator, &mut sink, &mut shutdown).await;
        tracing::info!(records = sent, %topic, "generator finished");
    } else if let Some(source) = &source.http {
        let ingest = HttpIngest::new(source, overrides.source_url.as_deref())?;
        let interval = source
            .poll_interval
            .as_deref()
            .map(parse_duration)
            .transpose()?;
        let mut previous_pass: Option<Timestamp> = None;
        // A scheduled source records each run in its run ledger, and its own run (no interval
        // given) plans from the ledger: the intervals missed since the last run per
        // `catchUp`, then the latest.
        let mut ledger = match pipeline.schedule() {
            Some(_) => Some(RunLedger::open(pipeline, &base, &producer).await),
            None => None,
        };
        let mut runs: VecDeque<(Interval, &'static str)> = planned
            .into_iter()
            .map(|interval| (interval, triggers::BACKFILL))
            .collect();
        if runs.is_empty()
            && let Some(ledger) = ledger.as_mut()
        {
            let plan = ledger
                .plan(pipeline, Timestamp::now())
                .map_err(RunnerError::Config)?;
            if let Some(skipped) = &plan.skipped {
                ledger.record_skipped(skipped).await;
            }
            if plan.runs.len() > 1 {
                tracing::info!(
                    missed = plan.runs.len() - 1,
                    covered_through = ?ledger.covered(),
                    "catching up the intervals missed since the last scheduled run"
                );
            }
            runs.extend(plan.runs);
        }
        // A list of runs (scheduled, catch-up or backfill) rather than continuous polling.
        let given = !runs.is_empty() || ledger.is_some();
        loop {
            let started = Timestamp::now();
            let (window, trigger) = if given {
                match runs.pop_front() {
                    Some(run) => run,
                    None => break,
                }
            } else {
                (
                    pass_interval(source, previous_pass, started)?,
                    triggers::SCHEDULED,
                )
            };
            previous_pass = Some(started);
            let rendered = ingest.for_interval(&window).map_err(|error| {
                RunnerError::Config(format!("filling in the request templates: {error}"))
            })?;
            if source_is_templated(source) {
                tracing::info!(
                    start = %window.start,
                    end = %window.end,
                    "requesting the interval"
                );
            }
            // Deliveries so far: this run's are counted from here (each run is flushed).
            let (delivered, failed) = (sink.delivered, sink.failed);
            let pass = rendered.run_pass(&mut sink, &metrics).await;
            tracing::info!(
                pages = pass.pages,
                records = pass.records,
                failed_pages = pass.failed_pages,
                %topic,
                "pass finished"
            );
            let mut run = RunReport {
                interval: window,
                trigger,
                pages: pass.pages,
                records: pass.records,
                failed_pages: pass.failed_pages,
                failed_deliveries: 0,
                error: pass.first_error.clone(),
            };
            if let Some(ledger) = ledger.as_mut() {
                // Recorded once Kafka acknowledged the run's records, with the count it did.
                sink.flush().await;
                run.records = sink.delivered - delivered;
                run.failed_deliveries = sink.failed - failed;
                if run.failed_deliveries > 0 && run.error.is_none() {
                    run.error = sink.last_error().map(str::to_string);
                }
                ledger
                    .record(run.record(started, Timestamp::now()), &window)
                    .await;
            }
            metrics
                .source_runs
                .get_or_create(&OutcomeLabel {
                    outcome: run.outcome().label().to_string(),
                })
                .inc();
            if run.outcome() != RunOutcome::Succeeded {
                tracing::warn!(interval = %run.interval, outcome = run.outcome().label(), error = run.error.as_deref().unwrap_or_default(), "run finished with failures");
            }
            report.runs.push(run);
            report.pages += pass.pages;
            report.failures += pass.failed_pages;
            if report.first_error.is_none() {
                report.first_error = pass.first_error;
            }
            if given {
                // A failed interval is reported and the next one runs, as a backfill should.
                if *shutdown.borrow() {
                    break;
                }
                continue;
            }
            if pass.pages == 0 && pass.failed_pages > 0 && once {
                return Err(RunnerError::Source(
                    report
                        .first_error
                        .unwrap_or_else(|| "the first page failed".to_string()),
                ));
            }
            let Some(interval) = interval.filter(|_| !once) else {
                if !once && source.schedule.is_some() {
                    tracing::info!(
                        "a scheduled source runs one pass here; in Kubernetes its CronJob runs `ingest --once` on the schedule"
                    );
                }
                break;
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => break,
            }
        }
        if !report.runs.is_empty()
            && report
                .runs
                .iter()
                .all(|run| run.outcome() == RunOutcome::Failed)
        {
            return Err(RunnerError::Source(
                report
                    .first_error
                    .unwrap_or_else(|| "the first page failed".to_string()),
            ));
        }
    } else {
        return Err(RunnerError::Config(
            "source declares neither http nor generator".to_string(),
        ));
    }
    sink.flush().await;
    report.records = sink.delivered;
    if sink.failed > 0 {
        report.failures += sink.failed;
        if report.first_error.is_none() {
            report.first_error = sink.last_error().map(str::to_string);
        }
        if sink.delivered == 0 {
            return Err(RunnerError::Source(format!(
                "no record reached topic {topic}: {}",
                sink.last_error().unwrap_or("unknown error")
            )));
        }
    }
    Ok(report)
}

/// `30s`, `5m`, `1h30m`, `500ms`: the CRD's pattern, number-unit pairs without spaces, read
/// by humantime (which alone would also take spaces and units the CRD refuses).
pub fn parse_duration(text: &str) -> Result<Duration, RunnerError> {
    let invalid = |detail: &str| {
        RunnerError::Config(format!(
            "pollInterval {text:?} is not a duration like 30s or 5m{detail}"
        ))
    };
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return Err(invalid(""));
    }
    humantime::parse_duration(text).map_err(|error| invalid(&format!(": {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_polling_pass_covers_the_time_since_the_previous_one() {
        let source: HttpSource = serde_json::from_value(serde_json::json!({
            "url": "http://api.example.com/events",
            "pollInterval": "5m",
        }))
        .expect("a source");
        let at = |text: &str| text.parse::<Timestamp>().expect("a time");
        let first = pass_interval(&source, None, at("2026-11-27T10:00:00Z")).expect("an interval");
        assert_eq!(
            (first.start, first.end),
            (at("2026-11-27T09:55:00Z"), at("2026-11-27T10:00:00Z"))
        );
        let next = pass_interval(
            &source,
            Some(at("2026-11-27T10:00:00Z")),
            at("2026-11-27T10:05:02Z"),
        )
        .expect("an interval");
        assert_eq!(
            (next.start, next.end),
            (at("2026-11-27T10:00:00Z"), at("2026-11-27T10:05:02Z"))
        );
    }

    #[test]
    fn a_backfill_needs_a_schedule_and_runs_its_intervals() {
        let mut pipeline = rtdp_crds::parse_pipeline(
            include_str!("../../../examples/listings-by-day.yaml"),
            "listings-by-day.yaml",
        )
        .expect("the example parses");
        let week = Interval::parse("2026-11-20T00:00:00Z..2026-11-27T00:00:00Z").expect("a week");
        let days = planned_intervals(&pipeline, None, Some(week)).expect("intervals");
        assert_eq!(days.len(), 7);
        assert_eq!(
            planned_intervals(&pipeline, Some(week), None).expect("one interval"),
            vec![week]
        );
        assert!(
            planned_intervals(&pipeline, None, None)
                .expect("none")
                .is_empty()
        );
        if let Some(http) = pipeline
            .spec
            .source
            .as_mut()
            .and_then(|source| source.http.as_mut())
        {
            http.schedule = None;
        }
        let refused = planned_intervals(&pipeline, None, Some(week)).expect_err("no schedule");
        assert!(refused.to_string().contains("has no schedule"), "{refused}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 m").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(
            parse_duration("1h30m").ok(),
            Some(Duration::from_secs(5400))
        );
    }
}

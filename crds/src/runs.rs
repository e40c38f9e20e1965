//! Runs of a scheduled source: what each run did, and which intervals a scheduled run covers
//! after runs were missed (`source.http.catchUp`).
//!
//! The runner records every run of a scheduled source in the Pipeline's run ledger, a compacted
//! topic `<topic>.runs` keyed by interval (as Kafka Connect keeps source offsets in a
//! compacted topic). The ledger outlives the Jobs that ran the runs, the operator and the
//! cluster: a scheduled run reads it to find the intervals missed since the last one, and the
//! operator reads it into `status.runs`. Kafka holds it because every ingest run already
//! talks to Kafka and to nothing else.

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::CatchUpPolicy;
use crate::template::Interval;

/// The runs `status.runs.recent` lists.
pub const RECENT_RUNS: usize = 10;
/// The ledger entries a reader takes from the end of the ledger: enough for the recent runs
/// and for the covered interval, even behind a long backfill's entries.
pub const LEDGER_TAIL: usize = 200;
/// The longest error message kept per run.
const ERROR_LENGTH: usize = 300;
/// Missed schedule times counted before giving up counting (a minute schedule down for two
/// years): beyond it, the skipped count is a lower bound.
const MAX_COUNTED: usize = 1_000_000;

/// What started a run (`trigger`).
pub mod triggers {
    /// The schedule's own run: the latest interval.
    pub const SCHEDULED: &str = "Scheduled";
    /// An interval missed while nothing ran, run by the next scheduled run (`catchUp: All`).
    pub const CATCH_UP: &str = "CatchUp";
    /// An interval asked for by name: `spec.backfill`, `--backfill` or `--interval`.
    pub const BACKFILL: &str = "Backfill";
}

/// How a run ended (`outcome`).
pub mod outcomes {
    /// Every page was fetched and every record reached Kafka.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Some pages failed after their retries; the others' records reached Kafka.
    pub const PARTIAL: &str = "Partial";
    /// No page could be fetched.
    pub const FAILED: &str = "Failed";
    /// Missed intervals beyond `catchUp.maxIntervals`, not run: the error says how to run them.
    pub const SKIPPED: &str = "Skipped";
}

/// One run of a scheduled source, as the runner recorded it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The logical interval the run covered, `FROM..TO` (RFC 3339, UTC; the end excluded);
    /// for `Skipped`, the whole range not run.
    pub interval: String,
    /// `Scheduled`, `CatchUp` or `Backfill`.
    pub trigger: String,
    /// `Succeeded`, `Partial`, `Failed` or `Skipped`.
    pub outcome: String,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When its records were acknowledged by Kafka (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Pages fetched.
    #[serde(default)]
    pub pages: i64,
    /// Records that reached the topic.
    #[serde(default)]
    pub records: i64,
    /// The first failure, or for `Skipped` how many intervals and how to run them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRecord {
    /// A run's record; the error is cut to a few hundred characters.
    pub fn new(interval: &Interval, trigger: &str, outcome: &str) -> Self {
        Self {
            interval: interval.to_string(),
            trigger: trigger.to_string(),
            outcome: outcome.to_string(),
            ..Self::default()
        }
    }

    /// Sets the error, cut to a few hundred characters (a status and a ledger entry stay small).
    pub fn with_error(mut self, error: Option<&str>) -> Self {
        self.error = error.map(|error| {
            let mut cut: String = error.chars().take(ERROR_LENGTH).collect();
            if cut.len() < error.len() {
                cut.push_str("...");
            }
            cut
        });
        self
    }

    /// Whether the run needs a person's attention.
    pub fn is_failure(&self) -> bool {
        self.outcome != outcomes::SUCCEEDED
    }
}

/// One entry of the run ledger: a run, and the end of the latest scheduled interval run so far
/// (where the next catch-up starts).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The run.
    #[serde(flatten)]
    pub run: RunRecord,
    /// The end of the latest interval a scheduled or catch-up run covered, this run included
    /// (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_through: Option<String>,
}

impl LedgerEntry {
    /// The ledger key: the interval, so that a run of the same interval again replaces it
    /// when the topic is compacted.
    pub fn key(&self) -> &str {
        &self.run.interval
    }
}

/// The scheduled runs recorded so far: `status.runs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunsStatus {
    /// The end of the latest interval a scheduled or catch-up run covered (RFC 3339): the
    /// next scheduled run catches up from here (`source.http.catchUp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_through: Option<String>,
    /// The last runs, newest first (at most 10; the ledger topic `<topic>.runs` keeps them
    /// all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<RunRecord>,
    /// Why the ledger could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The latest covered end over `entries`: concurrent writers (a backfill next to the
/// schedule) may each have written an older one last.
pub fn covered_through(entries: &[LedgerEntry]) -> Option<Timestamp> {
    entries
        .iter()
        .filter_map(|entry| entry.covered_through.as_deref())
        .filter_map(|time| time.parse::<Timestamp>().ok())
        .max()
}

/// `status.runs` from the ledger's tail (oldest first): the latest record of each interval,
/// newest first. Pure.
pub fn runs_status(entries: &[LedgerEntry]) -> RunsStatus {
    let mut recent: Vec<RunRecord> = Vec::new();
    for entry in entries.iter().rev() {
        if recent.len() == RECENT_RUNS {
            break;
        }
        if !recent.iter().any(|run| run.interval == entry.run.interval) {
            recent.push(entry.run.clone());
        }
    }
    RunsStatus {
        covered_through: covered_through(entries).map(|time| time.to_string()),
        recent,
        error: None,
    }
}

/// What one scheduled run does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// The intervals to run, in order, each with its trigger; the latest is last.
    pub runs: Vec<(Interval, &'static str)>,
    /// Missed intervals not run: their range, count and why.
    pub skipped: Option<Skipped>,
}

/// Intervals a scheduled run leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// From the first one's start to the last one's end.
    pub range: Interval,
    /// How many.
    pub count: usize,
    /// Why, for the ledger entry.
    pub reason: String,
}

/// How late a run may start under `catchUp: None` (the CronJob's starting deadline).
pub const NONE_POLICY_DEADLINE_SECONDS: i64 = 300;

/// Which intervals a scheduled run at `now` covers: the schedule's latest interval, after the
/// ones missed since `covered` with `catchUp: All` (in order, at most `max_intervals` of the
/// newest; older ones are reported as skipped). Without a covered time (a first run) only the
/// latest: history is what a backfill is for. The latest runs even when already covered (a
/// Job's retry, or a run started by hand, repeats it; writes are idempotent). Pure.
pub fn plan_scheduled_run(
    schedule: &str,
    policy: CatchUpPolicy,
    max_intervals: usize,
    covered: Option<Timestamp>,
    now: Timestamp,
) -> Result<RunPlan, String> {
    let latest = Interval::scheduled(schedule, now)?;
    let mut plan = RunPlan {
        runs: vec![(latest, triggers::SCHEDULED)],
        skipped: None,
    };
    let late = now.as_second() - latest.end.as_second();
    if policy == CatchUpPolicy::None && late > NONE_POLICY_DEADLINE_SECONDS {
        plan.runs.clear();
        plan.skipped = Some(Skipped {
            range: latest,
            count: 1,
            reason: format!(
                "started {late} s after its schedule time, and catchUp: None drops runs over {NONE_POLICY_DEADLINE_SECONDS} s late"
            ),
        });
        return Ok(plan);
    }
    let Some(covered) = covered.filter(|_| policy == CatchUpPolicy::All) else {
        return Ok(plan);
    };
    if covered >= latest.start {
        return Ok(plan);
    }
    let cron = crate::validation::parse_cron(schedule)?;
    let mut time = cron
        .find_next_occurrence(&covered.to_zoned(TimeZone::UTC), true)
        .map_err(|error| format!("no schedule time of {schedule:?} after {covered}: {error}"))?;
    let mut missed: std::collections::VecDeque<Interval> = std::collections::VecDeque::new();
    let mut count = 0_usize;
    let mut first_start = None;
    while time.timestamp() < latest.start && count < MAX_COUNTED {
        let next = cron
            .find_next_occurrence(&time, false)
            .map_err(|error| format!("no schedule time of {schedule:?} after {time}: {error}"))?;
        if next.timestamp() > latest.start {
            break;
        }
        first_start.get_or_insert(time.timestamp());
        missed.push_back(Interval {
            start: time.timestamp(),
            end: next.timestamp(),
        });
        if missed.len() > max_intervals {
            missed.pop_front();
        }
        count += 1;
        time = next;
    }
    if let (Some(start), Some(first_kept)) = (first_start, missed.front())
        && count > missed.len()
    {
        plan.skipped = Some(Skipped {
            range: Interval {
                start,
                end: first_kept.start,
            },
            count: count - missed.len(),
            reason: format!("missed beyond catchUp.maxIntervals ({max_intervals})"),
        });
    }
    let mut runs: Vec<(Interval, &'static str)> = missed
        .into_iter()
        .map(|interval| (interval, triggers::CATCH_UP))
        .collect();
    runs.push((latest, triggers::SCHEDULED));
    plan.runs = runs;
    Ok(plan)
}

/// The ledger entry for skipped intervals: how many, why, and the backfill that runs them.
pub fn skipped_entry(skipped: &Skipped, covered_through: Timestamp) -> LedgerEntry {
    let Skipped {
        range,
        count,
        reason,
    } = skipped;
    let message = format!(
        "{count} intervals not run: {reason}; to run them, set spec.backfill {{id: <new>, from: {}, to: {}}} (or pipeline-runner ingest --backfill {range})",
        range.start, range.end
    );
    LedgerEntry {
        run: RunRecord::new(range, triggers::CATCH_UP, outcomes::SKIPPED)
            .with_error(Some(&message)),
        covered_through: Some(covered_through.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a time")
    }

    fn days(plan: &RunPlan) -> Vec<(String, &'static str)> {
        plan.runs
            .iter()
            .map(|(interval, trigger)| (interval.to_string(), *trigger))
            .collect()
    }

    #[test]
    fn a_first_run_and_an_on_time_run_cover_the_latest_interval() {
        let now = at("2026-11-28T00:05:00Z");
        let first =
            plan_scheduled_run("@daily", CatchUpPolicy::All, 100, None, now).expect("a plan");
        assert_eq!(
            days(&first),
            vec![(
                "2026-11-27T00:00:00Z..2026-11-28T00:00:00Z".to_string(),
                triggers::SCHEDULED
            )]
        );
        let covered = Some(at("2026-11-27T00:00:00Z"));
        let on_time =
            plan_scheduled_run("@daily", CatchUpPolicy::All, 100, covered, now).expect("a plan");
        assert_eq!(on_time, first);
        // A retry after the latest ran repeats it.
        let again = plan_scheduled_run(
            "@daily",
            CatchUpPolicy::All,
            100,
            Some(at("2026-11-28T00:00:00Z")),
            now,
        )
        .expect("a plan");
        assert_eq!(again, first);
    }

    #[test]
    fn missed_intervals_run_in_order_before_the_latest() {
        let now = at("2026-11-28T09:00:00Z");
        let covered = Some(at("2026-11-25T00:00:00Z"));
        let plan =
            plan_scheduled_run("@daily", CatchUpPolicy::All, 100, covered, now).expect("a plan");
        assert_eq!(
            days(&plan),
            vec![
                (
                    "2026-11-25T00:00:00Z..2026-11-26T00:00:00Z".to_string(),
                    triggers::CATCH_UP
                ),
                (
                    "2026-11-26T00:00:00Z..2026-11-27T00:00:00Z".to_string(),
                    triggers::CATCH_UP
                ),
                (
                    "2026-11-27T00:00:00Z..2026-11-28T00:00:00Z".to_string(),
                    triggers::SCHEDULED
                ),
            ]
        );
        assert_eq!(plan.skipped, None);
        let latest_only =
            plan_scheduled_run("@daily", CatchUpPolicy::Latest, 100, covered, now).expect("a plan");
        assert_eq!(latest_only.runs.len(), 1, "Latest runs the latest only");
        // None: the latest only, when on time; nine hours late it is dropped, and said so.
        let on_time = at("2026-11-28T00:04:00Z");
        let plan = plan_scheduled_run("@daily", CatchUpPolicy::None, 100, covered, on_time)
            .expect("a plan");
        assert_eq!(plan.runs.len(), 1);
        let late =
            plan_scheduled_run("@daily", CatchUpPolicy::None, 100, covered, now).expect("a plan");
        assert!(late.runs.is_empty());
        assert_eq!(late.skipped.map(|skipped| skipped.count), Some(1));
    }

    #[test]
    fn catch_up_is_bounded_and_says_what_it_skipped() {
        let now = at("2026-11-28T00:00:30Z");
        // Hourly, down for ten days: 240 missed, 5 kept (the newest), 235 skipped.
        let covered = Some(at("2026-11-17T23:00:00Z"));
        let plan =
            plan_scheduled_run("0 * * * *", CatchUpPolicy::All, 5, covered, now).expect("a plan");
        assert_eq!(plan.runs.len(), 6);
        assert_eq!(
            plan.runs[0].0.to_string(),
            "2026-11-27T18:00:00Z..2026-11-27T19:00:00Z"
        );
        let skipped = plan.skipped.expect("some skipped");
        assert_eq!(skipped.count, 235);
        assert_eq!(
            skipped.range.to_string(),
            "2026-11-17T23:00:00Z..2026-11-27T18:00:00Z"
        );
        let entry = skipped_entry(&skipped, at("2026-11-27T18:00:00Z"));
        let message = entry.run.error.unwrap_or_default();
        assert!(
            message.contains("235 intervals not run")
                && message.contains("--backfill 2026-11-17T23:00:00Z..2026-11-27T18:00:00Z"),
            "{message}"
        );
        // A covered time between schedule times (the schedule changed): from the next one.
        let plan = plan_scheduled_run(
            "@daily",
            CatchUpPolicy::All,
            5,
            Some(at("2026-11-26T07:30:00Z")),
            now,
        )
        .expect("a plan");
        assert_eq!(
            days(&plan)[0].0,
            "2026-11-27T00:00:00Z..2026-11-28T00:00:00Z".to_string()
        );
    }

    #[test]
    fn the_status_lists_each_interval_once_newest_first() {
        let entry = |interval: &str, outcome: &str, covered: &str| LedgerEntry {
            run: RunRecord {
                interval: interval.into(),
                trigger: triggers::SCHEDULED.into(),
                outcome: outcome.into(),
                ..RunRecord::default()
            },
            covered_through: Some(covered.into()),
        };
        let entries = vec![
            entry("a", outcomes::FAILED, "2026-11-26T00:00:00Z"),
            entry("b", outcomes::SUCCEEDED, "2026-11-27T00:00:00Z"),
            // The retry of a, later: it replaces the failure.
            entry("a", outcomes::SUCCEEDED, "2026-11-26T00:00:00Z"),
        ];
        let status = runs_status(&entries);
        assert_eq!(
            status.covered_through.as_deref(),
            Some("2026-11-27T00:00:00Z")
        );
        let listed: Vec<(&str, &str)> = status
            .recent
            .iter()
            .map(|run| (run.interval.as_str(), run.outcome.as_str()))
            .collect();
        assert_eq!(
            listed,
            vec![("a", outcomes::SUCCEEDED), ("b", outcomes::SUCCEEDED)]
        );
        let long = "x".repeat(1_000);
        let cut = RunRecord::default().with_error(Some(&long));
        assert_eq!(cut.error.map(|error| error.len()), Some(ERROR_LENGTH + 3));
    }
}

//! A backfill on the local stack's real Kafka and Cassandra, from the local listings API with
//! its date filter: `standalone --backfill` over a week of `examples/listings-by-day.yaml` asks
//! for exactly the seven days, in order, one run each; every listing lands in its day's
//! partition; the report lists each run; and backfilling the same week again stores the same
//! rows (keys and record timestamps make the writes idempotent).
//!
//! And the catch-up of a scheduled source: with its run ledger saying the schedule last ran
//! four days ago, one scheduled run asks for the three missed days, in order, then the latest,
//! and records each run in the ledger; the next scheduled run asks for the latest day only.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rtdp_crds::jiff::civil::Date;
use rtdp_crds::jiff::{Timestamp, tz::TimeZone};
use rtdp_crds::runs::{LedgerEntry, RunRecord, outcomes, triggers};
use rtdp_crds::{Pipeline, parse_pipeline};
use rtdp_provisioning::kafka::read_run_ledger;
use rtdp_test_support::listings_api::{Listings, ListingsApi};
use rtdp_test_support::{
    cassandra_contact_points, kafka_bootstrap_servers, unique_cql_identifier, unique_name,
};

const WEEK: &str = "2026-11-20T00:00:00Z..2026-11-27T00:00:00Z";

/// examples/listings-by-day.yaml on the local stack, with unique topic and keyspace names.
fn listings_by_day(prefix: &str) -> Pipeline {
    let text = include_str!("../../../examples/listings-by-day.yaml");
    let mut pipeline = parse_pipeline(text, "listings-by-day.yaml").expect("the example parses");
    let name = unique_name(prefix);
    pipeline.metadata.name = Some(name.clone());
    pipeline.metadata.namespace = Some("tests".into());
    pipeline.spec.kafka.bootstrap_servers = vec![kafka_bootstrap_servers()];
    pipeline.spec.cassandra.contact_points = cassandra_contact_points();
    pipeline.spec.cassandra.keyspace.name = unique_cql_identifier(prefix);
    pipeline
}

/// The zpids stored under each day of the week.
async fn stored_by_day(table: &str, days: &[Date]) -> Vec<(Date, BTreeSet<i64>)> {
    let session = cassandra().await;
    let mut stored = Vec::new();
    for day in days {
        let result = session
            .query_unpaged(
                format!("SELECT zpid FROM {table} WHERE date_posted = '{day}'"),
                (),
            )
            .await
            .unwrap_or_else(|error| panic!("reading {table} for {day}: {error}"))
            .into_rows_result()
            .expect("rows");
        let zpids = result
            .rows::<(i64,)>()
            .expect("zpids")
            .map(|row| row.expect("a zpid").0)
            .collect();
        stored.push((*day, zpids));
    }
    stored
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_runs_each_day_once_and_running_it_again_changes_nothing() {
    let pipeline = listings_by_day("backfill");
    let first_day: Date = "2026-11-20".parse().expect("a date");
    let days: Vec<Date> = first_day
        .series(rtdp_crds::jiff::Span::new().days(1))
        .take(7)
        .collect();
    // 100 listings over the week's seven days: 14 or 15 a day, one page each.
    let listings = Listings::generate(4, 25, 0).posted_over(7, days[6]);
    let api = ListingsApi::start(
        "127.0.0.1:0".parse().expect("an address"),
        listings.clone(),
        None,
    )
    .await
    .expect("starting the listings API");
    let manifest = write_manifest(&pipeline);
    let table = format!("{}.listings_by_day", pipeline.spec.cassandra.keyspace.name);
    let expected: Vec<(Date, BTreeSet<i64>)> = days
        .iter()
        .map(|day| {
            let next = day.tomorrow().expect("a next day").to_string();
            let zpids = listings
                .posted_within(Some(&day.to_string()), Some(&next))
                .map(|record| record["zpid"].as_i64().expect("a zpid"))
                .collect();
            (*day, zpids)
        })
        .collect();
    let expected_requests: Vec<(String, String)> = days
        .iter()
        .map(|day| {
            (
                day.to_string(),
                day.tomorrow().expect("a next day").to_string(),
            )
        })
        .collect();

    let mut stored = None;
    for round in 1..=2 {
        let runner = Runner::start(
            &["standalone", "--backfill", WEEK, "--source-url", &api.url],
            &manifest,
            &[],
        );
        let log = runner.log.clone();
        let status = runner.wait(Duration::from_secs(180));
        let report = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            status.success(),
            "backfill round {round}: {status}; log:\n{report}"
        );

        // Exactly the week's days, in order, once each per round.
        let requested = api.requested_dates();
        let expected_so_far: Vec<(String, String)> = (0..round)
            .flat_map(|_| expected_requests.iter().cloned())
            .collect();
        assert_eq!(requested, expected_so_far, "round {round}");
        // The run history: one line per day.
        for (since, before) in &expected_requests {
            let line = format!("{since}T00:00:00Z..{before}T00:00:00Z  Backfill  succeeded");
            assert!(report.contains(&line), "no run line {line:?} in:\n{report}");
        }

        assert_eq!(
            stored_by_day(&table, &days).await,
            expected,
            "round {round}: each listing under its day"
        );
        let mut rows = read_rows(&cassandra().await, &table).await;
        rows.sort_by_key(|row| format!("{row:?}"));
        if let Some(before) = &stored {
            assert_eq!(&rows, before, "the second backfill changed nothing");
        }
        stored = Some(rows);
    }
}

/// The run ledger's entries, oldest first.
async fn ledger_of(pipeline: &Pipeline) -> Vec<LedgerEntry> {
    read_run_ledger(
        &kafka_config(pipeline),
        &pipeline.runs_topic_name(),
        100,
        Duration::from_secs(30),
    )
    .await
    .expect("reading the run ledger")
    .entries
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_run_catches_up_the_days_missed_since_its_ledger_and_records_each_run() {
    let pipeline = listings_by_day("catch-up");
    let today = Timestamp::now().to_zoned(TimeZone::UTC).date();
    let day = |back: i16| {
        today
            .checked_sub(rtdp_crds::jiff::Span::new().days(back))
            .expect("a day")
    };
    // Five days of listings, up to yesterday.
    let days: Vec<Date> = (1..=5).rev().map(day).collect();
    let listings = Listings::generate(2, 25, 0).posted_over(5, day(1));
    let api = ListingsApi::start(
        "127.0.0.1:0".parse().expect("an address"),
        listings.clone(),
        None,
    )
    .await
    .expect("starting the listings API");
    let manifest = write_manifest(&pipeline);
    let table = format!("{}.listings_by_day", pipeline.spec.cassandra.keyspace.name);

    // The ledger: the schedule last ran for the day five days ago. (Written here as the
    // runner writes it; the topics as the operator or standalone mode creates them.)
    provision(&pipeline).await;
    let seed = LedgerEntry {
        run: RunRecord {
            interval: format!("{}T00:00:00Z..{}T00:00:00Z", day(5), day(4)),
            trigger: triggers::SCHEDULED.into(),
            outcome: outcomes::SUCCEEDED.into(),
            ..RunRecord::default()
        },
        covered_through: Some(format!("{}T00:00:00Z", day(4))),
    };
    let producer: FutureProducer = kafka_config(&pipeline).create().expect("a producer");
    let payload = serde_json::to_vec(&seed).expect("an entry");
    producer
        .send(
            FutureRecord::to(&pipeline.runs_topic_name())
                .key(seed.key())
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("seeding the ledger");

    let run = |round: &str| {
        let runner = Runner::start(
            &["standalone", "--once", "--source-url", &api.url],
            &manifest,
            &[],
        );
        let log = runner.log.clone();
        let status = runner.wait(Duration::from_secs(180));
        let report = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "{round}: {status}; log:\n{report}");
        report
    };
    let report = run("the catch-up");
    // The three missed days in order, then the latest: yesterday.
    let expected_requests: Vec<(String, String)> = (1..=4)
        .rev()
        .map(|back| (day(back).to_string(), day(back - 1).to_string()))
        .collect();
    assert_eq!(api.requested_dates(), expected_requests);
    for (index, (since, before)) in expected_requests.iter().enumerate() {
        let trigger = if index == 3 { "Scheduled" } else { "CatchUp  " };
        let line = format!("{since}T00:00:00Z..{before}T00:00:00Z  {trigger} succeeded");
        assert!(report.contains(&line), "no run line {line:?} in:\n{report}");
    }
    // Each day's listings under its day; the day before the ledger's last run not requested.
    let expected: Vec<(Date, BTreeSet<i64>)> = days
        .iter()
        .map(|date| {
            let zpids = if *date == day(5) {
                BTreeSet::new()
            } else {
                let next = date.tomorrow().expect("a next day").to_string();
                listings
                    .posted_within(Some(&date.to_string()), Some(&next))
                    .map(|record| record["zpid"].as_i64().expect("a zpid"))
                    .collect()
            };
            (*date, zpids)
        })
        .collect();
    assert_eq!(stored_by_day(&table, &days).await, expected);

    // The ledger: the seed, then one entry per run with its trigger and its records, the
    // covered end advancing to today.
    let ledger = ledger_of(&pipeline).await;
    let recorded: Vec<(String, String, String, i64)> = ledger
        .iter()
        .map(|entry| {
            (
                entry.run.interval.clone(),
                entry.run.trigger.clone(),
                entry.run.outcome.clone(),
                entry.run.records,
            )
        })
        .collect();
    let expected_runs: Vec<(String, String, String, i64)> = std::iter::once((
        seed.run.interval.clone(),
        triggers::SCHEDULED.to_string(),
        outcomes::SUCCEEDED.to_string(),
        0,
    ))
    .chain(
        expected_requests
            .iter()
            .enumerate()
            .map(|(index, (since, before))| {
                let count = listings.posted_within(Some(since), Some(before)).count();
                (
                    format!("{since}T00:00:00Z..{before}T00:00:00Z"),
                    if index == 3 {
                        triggers::SCHEDULED
                    } else {
                        triggers::CATCH_UP
                    }
                    .to_string(),
                    outcomes::SUCCEEDED.to_string(),
                    i64::try_from(count).expect("a count"),
                )
            }),
    )
    .collect();
    assert_eq!(recorded, expected_runs);
    assert_eq!(
        ledger
            .last()
            .and_then(|entry| entry.covered_through.clone()),
        Some(format!("{today}T00:00:00Z"))
    );
    let mut before = read_rows(&cassandra().await, &table).await;
    before.sort_by_key(|row| format!("{row:?}"));

    // Nothing missed now: the next scheduled run asks for the latest day only, and stores the
    // same rows.
    run("the next run");
    let requested = api.requested_dates();
    assert_eq!(
        requested[expected_requests.len()..],
        [(day(1).to_string(), today.to_string())]
    );
    let mut after = read_rows(&cassandra().await, &table).await;
    after.sort_by_key(|row| format!("{row:?}"));
    assert_eq!(
        after, before,
        "running the latest day again changed nothing"
    );
}

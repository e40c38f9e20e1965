//! A backfill on the local stack's real Kafka and Cassandra, from the local listings API with
//! its date filter: `standalone --backfill` over a week of `examples/listings-by-day.yaml` asks
//! for exactly the seven days, in order, one run each; every listing lands in its day's
//! partition; the report lists each run; and backfilling the same week again stores the same
//! rows (keys and record timestamps make the writes idempotent).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use rtdp_crds::jiff::civil::Date;
use rtdp_crds::{Pipeline, parse_pipeline};
use rtdp_test_support::listings_api::{Listings, ListingsApi};
use rtdp_test_support::{
    cassandra_contact_points, kafka_bootstrap_servers, unique_cql_identifier, unique_name,
};

const WEEK: &str = "2026-11-20T00:00:00Z..2026-11-27T00:00:00Z";

/// examples/listings-by-day.yaml on the local stack, with unique topic and keyspace names.
fn listings_by_day(prefix: &str) -> Pipeline {
    let text = include_str!("../../examples/listings-by-day.yaml");
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
            let line = format!("{since}T00:00:00Z..{before}T00:00:00Z  succeeded");
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

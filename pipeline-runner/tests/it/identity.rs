//! Tables that tell the truth, against the real Kafka and Cassandra: with
//! `spec.schema.identity`, every table holds exactly one row per live listing at its latest
//! values (re-priced, moved, sold, tombstoned and filtered listings included), an older
//! record never resurrects or deletes a newer one, SIGKILLs and rebalances leave every table
//! exactly as a clean run of the same records, and a replay after a transform fix corrects
//! every row without a TRUNCATE.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use pipeline_runner::process::identity::{Applied, Change, IdentityWriter};
use pipeline_runner::process::writer::TableWriter;
use pipeline_runner::record::RecordParser;
use pipeline_runner::transform::{Outcome, Transforms};
use rdkafka::producer::FutureProducer;
use rtdp_crds::Pipeline;
use rtdp_provisioning::kafka::{RewindTo, rewind_group};
use scylla::client::session::Session;
use scylla::value::CqlValue;
use serde_json::{Value as Json, json};

const CITIES: [&str; 3] = ["Houston", "Austin", "Dallas"];

/// One version of a listing as the source sends it: its values, or a tombstone.
#[derive(Clone, Debug)]
enum Version {
    Listing {
        city: usize,
        price: i64,
        status: &'static str,
    },
    Tombstone,
}

/// Listing `index` with this city, price and status.
fn listing(index: usize, city: usize, price: i64, status: &str) -> (String, Json) {
    let mut listing = rtdp_test_support::listings_api::listing(index);
    listing["city"] = json!(CITIES[city]);
    listing["price"] = json!(price);
    listing["homeStatus"] = json!(status);
    (listing["zpid"].to_string(), listing)
}

/// The versions every listing goes through, in the order they are produced: re-priced every
/// round, some moved to another city, some sold (one of them listed again), some
/// tombstoned, some dropped by the filter (price 0).
fn history(listings: usize, rounds: usize) -> Vec<(usize, Version)> {
    let mut versions = Vec::new();
    for round in 0..rounds {
        for index in 0..listings {
            let moved = usize::from(round >= 2 && index % 3 == 0);
            let price = 100_000 + index as i64 * 1_000 + round as i64 * 7;
            let last = round + 1 == rounds;
            let version = if last && index % 7 == 0 {
                Version::Tombstone
            } else if last && index % 11 == 0 {
                Version::Listing {
                    city: moved,
                    price: 0,
                    status: "FOR_SALE",
                }
            } else if round + 2 == rounds && index % 5 == 0 {
                Version::Listing {
                    city: moved,
                    price,
                    status: "SOLD",
                }
            } else if last && index % 5 == 0 && index % 2 == 1 {
                // Sold in the round before and not listed again.
                continue;
            } else {
                Version::Listing {
                    city: (index + moved) % CITIES.len(),
                    price,
                    status: "FOR_SALE",
                }
            };
            versions.push((index, version));
        }
    }
    versions
}

/// What a clean pass over `history` leaves: zpid → (city, price) of every live listing.
fn expected(history: &[(usize, Version)]) -> BTreeMap<i64, (String, i64)> {
    let mut live = BTreeMap::new();
    for (index, version) in history {
        let (zpid, _) = listing(*index, 0, 0, "");
        let zpid: i64 = zpid.parse().expect("a numeric zpid");
        match version {
            Version::Listing {
                city,
                price,
                status,
            } if *price > 0 && *status != "SOLD" => {
                live.insert(zpid, (CITIES[*city].to_string(), *price));
            }
            _ => {
                live.remove(&zpid);
            }
        }
    }
    live
}

/// Produces listing `index` with this city, price and status, keyed by its zpid; returns
/// the key.
async fn produce_listing(
    producer: &FutureProducer,
    topic: &str,
    (index, city, price, status): (usize, usize, i64, &str),
) -> String {
    let (key, payload) = listing(index, city, price, status);
    produce(producer, topic, &key, Some(payload.to_string().as_bytes())).await;
    key
}

async fn produce_history(producer: &FutureProducer, topic: &str, history: &[(usize, Version)]) {
    for (index, version) in history {
        match version {
            Version::Listing {
                city,
                price,
                status,
            } => {
                produce_listing(producer, topic, (*index, *city, *price, status)).await;
            }
            Version::Tombstone => {
                let (key, _) = listing(*index, 0, 0, "");
                produce(producer, topic, &key, None).await;
            }
        }
    }
}

fn text(row: &BTreeMap<String, Option<CqlValue>>, column: &str) -> String {
    match row.get(column) {
        Some(Some(CqlValue::Text(text))) => text.clone(),
        other => panic!("{column} is not text: {other:?}"),
    }
}

fn bigint(row: &BTreeMap<String, Option<CqlValue>>, column: &str) -> i64 {
    match row.get(column) {
        Some(Some(CqlValue::BigInt(value))) => *value,
        other => panic!("{column} is not a bigint: {other:?}"),
    }
}

/// `listings_by_id` as zpid → (city, price), and `listings_by_city` as its (city, price, zpid)
/// rows, in a list so a listing held twice shows twice.
async fn both_tables(
    session: &Session,
    pipeline: &Pipeline,
) -> (BTreeMap<i64, (String, i64)>, Vec<(String, i64, i64)>) {
    let keyspace = &pipeline.spec.cassandra.keyspace.name;
    let by_id = read_rows(session, &format!("{keyspace}.listings_by_id"))
        .await
        .iter()
        .map(|row| {
            (
                bigint(row, "zpid"),
                (text(row, "city"), bigint(row, "price")),
            )
        })
        .collect();
    let mut by_city: Vec<(String, i64, i64)> =
        read_rows(session, &format!("{keyspace}.listings_by_city"))
            .await
            .iter()
            .map(|row| (text(row, "city"), bigint(row, "price"), bigint(row, "zpid")))
            .collect();
    by_city.sort();
    (by_id, by_city)
}

fn as_city_rows(expected: &BTreeMap<i64, (String, i64)>) -> Vec<(String, i64, i64)> {
    let mut rows: Vec<(String, i64, i64)> = expected
        .iter()
        .map(|(zpid, (city, price))| (city.clone(), *price, *zpid))
        .collect();
    rows.sort();
    rows
}

/// The example and more: a listing stored at 100 in Houston, re-pulled at 200, moved
/// to Austin at 300, holds one row; re-priced, moved, sold, tombstoned and filtered listings
/// all end as a clean model of the stream says, in both tables.
#[tokio::test(flavor = "multi_thread")]
async fn every_table_holds_one_row_per_live_listing_at_its_latest_values() {
    let pipeline = listings_pipeline("views");
    provision(&pipeline).await;
    let producer = producer(&pipeline);
    let topic = pipeline.topic_name();
    // The listing first: Houston 100, Houston 200, Austin 300.
    let (zpid, _) = listing(500, 0, 0, "");
    for (city, price) in [(0, 100), (0, 200), (1, 300)] {
        produce_listing(&producer, &topic, (500, city, price, "FOR_SALE")).await;
    }
    let history = history(40, 4);
    produce_history(&producer, &topic, &history).await;

    process_everything(&pipeline).await;

    let mut wanted = expected(&history);
    wanted.insert(
        zpid.parse().expect("a numeric zpid"),
        ("Austin".to_string(), 300),
    );
    let session = cassandra().await;
    let (by_id, by_city) = both_tables(&session, &pipeline).await;
    assert_eq!(by_id, wanted, "listings_by_id: one row per live listing");
    assert_eq!(
        by_city,
        as_city_rows(&wanted),
        "listings_by_city: exactly one row per live listing, at its latest city and price"
    );
    assert!(
        wanted.len() < 40 && wanted.len() > 20,
        "the history deletes some listings and keeps most: {}",
        wanted.len()
    );
}

/// Applies one record of `identity` under its lock, as a processor does.
async fn apply_one(
    identities: &IdentityWriter,
    tables: &TableWriter,
    identity: &[CqlValue],
    change: Change,
    write_time: i64,
) -> Applied {
    let lock = identities.lock(identity).await;
    identities
        .apply(tables, &lock, identity, &change, write_time)
        .await
        .expect("applied")
}

/// The parsed values of listing `index` with this city and price, as the processors build them.
fn values_of(pipeline: &Pipeline, index: usize, city: usize, price: i64) -> Vec<Option<CqlValue>> {
    let parser = RecordParser::new(&pipeline.spec.schema).expect("the parser");
    let transforms = Transforms::new(&pipeline.spec.schema).expect("the transforms");
    let (_, payload) = listing(index, city, price, "FOR_SALE");
    let parsed = parser
        .parse(Some(payload.to_string().as_bytes()))
        .expect("a valid listing");
    let Ok(Outcome::Keep(derived)) = transforms.apply(&cel::Context::default(), &parsed) else {
        panic!("the listing is kept")
    };
    let mut values = parsed.values;
    values.extend(derived);
    values
}

/// Records applied out of write-time order (what a restart without committed progress, or a
/// producer's event time, can give): the newest always wins, across a fresh process too (its
/// state is read back from the state table), and re-applying a record changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_record_neither_resurrects_a_row_nor_deletes_a_newer_one() {
    let pipeline = listings_pipeline("late");
    provision(&pipeline).await;
    let session = Arc::new(cassandra().await);
    let parser = RecordParser::new(&pipeline.spec.schema).expect("the parser");
    let transforms = Transforms::new(&pipeline.spec.schema).expect("the transforms");
    let names: Vec<String> = parser
        .field_names()
        .chain(transforms.derived_names())
        .map(str::to_string)
        .collect();
    let tables = TableWriter::prepare(Arc::clone(&session), &pipeline.spec, &names)
        .await
        .expect("the INSERTs prepare");
    let fresh_identities = || async {
        IdentityWriter::prepare(Arc::clone(&session), &pipeline, &names)
            .await
            .expect("the identity's statements prepare")
            .expect("the example declares an identity")
    };
    let identities = fresh_identities().await;
    let austin = values_of(&pipeline, 9, 1, 300);
    let identity = identities.identity_of(&austin).expect("zpid");
    let zpid = match &identity[..] {
        [CqlValue::BigInt(zpid)] => *zpid,
        other => panic!("the identity is the zpid: {other:?}"),
    };
    let apply = |identities, change, write_time| {
        apply_one(identities, &tables, &identity, change, write_time)
    };
    let only = |city: &str, price: i64| BTreeMap::from([(zpid, (city.to_string(), price))]);

    assert_eq!(
        apply(&identities, Change::Upsert(austin.clone()), 3_000).await,
        Applied::Upserted
    );
    let houston = values_of(&pipeline, 9, 0, 200);
    assert_eq!(
        apply(&identities, Change::Upsert(houston.clone()), 2_000).await,
        Applied::Superseded,
        "an older record is superseded"
    );
    assert_eq!(
        apply(&identities, Change::Upsert(austin.clone()), 3_000).await,
        Applied::Superseded,
        "a record applied again (re-delivered after a crash) changes nothing"
    );
    let (by_id, by_city) = both_tables(&session, &pipeline).await;
    assert_eq!(by_id, only("Austin", 300));
    assert_eq!(by_city, as_city_rows(&only("Austin", 300)));

    assert_eq!(
        apply(&identities, Change::Delete, 4_000).await,
        Applied::Deleted
    );
    // A new process: no cache, the state comes from the state table.
    let restarted = fresh_identities().await;
    assert_eq!(
        apply(&restarted, Change::Upsert(houston.clone()), 3_500).await,
        Applied::Superseded,
        "an older record does not resurrect a deleted listing"
    );
    let (by_id, by_city) = both_tables(&session, &pipeline).await;
    assert_eq!(by_id, BTreeMap::new());
    assert_eq!(by_city, Vec::new());

    let dallas = values_of(&pipeline, 9, 2, 400);
    assert_eq!(
        apply(&restarted, Change::Upsert(dallas), 5_000).await,
        Applied::Upserted,
        "a newer record lists it again"
    );
    let (by_id, by_city) = both_tables(&session, &pipeline).await;
    assert_eq!(by_id, only("Dallas", 400));
    assert_eq!(by_city, as_city_rows(&only("Dallas", 400)));
}

/// Ten SIGKILLs of the processor while it works through moving listings, then a scale from
/// one processor to three and back to one: every row of every table (and the identity's
/// state) is what a clean run of the same records leaves.
#[tokio::test(flavor = "multi_thread")]
async fn sigkills_and_a_scale_out_and_in_leave_every_table_as_a_clean_run() {
    let mut pipeline = listings_pipeline("kills");
    pipeline.spec.topic.partitions = 6;
    // Small batches and few writes in flight: the kills land mid-stream, not after it.
    pipeline.spec.runner.concurrency = 8;
    pipeline.spec.runner.batch.max_records = 20;
    provision(&pipeline).await;
    let producer = producer(&pipeline);
    let topic = pipeline.topic_name();
    let history = history(150, 8);
    produce_history(&producer, &topic, &history).await;

    let manifest = write_manifest(&pipeline);
    for kill in 0..10 {
        let process = Runner::start(&["process"], &manifest, &[]);
        let before = records_finished(&pipeline);
        // Let it join, take partitions and store some work, then kill it.
        let started = tokio::time::Instant::now();
        while records_finished(&pipeline) == before && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(50 * kill)).await;
        process.kill();
    }
    // One, then three processors sharing the group, then one again.
    let first = Runner::start(&["process"], &manifest, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = Runner::start(&["process"], &manifest, &[]);
    let third = Runner::start(&["process"], &manifest, &[]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(second.terminate(Duration::from_secs(30)).success());
    assert!(third.terminate(Duration::from_secs(30)).success());
    wait_offsets_at_end(&pipeline, Duration::from_secs(180)).await;
    let log = first.log_text();
    assert!(
        first.terminate(Duration::from_secs(30)).success(),
        "the last processor stops cleanly; log:\n{log}"
    );

    let session = cassandra().await;
    let wanted = expected(&history);
    let (by_id, by_city) = both_tables(&session, &pipeline).await;
    assert_eq!(by_id, wanted, "listings_by_id after the kills");
    assert_eq!(
        by_city,
        as_city_rows(&wanted),
        "listings_by_city after the kills"
    );
    assert_same_as_a_clean_run(
        &session,
        &pipeline,
        "after 10 SIGKILLs and a scale 1 → 3 → 1",
    )
    .await;
}

/// A transform fixed after the fact: the replay rewrites every row with the new derived
/// value without a TRUNCATE (its write times start above the first run's), and a record
/// produced after the replay still wins over the replayed ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_a_transform_fix_corrects_every_row() {
    let mut pipeline = listings_pipeline("fix");
    // The bug: price per square foot off by a factor of ten.
    pipeline.spec.schema.derived[0].expression =
        "living_area != null && living_area > 0 ? double(price) / double(living_area) / 10.0 : null"
            .to_string();
    provision(&pipeline).await;
    let producer = producer(&pipeline);
    let topic = pipeline.topic_name();
    let history = history(30, 3);
    produce_history(&producer, &topic, &history).await;
    process_everything(&pipeline).await;

    // The fix, then the replay the operator runs (`spec.replay` from earliest).
    let mut fixed = pipeline.clone();
    fixed.spec.schema.derived[0].expression =
        "living_area != null && living_area > 0 ? double(price) / double(living_area) : null"
            .to_string();
    rewind_group(
        &kafka_config(&fixed),
        &topic,
        &fixed.consumer_group(),
        RewindTo::Earliest,
        Duration::from_secs(15),
    )
    .await
    .expect("the group's offsets move back");
    process_everything(&fixed).await;

    // A clean run of the fixed spec over the same records.
    let clean = clean_twin(&fixed, "fixclean");
    provision(&clean).await;
    process_everything(&clean).await;
    let session = cassandra().await;
    let replayed = every_row(&session, &fixed).await;
    assert_eq!(
        replayed,
        every_row(&session, &clean).await,
        "after the replay every table is what a clean run of the fixed spec leaves"
    );
    let by_id = rows_by(
        &session,
        &format!("{}.listings_by_id", fixed.spec.cassandra.keyspace.name),
        "zpid",
    )
    .await;
    let corrected = by_id
        .values()
        .filter(
            |row| match (row.get("price_per_sqft"), row.get("living_area")) {
                (Some(Some(CqlValue::Double(per_sqft))), Some(Some(CqlValue::Int(area)))) => {
                    let price = bigint(row, "price") as f64;
                    (per_sqft - price / f64::from(*area)).abs() < 1e-6
                }
                _ => false,
            },
        )
        .count();
    assert!(corrected >= 10, "rows with the fixed value: {corrected}");

    // A record produced after the replay wins over the replayed ones.
    let key = produce_listing(&producer, &topic, (1, 2, 777_777, "FOR_SALE")).await;
    process_everything(&fixed).await;
    let (by_id, by_city) = both_tables(&session, &fixed).await;
    let zpid: i64 = key.parse().expect("a numeric zpid");
    assert_eq!(by_id.get(&zpid), Some(&("Dallas".to_string(), 777_777)));
    assert_eq!(
        by_city
            .iter()
            .filter(|(_, _, row_zpid)| *row_zpid == zpid)
            .count(),
        1,
        "{by_city:?}"
    );
}

/// `pipeline-runner validate` prints what provisioning creates, the identity's state table
/// included, and refuses an identity that does not hold with every reason at once.
#[test]
fn validate_prints_the_state_table_and_refuses_a_bad_identity() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/property-listings.yaml"
    );
    let validate = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pipeline-runner"))
            .args(["validate", "--file"])
            .arg(file)
            .output()
            .expect("running pipeline-runner validate")
    };
    let output = validate(std::path::Path::new(example));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for line in [
        "CREATE KEYSPACE IF NOT EXISTS real_estate WITH replication",
        "CREATE TABLE IF NOT EXISTS real_estate.listings_by_city (city text, price bigint, zpid bigint,",
        "CREATE TABLE IF NOT EXISTS real_estate.property_listings_identity (zpid bigint, city text, price bigint, rtdp_write_time bigint, rtdp_deleted boolean, PRIMARY KEY ((zpid)))",
    ] {
        assert!(printed.contains(line), "{line:?} missing from:\n{printed}");
    }

    let text = std::fs::read_to_string(example).expect("reading the example");
    assert!(
        text.contains("fields: [zpid]"),
        "the example's identity moved"
    );
    let bad = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-identity.yaml");
    std::fs::write(&bad, text.replace("fields: [zpid]", "fields: [city]"))
        .expect("writing the manifest");
    let output = validate(&bad);
    let refused = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        output.stdout.is_empty(),
        "nothing printed as valid: {output:?}"
    );
    for reason in [
        "spec.cassandra.tables[0]: table listings_by_id's primary key (zpid) does not hold the identity field city: add city to its clusteringColumns",
        "spec.source.http.keyField: is \"/zpid\"",
    ] {
        assert!(
            refused.contains(reason),
            "{reason:?} missing from:\n{refused}"
        );
    }
}

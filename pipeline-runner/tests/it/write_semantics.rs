//! What a row ends up holding, against the real Kafka and Cassandra: a later record of a key
//! always wins (however many share a millisecond, whatever the producers' clocks say), and a
//! row Cassandra refuses for good is dead-lettered with the server's message while every
//! other record flows on.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rtdp_crds::{DerivedFieldSpec, Pipeline, TableSpec, WriteConsistency};
use rtdp_test_support::{cassandra_contact_points, eventually};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use serde_json::{Value as Json, json};

/// The price of every listing in `listings_by_id`, by zpid.
async fn prices(
    session: &scylla::client::session::Session,
    pipeline: &Pipeline,
) -> BTreeMap<i64, i64> {
    let table = format!("{}.listings_by_id", pipeline.spec.cassandra.keyspace.name);
    prices_by_zpid(session, &table).await
}

/// 2 500 updates of one key produced in one burst: batches share a broker append time, so
/// hundreds of them fall in one millisecond, across offsets 999/1000 and 1999/2000 (where
/// the old `millis * 1000 + offset % 1000` went backwards). The last one must win.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_of_many_updates_in_one_millisecond_wins() {
    let mut pipeline = listings_pipeline("burst");
    pipeline.spec.topic.partitions = 1;
    provision(&pipeline).await;
    let topic = pipeline.topic_name();
    // A lingering producer packs the burst into few batches (one append time each).
    let producer: FutureProducer = kafka_config(&pipeline)
        .set("enable.idempotence", "true")
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .create()
        .expect("a producer");
    let updates = 2_500_i64;
    let mut deliveries = Vec::new();
    for price in 1..=updates {
        let (key, payload) = listing_with_price(7, price);
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        deliveries.push(producer.send_result(record).expect("queueing a record"));
    }
    for delivery in deliveries {
        delivery
            .await
            .expect("the producer lives")
            .expect("the record is acknowledged");
    }
    let (zpid, _) = listing_with_price(7, 0);
    let zpid: i64 = zpid.parse().expect("a numeric zpid");

    let manifest = write_manifest(&pipeline);
    let process = Runner::start(&["process"], &manifest, &[]);
    wait_offsets_at_end(&pipeline, Duration::from_secs(90)).await;
    let session = cassandra().await;
    assert_eq!(
        prices(&session, &pipeline).await,
        BTreeMap::from([(zpid, updates)]),
        "the last update of the key must be the stored one; runner log:\n{}",
        process.log_text()
    );
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}");
}

/// Producers whose clocks are minutes behind or ahead: on the operator-managed topic the
/// broker stamps the time (LogAppendTime), so the record produced last wins whatever time
/// its producer claimed.
#[tokio::test(flavor = "multi_thread")]
async fn producer_clocks_never_decide_which_update_wins() {
    let pipeline = listings_pipeline("skew");
    provision(&pipeline).await;
    let topic = pipeline.topic_name();
    let producer = producer(&pipeline);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let ten_minutes = 10 * 60 * 1000;
    // Listing 1: first from a producer 10 minutes ahead, then from one 10 minutes behind.
    // Listing 2: the other way round. Listing 3: both behind, the second further behind.
    let plan = [
        (1, 100, now + ten_minutes),
        (1, 101, now - ten_minutes),
        (2, 200, now - ten_minutes),
        (2, 201, now + ten_minutes),
        (3, 300, now - ten_minutes),
        (3, 301, now - 2 * ten_minutes),
    ];
    let mut expected = BTreeMap::new();
    for (index, price, claimed_time) in plan {
        let (key, payload) = listing_with_price(index, price);
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&payload)
            .timestamp(claimed_time);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(error, _)| panic!("producing: {error}"));
        expected.insert(key.parse::<i64>().expect("a numeric zpid"), price);
    }

    let manifest = write_manifest(&pipeline);
    let process = Runner::start(&["process"], &manifest, &[]);
    let session = cassandra().await;
    eventually(
        "every listing with the price produced last",
        Duration::from_secs(60),
        || async { (prices(&session, &pipeline).await == expected).then_some(()) },
    )
    .await;
    wait_offsets_at_end(&pipeline, Duration::from_secs(30)).await;
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}");
}

/// A pipeline with a derived partition key and a derived clustering column, each null for
/// some records (a CEL expression may return null): Cassandra refuses those rows.
fn pipeline_with_nullable_derived_keys() -> Pipeline {
    let mut pipeline = listings_pipeline("poison");
    let derived: Vec<DerivedFieldSpec> = serde_json::from_value(json!([
        {"name": "band", "type": "text", "expression": "price > 1000 ? 'priced' : null"},
        {"name": "segment", "type": "text", "expression": "bedrooms > 0 ? 'homes' : null"}
    ]))
    .expect("derived fields");
    pipeline.spec.schema.derived.extend(derived);
    let tables: Vec<TableSpec> = serde_json::from_value(json!([
        {"name": "by_id", "partitionKey": ["zpid"], "columns": ["price", "bedrooms"]},
        {"name": "by_band", "partitionKey": ["band"],
         "clusteringColumns": [{"name": "zpid", "order": "Ascending"}], "columns": ["price"]},
        {"name": "by_city", "partitionKey": ["city"],
         "clusteringColumns": [{"name": "segment", "order": "Ascending"}, {"name": "zpid", "order": "Ascending"}],
         "columns": ["price"]}
    ]))
    .expect("tables");
    pipeline.spec.cassandra.tables = tables;
    // The example's filter would drop the poison records before they reach Cassandra.
    pipeline.spec.schema.filter = None;
    pipeline
}

/// A poison record in each table's key among valid ones: the valid ones arrive within
/// seconds, each poison record is dead-lettered with reason `write_rejected`, the table and
/// Cassandra's own message, and the offsets move past all of them.
#[tokio::test(flavor = "multi_thread")]
async fn rows_cassandra_refuses_are_dead_lettered_and_never_stall_the_stream() {
    let pipeline = pipeline_with_nullable_derived_keys();
    provision(&pipeline).await;
    let topic = pipeline.topic_name();
    let producer = producer(&pipeline);
    let manifest = write_manifest(&pipeline);
    let process = Runner::start(&["process"], &manifest, &[]);

    // 60 valid listings, with one null band (price 0) and one null segment (0 bedrooms)
    // among them, on every partition's way.
    let mut valid = BTreeMap::new();
    let mut poison_keys = Vec::new();
    for index in 0..62_usize {
        let mut listing = rtdp_test_support::listings_api::listing(index);
        let price = 200_000 + index as i64;
        listing["price"] = Json::from(price);
        listing["bedrooms"] = Json::from(3);
        let zpid = listing["zpid"].as_i64().expect("a zpid");
        match index {
            20 => {
                listing["price"] = Json::from(0);
                poison_keys.push((zpid, "by_band"));
            }
            40 => {
                listing["bedrooms"] = Json::from(0);
                poison_keys.push((zpid, "by_city"));
            }
            _ => {
                valid.insert(zpid, price);
            }
        }
        produce(
            &producer,
            &topic,
            &zpid.to_string(),
            Some(listing.to_string().as_bytes()),
        )
        .await;
    }

    // A refused row fails only its own table: the record's rows in the other tables are
    // written (idempotently) and stay; the record as a whole is dead-lettered.
    let session = cassandra().await;
    let keyspace = &pipeline.spec.cassandra.keyspace.name;
    let all: Vec<i64> = {
        let mut all: Vec<i64> = valid.keys().copied().collect();
        all.extend(poison_keys.iter().map(|(zpid, _)| *zpid));
        all.sort();
        all
    };
    for table in ["by_id", "by_band", "by_city"] {
        let expected: Vec<i64> = all
            .iter()
            .copied()
            .filter(|zpid| !poison_keys.contains(&(*zpid, table)))
            .collect();
        let qualified = format!("{keyspace}.{table}");
        eventually(
            &format!("every listing {table} accepts, in {table}"),
            Duration::from_secs(20),
            || async {
                let zpids: Vec<i64> = rows_by(&session, &qualified, "zpid")
                    .await
                    .keys()
                    .copied()
                    .collect();
                (zpids == expected).then_some(())
            },
        )
        .await;
    }

    let letters = read_dead_letters(&pipeline, 2).await;
    let mut rejected: Vec<(i64, String)> = Vec::new();
    for letter in &letters {
        assert_eq!(
            letter.headers.get("rtdp.reason").map(String::as_str),
            Some("write_rejected"),
            "{letter:?}"
        );
        let table = letter
            .headers
            .get("rtdp.table")
            .cloned()
            .unwrap_or_default();
        let error = letter
            .headers
            .get("rtdp.error")
            .cloned()
            .unwrap_or_default();
        // Cassandra's own words about the null key, after our prefix.
        assert!(
            error.starts_with(&format!("write_rejected (table {table}): ")),
            "{error}"
        );
        assert!(error.to_lowercase().contains("null"), "{error}");
        let payload: Json =
            serde_json::from_slice(letter.payload.as_deref().unwrap_or_default()).expect("JSON");
        let zpid = payload["zpid"].as_i64().expect("a zpid");
        rejected.push((zpid, table));
    }
    rejected.sort();
    let mut expected: Vec<(i64, String)> = poison_keys
        .iter()
        .map(|(zpid, table)| (*zpid, format!("{keyspace}.{table}")))
        .collect();
    expected.sort();
    assert_eq!(rejected, expected);

    wait_offsets_at_end(&pipeline, Duration::from_secs(30)).await;
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}");
}

/// Producers may compress with any codec Kafka offers; zstd is the usual choice for events.
/// The runner decodes it (librdkafka built with zstd) instead of failing every fetch.
#[tokio::test(flavor = "multi_thread")]
async fn zstd_compressed_records_are_processed() {
    let pipeline = listings_pipeline("zstd");
    provision(&pipeline).await;
    let topic = pipeline.topic_name();
    let producer: FutureProducer = kafka_config(&pipeline)
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", "20")
        .create()
        .expect("a zstd producer");
    let mut expected = BTreeMap::new();
    for index in 0..50_usize {
        let (key, payload) = listing_with_price(index, 300_000 + index as i64);
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("producing with zstd: {error}"));
        expected.insert(
            key.parse::<i64>().expect("a numeric zpid"),
            300_000 + index as i64,
        );
    }
    let manifest = write_manifest(&pipeline);
    let process = Runner::start(&["process"], &manifest, &[]);
    let session = cassandra().await;
    eventually(
        "every zstd-compressed listing written",
        Duration::from_secs(60),
        || async { (prices(&session, &pipeline).await == expected).then_some(()) },
    )
    .await;
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}");
}

/// `tables[].consistency` is the level of each table's INSERT. On the one-node test cluster a
/// keyspace of replication factor 2 has one live replica of two: Cassandra takes writes at
/// ONE and refuses writes at ALL as unavailable, naming the level it was asked for. So the
/// ONE table fills while the ALL table stays empty; lowered to ONE, the ALL table gets the
/// same records (re-delivered: a record is done only when every table has it).
#[tokio::test(flavor = "multi_thread")]
async fn each_table_writes_at_its_declared_consistency() {
    let mut pipeline = listings_pipeline("consistency");
    // Replication 2 on one node makes ALL (and the identity's LOCAL_QUORUM state table)
    // unavailable: the tables' own consistency is what is tested, on the plain write path.
    pipeline.spec.schema.identity = None;
    pipeline
        .spec
        .cassandra
        .keyspace
        .replication
        .replication_factor = Some(2);
    let names: Vec<&str> = pipeline
        .spec
        .cassandra
        .tables
        .iter()
        .map(|table| table.name.as_str())
        .collect();
    assert_eq!(names, ["listings_by_id", "listings_by_city"]);
    pipeline.spec.cassandra.tables[0].consistency = WriteConsistency::One;
    pipeline.spec.cassandra.tables[1].consistency = WriteConsistency::All;
    provision(&pipeline).await;
    // The test reads at ONE: the driver's default, LOCAL_QUORUM, is unavailable here too.
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::One)
        .build();
    let session = SessionBuilder::new()
        .known_nodes(cassandra_contact_points())
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .expect("connecting to Cassandra");
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let by_id = format!("{keyspace}.listings_by_id");
    let by_city = format!("{keyspace}.listings_by_city");

    let producer = producer(&pipeline);
    let topic = pipeline.topic_name();
    let count = 10;
    for index in 0..count {
        let (zpid, payload) = listing_with_price(index, 100_000 + index as i64);
        produce(&producer, &topic, &zpid, Some(payload.as_bytes())).await;
    }

    let manifest = write_manifest(&pipeline);
    let process = Runner::start(&["process"], &manifest, &[]);
    wait_for_rows(&session, &by_id, 1, Duration::from_secs(60)).await;
    let refusal = eventually(
        "Cassandra refusing the writes at ALL as unavailable",
        Duration::from_secs(60),
        || async {
            process
                .log_text()
                .lines()
                .find(|line| line.contains("Cassandra write failed; retrying"))
                .map(str::to_string)
        },
    )
    .await;
    eprintln!("{refusal}");
    assert!(
        refusal.contains("consistency: All") && refusal.contains("required: 2, alive: 1"),
        "the refusal names the level ALL and the replicas: {refusal}"
    );
    assert!(
        read_rows(&session, &by_city).await.is_empty(),
        "no write at ALL can succeed with one live replica of two"
    );
    process.kill();

    pipeline.spec.cassandra.tables[1].consistency = WriteConsistency::One;
    // The same Pipeline (so the same consumer group), in a file of its own (so a log of its
    // own).
    let lowered = manifest.with_extension("lowered.yaml");
    std::fs::rename(write_manifest(&pipeline), &lowered).expect("moving the manifest");
    let process = Runner::start(&["process"], &lowered, &[]);
    wait_for_rows(&session, &by_city, count, Duration::from_secs(60)).await;
    wait_offsets_at_end(&pipeline, Duration::from_secs(60)).await;
    assert_eq!(read_rows(&session, &by_id).await.len(), count);
    assert!(
        !process.log_text().contains("Cassandra write failed"),
        "at ONE nothing is refused:\n{}",
        process.log_text()
    );
    process.terminate(Duration::from_secs(30));
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .expect("dropping the test keyspace");
}

/// `LAST-STORED` (`status.freshness.lastStoredRecordTime`) is the newest record written to the
/// tables: dead-lettered records move the committed offsets but are not stored, so they do
/// not make a pipeline look fresh; one that dead-letters everything has stored nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_newest_stored_time_counts_written_records_only() {
    let mut pipeline = listings_pipeline("stored");
    pipeline.spec.topic.partitions = 1;
    provision(&pipeline).await;
    let producer = producer(&pipeline);
    let topic = pipeline.topic_name();
    for index in 0..3 {
        let (zpid, payload) = listing_with_price(index, 100_000);
        produce(&producer, &topic, &zpid, Some(payload.as_bytes())).await;
    }
    // The broker stamps the records (LogAppendTime): the bad ones come later than this.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before_bad = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default();
    for _ in 0..5 {
        produce(&producer, &topic, "k", Some(b"not json")).await;
    }
    let manifest = write_manifest(&pipeline);
    let process = Runner::start(&["process"], &manifest, &[]);
    wait_offsets_at_end(&pipeline, Duration::from_secs(90)).await;
    let lag = rtdp_provisioning::kafka::read_group_lag(
        &kafka_config(&pipeline),
        &topic,
        &pipeline.consumer_group(),
        Duration::from_secs(10),
    )
    .await
    .expect("reading the group's lag");
    let stored = lag.last_stored_millis().expect("three records were stored");
    assert!(
        stored < before_bad,
        "the newest stored record is the third listing ({stored}), not a dead letter (after {before_bad})"
    );
    assert_eq!(records_finished(&pipeline).dead_lettered, 5);
    assert!(process.terminate(Duration::from_secs(30)).success());

    // Nothing but dead letters: nothing stored.
    let mut all_bad = listings_pipeline("allbad");
    all_bad.spec.topic.partitions = 1;
    provision(&all_bad).await;
    for _ in 0..4 {
        produce(&producer, &all_bad.topic_name(), "k", Some(b"[1]")).await;
    }
    let manifest = write_manifest(&all_bad);
    let process = Runner::start(&["process"], &manifest, &[]);
    wait_offsets_at_end(&all_bad, Duration::from_secs(90)).await;
    let lag = rtdp_provisioning::kafka::read_group_lag(
        &kafka_config(&all_bad),
        &all_bad.topic_name(),
        &all_bad.consumer_group(),
        Duration::from_secs(10),
    )
    .await
    .expect("reading the group's lag");
    assert_eq!(lag.last_stored_millis(), None, "{lag:?}");
    assert_eq!(lag.records(), 0, "every record was processed");
    assert!(process.terminate(Duration::from_secs(30)).success());
}

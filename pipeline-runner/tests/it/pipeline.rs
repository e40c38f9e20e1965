//! The runner end to end on the local stack's real Kafka and Cassandra: HTTP source →
//! `ingest --once` → Kafka → `process` → both tables of the property-listings example, dead
//! letters with reasons, offsets, SIGTERM, SIGKILL and replay.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use rtdp_crds::{CqlType, Pipeline, RecordCounts};
use rtdp_test_support::eventually;
use rtdp_test_support::listings_api::{Listings, ListingsApi};
use scylla::value::CqlValue;
use serde_json::Value as Json;

type Columns = BTreeMap<String, Option<CqlValue>>;

/// What a listing must look like in `listings_by_id`, computed independently of the runner:
/// every schema field converted by its declared type, defaults applied, price_per_sqft derived.
fn expected_row(pipeline: &Pipeline, record: &Json) -> Columns {
    let mut row = Columns::new();
    for field in &pipeline.spec.schema.fields {
        let pointer = field
            .path
            .clone()
            .unwrap_or_else(|| format!("/{}", field.name));
        let value = match record.pointer(&pointer) {
            None | Some(Json::Null) => field.default.as_ref().map(|default| match field.type_ {
                CqlType::Boolean => Json::Bool(default == "true"),
                _ => Json::String(default.clone()),
            }),
            Some(value) => Some(value.clone()),
        };
        let cql = value.map(|value| match field.type_ {
            CqlType::Bigint => CqlValue::BigInt(value.as_i64().expect("a bigint")),
            CqlType::Int => CqlValue::Int(value.as_i64().expect("an int") as i32),
            CqlType::Double => CqlValue::Double(value.as_f64().expect("a double")),
            CqlType::Boolean => CqlValue::Boolean(value.as_bool().expect("a boolean")),
            CqlType::Text => CqlValue::Text(value.as_str().expect("a text").to_string()),
            other => panic!("the example has no {other:?} field"),
        });
        row.insert(field.name.clone(), cql);
    }
    let price = record["price"].as_f64();
    let area = record["livingArea"].as_f64().filter(|area| *area > 0.0);
    row.insert(
        "price_per_sqft".into(),
        price
            .zip(area)
            .map(|(price, area)| CqlValue::Double(price / area)),
    );
    row
}

#[tokio::test(flavor = "multi_thread")]
async fn http_round_trip_fills_both_tables_dead_letters_defects_and_replays_identically() {
    let pipeline = listings_pipeline("round-trip");
    provision(&pipeline).await;
    let listings = Listings::generate(3, 20, 7);
    let api = ListingsApi::start(
        "127.0.0.1:0".parse().expect("an address"),
        listings.clone(),
        Some(2),
    )
    .await
    .expect("starting the listings API");
    let manifest = write_manifest(&pipeline);

    // One pass of the source, as the CronJob runs it; page 2 fails once and is retried.
    let ingest = Runner::start(
        &["ingest", "--once", "--source-url", &api.url],
        &manifest,
        &[],
    );
    let log = ingest.log.clone();
    let status = ingest.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "ingest --once: {status}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    assert_eq!(api.requests(), 4, "3 pages plus one retry of page 2");

    let session = cassandra().await;
    let keyspace = &pipeline.spec.cassandra.keyspace.name;
    let by_id = format!("{keyspace}.listings_by_id");
    let expected: BTreeMap<i64, Columns> = listings
        .good()
        .filter(|record| record["price"].as_i64().is_some_and(|price| price > 0))
        .map(|record| {
            (
                record["zpid"].as_i64().expect("a zpid"),
                expected_row(&pipeline, record),
            )
        })
        .collect();
    assert!(
        expected.len() >= 45,
        "the data set has mostly good listings"
    );

    let process = Runner::start(&["process"], &manifest, &[]);
    eventually(
        "every good listing in listings_by_id",
        Duration::from_secs(90),
        || async {
            let count = read_rows(&session, &by_id).await.len();
            (count >= expected.len()).then_some(())
        },
    )
    .await;
    let log = process.log.clone();
    let status = process.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "process must exit 0 on SIGTERM, got {status}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );

    // Every row and column of listings_by_id.
    let rows = rows_by(&session, &by_id, "zpid").await;
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (zpid, want) in &expected {
        assert_eq!(&rows[zpid], want, "listing {zpid} in listings_by_id");
    }
    // listings_by_city: the declared columns, keyed by city, cheapest first.
    let by_city = read_rows(&session, &format!("{keyspace}.listings_by_city")).await;
    let by_city_table = &pipeline.spec.cassandra.tables[1];
    assert_eq!(by_city_table.name, "listings_by_city");
    // The keys, then the columns the example declares for this table.
    let columns: Vec<&str> = by_city_table
        .partition_key
        .iter()
        .chain(
            by_city_table
                .clustering_columns
                .iter()
                .map(|column| &column.name),
        )
        .chain(by_city_table.columns.iter().flatten())
        .map(String::as_str)
        .collect();
    assert_eq!(by_city.len(), expected.len());
    for row in &by_city {
        let Some(Some(CqlValue::BigInt(zpid))) = row.get("zpid") else {
            panic!("a by-city row without zpid: {row:?}")
        };
        let want = &expected[zpid];
        assert_eq!(row.len(), columns.len(), "by-city columns: {row:?}");
        for column in &columns {
            assert_eq!(
                row[*column], want[*column],
                "listing {zpid} column {column} in listings_by_city"
            );
        }
    }

    // Each defect dead-lettered with its reason and field; the zero-price listing filtered.
    let dead: Vec<_> = listings
        .defects
        .iter()
        .filter_map(|(zpid, defect)| defect.expected().map(|expected| (*zpid, expected)))
        .collect();
    let letters = read_dead_letters(&pipeline, dead.len()).await;
    let mut found: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for letter in &letters {
        let payload: Json = serde_json::from_slice(letter.payload.as_deref().expect("a payload"))
            .expect("the dead letter carries the original record");
        assert_eq!(letter.headers["rtdp.original.topic"], pipeline.topic_name());
        assert!(
            letter.headers["rtdp.original.offset"]
                .parse::<i64>()
                .is_ok()
        );
        assert!(
            letter.headers["rtdp.original.partition"]
                .parse::<i32>()
                .is_ok()
        );
        assert!(!letter.headers["rtdp.error"].is_empty());
        found.insert(
            payload["zpid"].as_i64().expect("a zpid"),
            (
                letter.headers["rtdp.reason"].clone(),
                letter
                    .headers
                    .get("rtdp.field")
                    .cloned()
                    .unwrap_or_default(),
            ),
        );
    }
    let wanted: BTreeMap<i64, (String, String)> = dead
        .iter()
        .map(|(zpid, (reason, field))| (*zpid, (reason.to_string(), field.to_string())))
        .collect();
    assert_eq!(found, wanted, "dead letters by zpid: (reason, field)");
    assert_offsets_at_end(&pipeline);
    // What became of every record, committed with the offsets: exact, not sampled.
    let counted = RecordCounts {
        written: expected.len() as i64,
        dead_lettered: dead.len() as i64,
        filtered: (listings.all().count() - expected.len() - dead.len()) as i64,
    };
    assert!(counted.filtered > 0, "the data set has zero-price listings");
    assert_eq!(records_finished(&pipeline), counted);

    // Replay: the group back to the beginning, process again, tables identical.
    let before_by_id = read_rows(&session, &by_id).await;
    let before_by_city = read_rows(&session, &format!("{keyspace}.listings_by_city")).await;
    reset_group_to_beginning(&pipeline);
    let replay = Runner::start(&["process"], &manifest, &[]);
    wait_offsets_at_end(&pipeline, Duration::from_secs(90)).await;
    let status = replay.terminate(Duration::from_secs(30));
    assert!(status.success(), "replay process exit: {status}");
    assert_eq!(read_rows(&session, &by_id).await, before_by_id);
    assert_eq!(
        read_rows(&session, &format!("{keyspace}.listings_by_city")).await,
        before_by_city
    );
    // The reset committed no progress, so the counts started again and ended where they did.
    assert_eq!(records_finished(&pipeline), counted);
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_bad_records_are_dead_lettered_with_reasons_and_never_block_good_ones() {
    let pipeline = listings_pipeline("dead-letters");
    provision(&pipeline).await;
    let topic = pipeline.topic_name();
    let producer = producer(&pipeline);
    let good = rtdp_test_support::listings_api::listing(1);
    let good_zpid = good["zpid"].as_i64().expect("a zpid");
    let oversized = format!(
        "{{\"zpid\": 5, \"city\": \"Houston\", \"price\": 1, \"streetAddress\": \"{}\"}}",
        "y".repeat(70 * 1024)
    );
    let bad: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("utf8", Some(vec![b'{', 0xff, 0xfe, b'}']), "invalid_utf8"),
        (
            "json",
            Some(b"{\"zpid\": 1, \"city\": ".to_vec()),
            "malformed_json",
        ),
        ("array", Some(b"[1, 2, 3]".to_vec()), "not_an_object"),
        // The example declares an identity: a tombstone deletes the identity its key names,
        // and "k" names none.
        ("tombstone", None, "invalid_key"),
        (
            "required",
            Some(b"{\"zpid\": 2, \"price\": 10}".to_vec()),
            "missing_required_field",
        ),
        (
            "type",
            Some(b"{\"zpid\": \"two\", \"city\": \"Austin\", \"price\": 10}".to_vec()),
            "wrong_type",
        ),
        (
            "range",
            Some(
                b"{\"zpid\": 3, \"city\": \"Austin\", \"price\": 10, \"bedrooms\": 3000000000}"
                    .to_vec(),
            ),
            "out_of_range",
        ),
        ("long", Some(oversized.into_bytes()), "value_too_long"),
    ];
    // Good, then every kind of bad, then good again, all in one partition (same key).
    produce(&producer, &topic, "k", Some(good.to_string().as_bytes())).await;
    for (_, payload, _) in &bad {
        produce(&producer, &topic, "k", payload.as_deref()).await;
    }
    let mut later = rtdp_test_support::listings_api::listing(2);
    later["zpid"] = Json::from(good_zpid + 1);
    produce(&producer, &topic, "k", Some(later.to_string().as_bytes())).await;

    let manifest = write_manifest(&pipeline);
    let process = Runner::start(&["process"], &manifest, &[]);
    let letters = read_dead_letters(&pipeline, bad.len()).await;
    let reasons: Vec<&str> = letters
        .iter()
        .map(|letter| letter.headers["rtdp.reason"].as_str())
        .collect();
    let wanted: Vec<&str> = bad.iter().map(|(_, _, reason)| *reason).collect();
    assert_eq!(
        reasons, wanted,
        "one dead letter per bad record, in order, with its reason"
    );
    for (letter, (what, payload, _)) in letters.iter().zip(&bad) {
        assert_eq!(
            &letter.payload, payload,
            "{what}: the original bytes are kept"
        );
    }
    assert_eq!(letters[4].headers["rtdp.field"], "city");
    assert_eq!(letters[5].headers["rtdp.field"], "zpid");

    let session = cassandra().await;
    let by_id = format!("{}.listings_by_id", pipeline.spec.cassandra.keyspace.name);
    eventually(
        "both good listings written",
        Duration::from_secs(60),
        || async {
            let rows = rows_by(&session, &by_id, "zpid").await;
            (rows.contains_key(&good_zpid) && rows.contains_key(&(good_zpid + 1))).then_some(())
        },
    )
    .await;
    wait_offsets_at_end(&pipeline, Duration::from_secs(30)).await;
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_sigkills_mid_stream_lose_nothing_and_keep_the_latest_value() {
    let pipeline = listings_pipeline("crash");
    provision(&pipeline).await;
    let keys = 150_i64;
    let rounds = 12_i64;
    let updates = PriceRounds::new(&pipeline, keys);
    updates.clone().send(0..6, Duration::ZERO).await;
    let manifest = write_manifest(&pipeline);
    let session = cassandra().await;
    let by_id = format!("{}.listings_by_id", pipeline.spec.cassandra.keyspace.name);

    // Ten SIGKILLs at ten different points of the stream: before the group is joined, while
    // the first writes are in flight, mid-stream, and while the producer is still adding
    // rounds. Each restart resumes from the last committed offset and write-time chain.
    let producing = tokio::spawn(updates.clone().send(6..rounds, Duration::ZERO));
    let kill_after_milliseconds = [
        300_u64, 900, 1_500, 2_200, 2_900, 3_600, 4_400, 5_200, 6_100, 7_000,
    ];
    for (point, delay) in kill_after_milliseconds.iter().enumerate() {
        let runner = Runner::start(&["process"], &manifest, &[]);
        if point == 0 {
            eventually("some listings written", Duration::from_secs(60), || async {
                (!read_rows(&session, &by_id).await.is_empty()).then_some(())
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        runner.kill();
    }
    producing.await.expect("the producer task");

    let second = Runner::start(&["process"], &manifest, &[]);
    let latest = updates.latest(rounds);
    wait_for_prices(&session, &by_id, &latest, Duration::from_secs(120)).await;
    wait_offsets_at_end(&pipeline, Duration::from_secs(60)).await;
    let log = second.log_text();
    let status = second.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit after the crashes: {status}");
    assert!(
        !log.contains("dead-lettering"),
        "no valid record is dead-lettered by a crash; log:\n{log}"
    );
    // Re-delivered records were counted once: the counts travel with the committed offsets.
    let produced: i64 = committed_and_end(&pipeline)
        .iter()
        .map(|(_, _, end)| end)
        .sum();
    assert_eq!(
        records_finished(&pipeline),
        RecordCounts {
            written: produced,
            ..RecordCounts::default()
        }
    );
}

//! A `decimal` keeps every digit end to end, also when the API writes it as a JSON number
//! with more digits than a 64-bit float keeps (about 17): HTTP source (`ingest --once`) →
//! Kafka (the record as the API wrote it) → `process` (the number read from the record's
//! text) → Cassandra. Real servers: the local stack's Kafka and Cassandra.

use std::time::Duration;

use crate::common::*;
use rtdp_crds::{CqlType, FieldSpec};
use rtdp_test_support::eventually;
use scylla::value::CqlValue;

/// 30 significant digits, 20 of them after the point.
const EXACT: &str = "1234567890.12345678901234567890";

/// Serves `body` (JSON text, sent as is) to every request on a free local port: its URL.
async fn serve(body: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the test API");
    let url = format!(
        "http://{}/search",
        listener.local_addr().expect("the test API's address")
    );
    let router = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("serving the test API");
    });
    (url, task)
}

/// A decimal's unscaled digits and scale.
fn digits_and_scale(value: Option<&Option<CqlValue>>) -> (String, i32) {
    let Some(Some(CqlValue::Decimal(decimal))) = value else {
        panic!("expected a decimal, got {value:?}");
    };
    let (bytes, scale) = decimal.as_signed_be_bytes_slice_and_exponent();
    let mut unscaled = 0_i128;
    for byte in bytes {
        unscaled = (unscaled << 8) | i128::from(*byte);
    }
    // Sign-extend from the byte length.
    let bits = 8 * bytes.len() as u32;
    if bits < 128 && bits > 0 && bytes[0] & 0x80 != 0 {
        unscaled -= 1_i128 << bits;
    }
    (unscaled.to_string(), scale)
}

#[tokio::test(flavor = "multi_thread")]
async fn decimal_numbers_keep_every_digit_from_the_api_to_cassandra() {
    let mut pipeline = listings_pipeline("decimals");
    pipeline.spec.schema.fields.push(FieldSpec {
        name: "exact_price".into(),
        path: Some("/exactPrice".into()),
        type_: CqlType::Decimal,
        required: true,
        default: None,
        max_length: None,
    });
    provision(&pipeline).await;
    // Two listings: the exact price as a JSON number and as a JSON string.
    let record = |index: usize, exact: &str| {
        let text = rtdp_test_support::listings_api::listing(index).to_string();
        let mut text = text.strip_suffix('}').expect("an object").to_string();
        text.push_str(&format!(", \"exactPrice\": {exact}}}"));
        let zpid = rtdp_test_support::listings_api::listing(index)["zpid"]
            .as_i64()
            .expect("a zpid");
        (zpid, text)
    };
    let (as_number, number_text) = record(0, EXACT);
    let (as_string, string_text) = record(1, &format!("\"{EXACT}\""));
    let body = format!("{{\"results\": [{number_text}, {string_text}], \"totalPages\": 1}}");
    let (url, server) = serve(body).await;
    let manifest = write_manifest(&pipeline);

    let ingest = Runner::start(&["ingest", "--once", "--source-url", &url], &manifest, &[]);
    let log = ingest.log.clone();
    let status = ingest.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "ingest --once: {status}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    server.abort();

    let session = cassandra().await;
    let by_id = format!("{}.listings_by_id", pipeline.spec.cassandra.keyspace.name);
    let process = Runner::start(&["process"], &manifest, &[]);
    let rows = eventually(
        "both listings in listings_by_id",
        Duration::from_secs(60),
        || async {
            let rows = rows_by(&session, &by_id, "zpid").await;
            (rows.len() >= 2).then_some(rows)
        },
    )
    .await;
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}");

    let expected = ("123456789012345678901234567890".to_string(), 20);
    for (zpid, how) in [(as_number, "a JSON number"), (as_string, "a JSON string")] {
        let row = rows
            .get(&zpid)
            .unwrap_or_else(|| panic!("no row {zpid}: {rows:?}"));
        assert_eq!(
            digits_and_scale(row.get("exact_price")),
            expected,
            "{how} keeps all 30 digits"
        );
    }
    session
        .query_unpaged(
            format!(
                "DROP KEYSPACE IF EXISTS {}",
                pipeline.spec.cassandra.keyspace.name
            ),
            (),
        )
        .await
        .expect("dropping the test keyspace");
}

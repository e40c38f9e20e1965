//! The ingest role's sources against the local stack's real Kafka: HTTP sources (POST with a
//! body and inline headers, Cursor and NextUrl pagination, `maxPages`, `timeoutSeconds`,
//! `pollInterval`) served by a recording HTTP server of the test, the generator's rate and
//! total, and the producer's batches (`runner.batch.maxRecords`). Every test reads back what
//! reached the topic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use pipeline_runner::connect::EndpointOverrides;
use pipeline_runner::error::RunnerError;
use pipeline_runner::ingest::{IngestOptions, IngestReport};
use pipeline_runner::telemetry::{Health, Metrics};
use rdkafka::Message;
use rtdp_crds::jiff::Timestamp;
use rtdp_crds::template::Interval;
use rtdp_crds::{HttpSource, Pipeline, SourceSpec};
use rtdp_test_support::eventually;
use serde_json::{Value as Json, json};
use tokio::sync::watch;
use tokio::time::Instant;

/// One request as the test's server received it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    /// The path and query, as sent.
    target: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Seen {
    /// The decoded value of query parameter `name`.
    fn query(&self, name: &str) -> Option<String> {
        reqwest::Url::parse(&format!("http://server{}", self.target))
            .expect("a request target")
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// What the server answers one request with.
enum Reply {
    /// 200 with this JSON document.
    Json(Json),
    /// Never answers (the connection stays open).
    Stall,
}

type Responder = dyn Fn(&Seen, &str) -> Reply + Send + Sync;

#[derive(Clone)]
struct ServerState {
    seen: Arc<Mutex<Vec<Seen>>>,
    base: String,
    respond: Arc<Responder>,
}

/// An HTTP API of the test on 127.0.0.1: records every request, answers as told.
struct Api {
    /// `http://127.0.0.1:PORT`.
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Api {
    /// Serves `respond(request, base URL)` on a free port.
    async fn start(respond: impl Fn(&Seen, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the test API");
        let base = format!(
            "http://{}",
            listener.local_addr().expect("the test API's address")
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = ServerState {
            seen: Arc::clone(&seen),
            base: base.clone(),
            respond: Arc::new(respond),
        };
        let router = Router::new().fallback(answer).with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("serving the test API");
        });
        Self { base, seen, task }
    }

    /// Every request so far.
    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(state): State<ServerState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        target: uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        headers,
        body,
        at: Instant::now(),
    };
    let reply = (state.respond)(&seen, &state.base);
    state
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(seen);
    match reply {
        Reply::Json(document) => (
            [(header::CONTENT_TYPE, "application/json")],
            document.to_string(),
        )
            .into_response(),
        // The request stays unanswered until the client gives up on it.
        Reply::Stall => std::future::pending().await,
    }
}

/// Listings `first..first + count` of the listings API's generator.
fn listings(first: usize, count: usize) -> Vec<Json> {
    (first..first + count)
        .map(rtdp_test_support::listings_api::listing)
        .collect()
}

/// The zpids (the Kafka keys) of `records`, sorted.
fn zpids(records: &[Json]) -> Vec<String> {
    let mut keys: Vec<String> = records
        .iter()
        .map(|record| record["zpid"].to_string())
        .collect();
    keys.sort();
    keys
}

/// The property-listings example on the local stack with `http` as its source (checked by
/// the shared validation, as the runner checks a manifest), its topics created.
async fn http_pipeline(prefix: &str, http: Json) -> Pipeline {
    let mut pipeline = listings_pipeline(prefix);
    let http: HttpSource = serde_json::from_value(http).expect("an HTTP source");
    pipeline.spec.source = Some(SourceSpec {
        http: Some(http),
        generator: None,
    });
    create_topics(&pipeline).await;
    pipeline
}

/// Creates the pipeline's topic and dead-letter topic.
async fn create_topics(pipeline: &Pipeline) {
    let errors = rtdp_crds::validate(pipeline);
    assert!(
        errors.is_empty(),
        "the test's Pipeline is invalid: {errors:?}"
    );
    let admin = rtdp_provisioning::kafka::admin_client(
        &pipeline.spec.kafka.bootstrap_servers.join(","),
        &BTreeMap::new(),
    )
    .expect("a Kafka admin client");
    rtdp_provisioning::kafka::ensure_topics(&admin, pipeline)
        .await
        .expect("creating the topics");
}

/// Runs the ingest role in this process, as `pipeline-runner ingest [--once]` does.
async fn ingest(
    pipeline: &Pipeline,
    once: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<IngestReport, RunnerError> {
    pipeline_runner::ingest::run(
        pipeline,
        IngestOptions {
            overrides: EndpointOverrides::default(),
            once,
            intervals: Vec::new(),
            shutdown,
            metrics: Arc::new(Metrics::new("tests/sources")),
            health: Arc::new(Health::default()),
        },
    )
    .await
}

/// How long one pass of these small sources may take before the test fails (a pass that
/// never ends, say past maxPages, must fail the test, not hang it).
const PASS_BOUND: Duration = Duration::from_secs(120);

/// One pass (`--once`), which must succeed within [`PASS_BOUND`].
async fn ingest_once(pipeline: &Pipeline) -> IngestReport {
    let (_keep, shutdown) = watch::channel(false);
    tokio::time::timeout(PASS_BOUND, ingest(pipeline, true, shutdown))
        .await
        .unwrap_or_else(|_| panic!("ingest --once did not finish within {PASS_BOUND:?}"))
        .expect("ingest --once succeeds")
}

/// A record read back from the topic.
struct Produced {
    key: Option<String>,
    payload: Json,
    timestamp: i64,
}

/// Every record of the pipeline's topic (all its partitions, from the beginning to the end
/// offsets as they are now).
fn topic_records(pipeline: &Pipeline) -> Vec<Produced> {
    read_topic_to_end(pipeline, &pipeline.topic_name())
        .iter()
        .map(|message| Produced {
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            payload: serde_json::from_slice(message.payload().expect("a payload"))
                .expect("a JSON payload"),
            timestamp: message.timestamp().to_millis().expect("a timestamp"),
        })
        .collect()
}

/// The keys of every record of the topic, sorted.
fn topic_keys(pipeline: &Pipeline) -> Vec<String> {
    let mut keys: Vec<String> = topic_records(pipeline)
        .into_iter()
        .map(|record| record.key.expect("every record has a key"))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_source_sends_its_json_body_and_inline_headers() {
    let served = listings(0, 4);
    let records = served.clone();
    let api = Api::start(move |_, _| Reply::Json(json!({"data": {"listings": records}}))).await;
    let body = r#"{"location": "houston, tx", "filters": {"status": ["forSale"], "beds": 2}}"#;
    let pipeline = http_pipeline(
        "post-source",
        json!({
            "url": format!("{}/v2/search", api.base),
            "method": "POST",
            "body": body,
            "headers": [
                {"name": "X-Client-Name", "value": "rtdp sources test"},
                {"name": "Accept-Language", "value": "en-US"},
            ],
            "recordsPointer": "/data/listings",
            "keyField": "/zpid",
            "schedule": "@daily",
        }),
    )
    .await;

    let report = ingest_once(&pipeline).await;
    assert_eq!((report.pages, report.records, report.failures), (1, 4, 0));

    let seen = api.seen();
    assert_eq!(seen.len(), 1, "one page, one request: {seen:?}");
    let request = &seen[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.target, "/v2/search");
    assert_eq!(
        request
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let received: Json = serde_json::from_slice(&request.body).expect("the body is JSON");
    let declared: Json = serde_json::from_str(body).expect("the declared body is JSON");
    assert_eq!(received, declared);
    assert_eq!(
        request.body.as_ref(),
        body.as_bytes(),
        "the body is sent as declared"
    );
    for (name, value) in [
        ("x-client-name", "rtdp sources test"),
        ("accept-language", "en-US"),
    ] {
        assert_eq!(
            request.headers.get(name).map(|v| v.as_bytes()),
            Some(value.as_bytes()),
            "header {name}: {:?}",
            request.headers
        );
    }
    assert_eq!(topic_keys(&pipeline), zpids(&served));
}

/// Serves pages of a cursor-paged feed: no cursor → page 0; cursor `c-N` → page N; the
/// cursor of the page after N is in `/paging/next`, and the last page (`last`) ends the
/// feed as `end` says: `null` or no `next` at all.
fn cursor_feed(seen: &Seen, last: usize, end: Option<Json>) -> Reply {
    let page = match seen.query("after") {
        None => 0,
        Some(cursor) => cursor
            .strip_prefix("c-")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|number| number.parse().ok())
            .unwrap_or(usize::MAX),
    };
    if page > last {
        return Reply::Json(json!({"message": format!("unknown cursor in {}", seen.target)}));
    }
    let mut paging = json!({"count": 2});
    if page < last {
        // Cursors need URL encoding: a space and an ampersand.
        paging["next"] = json!(format!("c-{} &more", page + 1));
    } else if let Some(end) = &end {
        paging["next"] = end.clone();
    }
    Reply::Json(json!({"items": listings(page * 2, 2), "paging": paging}))
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_pagination_sends_each_cursor_and_stops_when_it_is_null_or_absent() {
    let pipeline = http_pipeline(
        "cursor",
        json!({
            "url": "http://127.0.0.1:1/feed",
            "queryParams": {"region": "tx"},
            "recordsPointer": "/items",
            "keyField": "/zpid",
            "pagination": {
                "type": "Cursor",
                "cursorParam": "after",
                "nextCursorPointer": "/paging/next",
                "maxPages": 50,
            },
            "schedule": "@daily",
        }),
    )
    .await;
    let mut expected_keys = Vec::new();
    for end in [Some(Json::Null), None] {
        let api = Api::start({
            let end = end.clone();
            move |seen, _| cursor_feed(seen, 2, end.clone())
        })
        .await;
        let mut pass = pipeline.clone();
        if let Some(http) = pass
            .spec
            .source
            .as_mut()
            .and_then(|source| source.http.as_mut())
        {
            http.url = format!("{}/feed", api.base);
        }
        let report = ingest_once(&pass).await;
        assert_eq!(
            (report.pages, report.failures),
            (3, 0),
            "end {end:?}: {report:?}"
        );
        let seen = api.seen();
        let cursors: Vec<Option<String>> = seen.iter().map(|seen| seen.query("after")).collect();
        assert_eq!(
            cursors,
            vec![None, Some("c-1 &more".into()), Some("c-2 &more".into())],
            "end {end:?}: every cursor sent once, decoded as the API gave it, then nothing"
        );
        for request in &seen {
            assert_eq!(request.path(), "/feed");
            assert_eq!(request.query("region").as_deref(), Some("tx"));
        }
        expected_keys.extend(zpids(&listings(0, 6)));
    }
    expected_keys.sort();
    assert_eq!(topic_keys(&pipeline), expected_keys);
}

#[tokio::test(flavor = "multi_thread")]
async fn next_url_pagination_follows_each_url_resolved_against_the_source_url() {
    let api = Api::start(|seen, base| {
        let (records, next) = match seen.target.as_str() {
            "/v1/listings?region=tx" => (listings(0, 3), json!("/v1/listings/more?token=b")),
            // An absolute URL is followed as is.
            "/v1/listings/more?token=b" => (
                listings(3, 3),
                json!(format!("{base}/v1/listings/more?token=c")),
            ),
            "/v1/listings/more?token=c" => (listings(6, 1), Json::Null),
            other => {
                return Reply::Json(json!({"message": format!("unexpected request {other}")}));
            }
        };
        Reply::Json(json!({"results": records, "links": {"next": next}}))
    })
    .await;
    let pipeline = http_pipeline(
        "next-url",
        json!({
            "url": format!("{}/v1/listings", api.base),
            "queryParams": {"region": "tx"},
            "recordsPointer": "/results",
            "keyField": "/zpid",
            "pagination": {"type": "NextUrl", "nextUrlPointer": "/links/next"},
            "schedule": "@daily",
        }),
    )
    .await;

    let report = ingest_once(&pipeline).await;
    assert_eq!(
        (report.pages, report.records, report.failures),
        (3, 7, 0),
        "{report:?}"
    );
    let targets: Vec<String> = api.seen().into_iter().map(|seen| seen.target).collect();
    assert_eq!(
        targets,
        [
            "/v1/listings?region=tx",
            "/v1/listings/more?token=b",
            "/v1/listings/more?token=c",
        ],
        "the first page from url and queryParams, then each next URL exactly, then none"
    );
    assert_eq!(topic_keys(&pipeline), zpids(&listings(0, 7)));
}

#[tokio::test(flavor = "multi_thread")]
async fn max_pages_ends_a_pass_over_an_api_that_never_stops() {
    // Every page has records and no total: only maxPages ends the pass.
    let api = Api::start(|seen, _| {
        let page: usize = seen
            .query("page")
            .and_then(|page| page.parse().ok())
            .unwrap_or_default();
        Reply::Json(json!({"results": listings(page * 2, 2), "totalPages": null}))
    })
    .await;
    let pipeline = http_pipeline(
        "max-pages",
        json!({
            "url": format!("{}/search", api.base),
            "recordsPointer": "/results",
            "keyField": "/zpid",
            "pagination": {"type": "PageNumber", "pageParam": "page", "startPage": 5, "maxPages": 4},
            "schedule": "@daily",
        }),
    )
    .await;

    let report = ingest_once(&pipeline).await;
    assert_eq!(
        (report.pages, report.records, report.failures),
        (4, 8, 0),
        "{report:?}"
    );
    let pages: Vec<Option<String>> = api.seen().iter().map(|seen| seen.query("page")).collect();
    assert_eq!(
        pages,
        ["5", "6", "7", "8"].map(|page| Some(page.to_string())),
        "exactly maxPages requests, from startPage"
    );
    assert_eq!(topic_keys(&pipeline), zpids(&listings(10, 8)));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_total_page_numbers_stop_at_the_first_empty_page() {
    let api = Api::start(|seen, _| {
        let page: usize = seen
            .query("page")
            .and_then(|page| page.parse().ok())
            .unwrap_or_default();
        let records = if page <= 2 {
            listings(page * 3, 3)
        } else {
            Vec::new()
        };
        Reply::Json(json!({"results": records}))
    })
    .await;
    let pipeline = http_pipeline(
        "empty-page",
        json!({
            "url": format!("{}/search", api.base),
            "recordsPointer": "/results",
            "keyField": "/zpid",
            "pagination": {"type": "PageNumber", "pageParam": "page", "startPage": 0},
            "schedule": "@daily",
        }),
    )
    .await;

    let report = ingest_once(&pipeline).await;
    assert_eq!(
        (report.pages, report.records, report.failures),
        (4, 9, 0),
        "{report:?}"
    );
    let pages: Vec<Option<String>> = api.seen().iter().map(|seen| seen.query("page")).collect();
    assert_eq!(
        pages,
        ["0", "1", "2", "3"].map(|page| Some(page.to_string())),
        "pages from startPage 0 up to the first empty one"
    );
    assert_eq!(topic_keys(&pipeline), zpids(&listings(0, 9)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalling_api_fails_the_pass_after_its_timeout_naming_the_url() {
    let api = Api::start(|_, _| Reply::Stall).await;
    let url = format!("{}/search", api.base);
    let pipeline = http_pipeline(
        "stall",
        json!({
            "url": url,
            "recordsPointer": "/results",
            "keyField": "/zpid",
            "schedule": "@daily",
            "timeoutSeconds": 1,
            "maxRetries": 1,
        }),
    )
    .await;

    let started = Instant::now();
    let (_keep, shutdown) = watch::channel(false);
    let error = tokio::time::timeout(PASS_BOUND, ingest(&pipeline, true, shutdown))
        .await
        .unwrap_or_else(|_| panic!("ingest --once did not finish within {PASS_BOUND:?}"))
        .expect_err("a pass whose only page times out fails");
    let elapsed = started.elapsed();
    let text = error.to_string();
    eprintln!("{text}");
    assert!(matches!(error, RunnerError::Source(_)), "{error:?}");
    assert!(text.contains(&url), "the error names the URL: {text}");
    assert!(
        text.contains("timed out (timeoutSeconds: 1)"),
        "the error says the request timed out, and after how long: {text}"
    );
    assert!(text.contains("(after 1 retries)"), "{text}");
    assert_eq!(
        api.seen().len(),
        2,
        "the request and its one retry reached the server"
    );
    assert!(
        elapsed >= Duration::from_secs(2),
        "two requests of a 1 s timeout took only {elapsed:?}"
    );
    assert!(
        topic_records(&pipeline).is_empty(),
        "nothing is produced from a page that never came"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continuous_source_polls_again_after_its_interval() {
    let served = listings(0, 3);
    let records = served.clone();
    let api = Api::start(move |_, _| Reply::Json(json!({"results": records}))).await;
    let pipeline = http_pipeline(
        "poll",
        json!({
            "url": format!("{}/search", api.base),
            "recordsPointer": "/results",
            "keyField": "/zpid",
            "pollInterval": "2s",
        }),
    )
    .await;

    // The ingest role's future is not Send: it runs here, beside the watcher that stops it.
    let (stop, shutdown) = watch::channel(false);
    let watcher = async {
        eventually("three passes", Duration::from_secs(60), || async {
            (api.seen().len() >= 3).then_some(())
        })
        .await;
        stop.send(true).expect("the ingest role listens");
    };
    let (report, ()) = tokio::time::timeout(Duration::from_secs(90), async {
        tokio::join!(ingest(&pipeline, false, shutdown), watcher)
    })
    .await
    .expect("three passes within 60 s, then ingest stops on shutdown");
    let report = report.expect("ingest succeeds");
    let seen = api.seen();
    let passes = seen.len() as u64;
    assert!(passes >= 3, "{seen:?}");
    assert_eq!(
        (report.pages, report.records, report.failures),
        (passes, 3 * passes, 0),
        "every pass fetched the page and produced its records, none after the shutdown"
    );
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_secs(2),
            "the next pass started {gap:?} after the previous one, before the 2 s pollInterval"
        );
    }
    let mut expected: Vec<String> = (0..passes).flat_map(|_| zpids(&served)).collect();
    expected.sort();
    assert_eq!(topic_keys(&pipeline), expected);
}

/// The generated-listings example on the local stack, with `partitions` partitions and the
/// generator at `rate` records a second, `total` records over `keys` keys; its topics
/// created, stamped with the producer's timestamps (taken when each record is handed to the
/// producer) rather than the broker's (the first batch waits for the producer's connection).
async fn generator_pipeline(
    prefix: &str,
    partitions: i32,
    rate: i32,
    total: i64,
    keys: i64,
) -> Pipeline {
    let text = include_str!("../../../examples/generated-listings.yaml");
    let mut pipeline =
        rtdp_crds::parse_pipeline(text, "generated-listings.yaml").expect("the example parses");
    let listings_example = listings_pipeline(prefix);
    pipeline.metadata = listings_example.metadata.clone();
    pipeline.spec.topic.name = listings_example.spec.topic.name.clone();
    pipeline.spec.topic.partitions = partitions;
    pipeline.spec.kafka.bootstrap_servers = listings_example.spec.kafka.bootstrap_servers.clone();
    let generator = pipeline
        .spec
        .source
        .as_mut()
        .and_then(|source| source.generator.as_mut())
        .expect("the example's generator");
    generator.records_per_second = rate;
    generator.total_records = Some(total);
    generator.distinct_keys = keys;
    pipeline
        .spec
        .topic
        .config
        .insert("message.timestamp.type".into(), "CreateTime".into());
    create_topics(&pipeline).await;
    pipeline
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generator_produces_exactly_total_records_at_its_rate() {
    let pipeline = generator_pipeline("generator", 3, 100, 200, 50).await;

    let started = Instant::now();
    let report = ingest_once(&pipeline).await;
    let elapsed = started.elapsed();
    assert_eq!((report.records, report.failures), (200, 0), "{report:?}");
    // Record n is due n / rate seconds after the start: the 200th at 1.99 s. Only a lower
    // bound: a loaded machine may take longer.
    assert!(
        elapsed >= Duration::from_millis(1990),
        "200 records at 100/s took only {elapsed:?}"
    );

    let records = topic_records(&pipeline);
    assert_eq!(records.len(), 200, "exactly totalRecords reach the topic");
    let mut sequences: Vec<u64> = records
        .iter()
        .map(|record| record.payload["sequence"].as_u64().expect("a sequence"))
        .collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (0..200).collect::<Vec<u64>>(),
        "each record once"
    );
    let keys: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|record| record.key.as_deref().expect("a key"))
        .collect();
    assert_eq!(keys.len(), 50, "distinctKeys keys, cycled");
    // Paced while producing, not in one burst: the records were handed to the producer over
    // at least 1.5 s (of the 1.99 s, less what a slow first tick may bunch up).
    let first = records.iter().map(|record| record.timestamp).min();
    let last = records.iter().map(|record| record.timestamp).max();
    let spread = last.zip(first).map(|(last, first)| last - first);
    eprintln!("200 records in {elapsed:?}, their timestamps over {spread:?} ms");
    assert!(
        spread.is_some_and(|spread| spread >= 1500),
        "the records' timestamps spread over {spread:?} ms"
    );
}

/// The records of each batch the broker stored for partition 0 of `topic`, in order, read
/// from its segment files (record batch format v2: the record count is at byte 57 of a
/// batch, whose length is at byte 8).
fn stored_batches(topic: &str) -> Vec<i32> {
    let directory = rtdp_test_support::kafka_log_dir().join(format!("{topic}-0"));
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("reading {}: {error}", directory.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    segments.sort();
    let mut batches = Vec::new();
    for segment in segments {
        let bytes = std::fs::read(&segment)
            .unwrap_or_else(|error| panic!("reading {}: {error}", segment.display()));
        let int = |at: usize| {
            i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut at = 0;
        while at + 61 <= bytes.len() {
            assert_eq!(
                bytes[at + 16],
                2,
                "record batch format v2 in {}",
                segment.display()
            );
            batches.push(int(at + 57));
            at += 12 + usize::try_from(int(at + 8)).expect("a batch length");
        }
        assert_eq!(
            at,
            bytes.len(),
            "{} ends with a whole batch",
            segment.display()
        );
    }
    batches
}

#[tokio::test(flavor = "multi_thread")]
async fn the_producer_puts_at_most_max_records_in_a_batch() {
    let mut largest = Vec::new();
    for max_records in [7, 500] {
        // 700 records at once (the rate is far above what one 10 ms tick can send) and 100 ms
        // for a batch to fill: only maxRecords ends a batch early.
        let mut pipeline = generator_pipeline("producer-batch", 1, 1_000_000, 700, 700).await;
        pipeline.spec.runner.batch.max_records = max_records;
        pipeline.spec.runner.batch.max_delay_milliseconds = 100;
        let report = ingest_once(&pipeline).await;
        assert_eq!((report.records, report.failures), (700, 0), "{report:?}");
        let batches = stored_batches(&pipeline.topic_name());
        eprintln!("maxRecords {max_records}: batches of {batches:?}");
        assert_eq!(batches.iter().sum::<i32>(), 700, "every record stored once");
        largest.push(batches.iter().copied().max().unwrap_or_default());
    }
    assert_eq!(
        largest[0], 7,
        "with maxRecords 7, no batch holds more than 7, and full batches hold 7"
    );
    assert!(
        (8..=500).contains(&largest[1]),
        "with maxRecords 500, batches hold more than 7 (so 7 was the bound at work): {}",
        largest[1]
    );
}

/// One pass with the request templates filled in for `interval` (`ingest --once --interval`).
async fn ingest_interval(pipeline: &Pipeline, interval: Interval) -> IngestReport {
    let (_keep, shutdown) = watch::channel(false);
    pipeline_runner::ingest::run(
        pipeline,
        IngestOptions {
            overrides: EndpointOverrides::default(),
            once: true,
            intervals: vec![interval],
            shutdown,
            metrics: Arc::new(Metrics::new("tests/sources")),
            health: Arc::new(Health::default()),
        },
    )
    .await
    .expect("ingest --once --interval succeeds")
}

/// Request templates: the run's logical interval fills the URL path, the query values, an
/// inline header and the body. A scheduled run asks for its latest schedule interval; an
/// interval given (a backfill) is asked for as given, and the same interval twice sends the
/// same request.
#[tokio::test(flavor = "multi_thread")]
async fn templates_fill_in_the_runs_interval() {
    let served = listings(0, 2);
    let records = served.clone();
    let api = Api::start(move |_, _| Reply::Json(json!({"data": {"listings": records}}))).await;
    let pipeline = http_pipeline(
        "templates",
        json!({
            "url": format!("{}/v1/{{{{ interval.startDate }}}}/search", api.base),
            "method": "POST",
            "queryParams": {
                "since": "{{ interval.start }}",
                "until": "{{ interval.end }}",
                "location": "houston, tx",
            },
            "headers": [{"name": "X-Window", "value": "{{ interval.startEpoch }}-{{ interval.endEpoch }}"}],
            "body": "{\"from\": {{ interval.startEpoch }}, \"day\": \"{{ interval.endDate }}\"}",
            "recordsPointer": "/data/listings",
            "keyField": "/zpid",
            "schedule": "0 0 * * *",
        }),
    )
    .await;
    let expect = |request: &Seen, interval: &Interval| {
        let value = |name: &str| interval.value(name).expect("a known variable");
        assert_eq!(
            request.path(),
            format!("/v1/{}/search", value("interval.startDate"))
        );
        assert_eq!(request.query("since"), Some(value("interval.start")));
        assert_eq!(request.query("until"), Some(value("interval.end")));
        assert_eq!(request.query("location").as_deref(), Some("houston, tx"));
        assert_eq!(
            request
                .headers
                .get("x-window")
                .map(|v| v.as_bytes().to_vec()),
            Some(
                format!(
                    "{}-{}",
                    value("interval.startEpoch"),
                    value("interval.endEpoch")
                )
                .into_bytes()
            )
        );
        let body: Json = serde_json::from_slice(&request.body).expect("the body is JSON");
        assert_eq!(
            body,
            json!({"from": interval.start.as_second(), "day": value("interval.endDate")})
        );
    };

    // Scheduled: the latest daily interval (read before and after, in case midnight passes).
    let before = Interval::scheduled("0 0 * * *", Timestamp::now()).expect("an interval");
    let report = ingest_once(&pipeline).await;
    let after = Interval::scheduled("0 0 * * *", Timestamp::now()).expect("an interval");
    assert_eq!((report.pages, report.records), (1, 2));
    let seen = api.seen();
    let scheduled = if seen[0].query("since") == before.value("interval.start") {
        before
    } else {
        after
    };
    expect(&seen[0], &scheduled);

    // A backfill of one given week, twice: the same request both times.
    let week = Interval::parse("2026-11-16T00:00:00Z..2026-11-23T00:00:00Z").expect("a week");
    ingest_interval(&pipeline, week).await;
    ingest_interval(&pipeline, week).await;
    let seen = api.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    expect(&seen[1], &week);
    assert_eq!(seen[1].path(), "/v1/2026-11-16/search");
    assert_eq!(
        (
            &seen[1].target,
            &seen[1].body,
            seen[1].headers.get("x-window")
        ),
        (
            &seen[2].target,
            &seen[2].body,
            seen[2].headers.get("x-window")
        ),
        "re-running an interval sends the same request"
    );
}

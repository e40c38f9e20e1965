//! `runner.concurrency` bounds the Cassandra writes in flight, observed on the wire: the
//! process role talks to the local stack's Cassandra through a CQL proxy of the test, which
//! holds each write's response a while (so writes pile up to whatever bound there is) and
//! counts the INSERTs (EXECUTE requests of a statement prepared from an INSERT) awaiting
//! their response. And `runner.batch.maxRecords` bounds the records the process role takes
//! from the consumer at once, read from its `rtdp_consumer_batch_records` histogram.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use rtdp_test_support::{cassandra_contact_points, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A CQL frame's header (protocol v3 to v4: version, flags, stream, opcode, body length).
const HEADER: usize = 9;
/// The opcode of PREPARE.
const PREPARE: u8 = 0x09;
/// The opcode of EXECUTE (a prepared statement).
const EXECUTE: u8 = 0x0A;
/// The opcode of RESULT.
const RESULT: u8 = 0x08;
/// The kind of a RESULT that answers a PREPARE.
const PREPARED: i32 = 4;

/// What the proxy saw.
#[derive(Debug, Default)]
struct Seen {
    /// INSERTs sent on and not yet answered to the client.
    in_flight: AtomicI64,
    /// The most of them at once.
    most_in_flight: AtomicI64,
    /// INSERTs in all.
    inserts: AtomicI64,
    /// The ids of the statements prepared from an INSERT (the driver's own metadata queries
    /// are prepared statements too, and are not counted).
    insert_ids: Mutex<HashSet<Vec<u8>>>,
}

/// A CQL proxy in front of the local Cassandra. The driver connects to every node through
/// it: it takes the port of its contact point for the node it finds in `system.local`.
struct CqlProxy {
    /// `127.0.0.1:PORT`, a contact point for the runner.
    address: String,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl CqlProxy {
    /// Proxies to `upstream`, answering each EXECUTE `delay` after Cassandra did.
    async fn start(upstream: String, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the CQL proxy");
        let address = listener
            .local_addr()
            .expect("the proxy's address")
            .to_string();
        let seen = Arc::new(Seen::default());
        let counters = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, Arc::clone(&counters), delay));
            }
        });
        Self {
            address,
            seen,
            task,
        }
    }

    /// (the most INSERTs in flight at once, INSERTs in all)
    fn seen(&self) -> (i64, i64) {
        (
            self.seen.most_in_flight.load(Ordering::SeqCst),
            self.seen.inserts.load(Ordering::SeqCst),
        )
    }
}

impl Drop for CqlProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One whole frame, or `None` when the connection ends.
async fn read_frame(reader: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut frame = vec![0_u8; HEADER];
    reader.read_exact(&mut frame).await.ok()?;
    let length = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) as usize;
    frame.resize(HEADER + length, 0);
    reader.read_exact(&mut frame[HEADER..]).await.ok()?;
    Some(frame)
}

fn stream_of(frame: &[u8]) -> i16 {
    i16::from_be_bytes([frame[2], frame[3]])
}

/// `[short bytes]` at `at` of a frame (a prepared statement's id), if it is whole.
fn short_bytes(frame: &[u8], at: usize) -> Option<Vec<u8>> {
    let length = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]) as usize;
    frame.get(at + 2..at + 2 + length).map(<[u8]>::to_vec)
}

/// Whether a PREPARE request prepares an INSERT (its body is the query as `[long string]`).
fn prepares_an_insert(frame: &[u8]) -> bool {
    frame
        .get(HEADER + 4..)
        .is_some_and(|query| query.len() >= 6 && query[..6].eq_ignore_ascii_case(b"INSERT"))
}

/// The id in a RESULT answering a PREPARE.
fn prepared_id(frame: &[u8]) -> Option<Vec<u8>> {
    let kind = i32::from_be_bytes(frame.get(HEADER..HEADER + 4)?.try_into().ok()?);
    (frame[4] == RESULT && kind == PREPARED)
        .then(|| short_bytes(frame, HEADER + 4))
        .flatten()
}

/// Relays one connection both ways, counting INSERTs until their response reaches the
/// client, and holding those responses `delay`.
async fn relay(client: TcpStream, server: TcpStream, seen: Arc<Seen>, delay: Duration) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Streams of this connection awaiting the answer to an INSERT, or to its PREPARE.
    let pending: Arc<Mutex<HashSet<i16>>> = Arc::default();
    let preparing: Arc<Mutex<HashSet<i16>>> = Arc::default();
    let (to_client, mut responses) = mpsc::unbounded_channel::<(Vec<u8>, bool)>();

    let writer_seen = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some((frame, execute)) = responses.recv().await {
            if client_write.write_all(&frame).await.is_err() {
                break;
            }
            if execute {
                writer_seen.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    });
    let requests_pending = Arc::clone(&pending);
    let requests_preparing = Arc::clone(&preparing);
    let requests_seen = Arc::clone(&seen);
    tokio::spawn(async move {
        let seen = requests_seen;
        while let Some(frame) = read_frame(&mut client_read).await {
            if frame[4] == PREPARE && prepares_an_insert(&frame) {
                requests_preparing
                    .lock()
                    .expect("the preparing set")
                    .insert(stream_of(&frame));
            }
            let insert = frame[4] == EXECUTE
                && short_bytes(&frame, HEADER).is_some_and(|id| {
                    seen.insert_ids
                        .lock()
                        .expect("the INSERT ids")
                        .contains(&id)
                });
            if insert {
                requests_pending
                    .lock()
                    .expect("the pending set")
                    .insert(stream_of(&frame));
                seen.inserts.fetch_add(1, Ordering::SeqCst);
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
            }
            if server_write.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    while let Some(frame) = read_frame(&mut server_read).await {
        let answers_a_prepare = preparing
            .lock()
            .expect("the preparing set")
            .remove(&stream_of(&frame));
        if answers_a_prepare && let Some(id) = prepared_id(&frame) {
            seen.insert_ids.lock().expect("the INSERT ids").insert(id);
        }
        let execute = pending
            .lock()
            .expect("the pending set")
            .remove(&stream_of(&frame));
        if execute {
            let to_client = to_client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = to_client.send((frame, true));
            });
        } else if to_client.send((frame, false)).is_err() {
            break;
        }
    }
}

/// Processes every record of the pipeline's topic with `concurrency`, through a fresh proxy
/// and a fresh consumer group: (the most INSERTs in flight, INSERTs in all).
async fn process_all(pipeline: &rtdp_crds::Pipeline, concurrency: i32) -> (i64, i64) {
    let proxy = CqlProxy::start(
        cassandra_contact_points()[0].clone(),
        Duration::from_millis(50),
    )
    .await;
    let mut run = pipeline.clone();
    // Its own consumer group (from the name): every record again, from the start.
    run.metadata.name = Some(unique_name("concurrency-run"));
    run.spec.runner.concurrency = concurrency;
    run.spec.cassandra.contact_points = vec![proxy.address.clone()];
    let manifest = write_manifest(&run);
    let process = Runner::start(&["process"], &manifest, &[]);
    wait_offsets_at_end(&run, Duration::from_secs(120)).await;
    process.terminate(Duration::from_secs(30));
    proxy.seen()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_bounds_the_cassandra_writes_in_flight() {
    let mut pipeline = listings_pipeline("concurrency");
    // The plain write path (one INSERT per table); each run below renames the Pipeline for a
    // fresh consumer group, which with an identity would also need a state table of its own.
    pipeline.spec.schema.identity = None;
    assert_eq!(
        pipeline.spec.cassandra.tables.len(),
        2,
        "two writes a record"
    );
    provision(&pipeline).await;
    let producer = producer(&pipeline);
    let topic = pipeline.topic_name();
    let records = 200;
    for index in 0..records {
        let (zpid, payload) = listing_with_price(index, 100_000 + index as i64);
        produce(&producer, &topic, &zpid, Some(payload.as_bytes())).await;
    }

    // 8 writes in flight: 4 records of 2 tables each.
    let (most, inserts) = process_all(&pipeline, 8).await;
    eprintln!("concurrency 8: at most {most} writes in flight, {inserts} in all");
    assert!(
        inserts >= 2 * records as i64,
        "every record wrote both tables through the proxy: {inserts} writes"
    );
    assert_eq!(
        most, 8,
        "concurrency 8 allows 8 writes in flight, and slow answers fill them"
    );

    // The same records with a higher bound: more in flight, so 8 was the bound at work.
    let (most, inserts) = process_all(&pipeline, 64).await;
    eprintln!("concurrency 64: at most {most} writes in flight, {inserts} in all");
    assert!(inserts >= 2 * records as i64, "{inserts} writes");
    assert!(
        (9..=64).contains(&most),
        "concurrency 64 lets more than 8 writes be in flight, never more than 64: {most}"
    );

    let session = cassandra().await;
    let keyspace = &pipeline.spec.cassandra.keyspace.name;
    assert_eq!(
        read_rows(&session, &format!("{keyspace}.listings_by_id"))
            .await
            .len(),
        records
    );
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .expect("dropping the test keyspace");
}

/// Processes every record of the pipeline's topic in this process with `max_records`, in a
/// fresh consumer group, stopping at the topic's end offsets: the batches taken from the
/// consumer, from the `rtdp_consumer_batch_records` histogram, as (upper bound, batches
/// at most that large) per bucket, the number of batches and the records in them.
async fn consumer_batches(
    pipeline: &rtdp_crds::Pipeline,
    max_records: i32,
) -> (Vec<(f64, u64)>, u64, f64) {
    use pipeline_runner::connect::EndpointOverrides;
    use pipeline_runner::process::{ProcessOptions, run};
    use pipeline_runner::telemetry::{Health, Metrics};
    use tokio::sync::watch;

    let mut run_spec = pipeline.clone();
    run_spec.metadata.name = Some(unique_name("batch-run"));
    run_spec.spec.runner.batch.max_records = max_records;
    let end = pipeline_runner::standalone::end_offsets(&run_spec, &EndpointOverrides::default())
        .await
        .expect("the topic's end offsets");
    let (_running, shutdown) = watch::channel(false);
    let (_stop, stop_at) = watch::channel(Some(end));
    let metrics = Arc::new(Metrics::new("tests/batch"));
    let options = ProcessOptions {
        overrides: EndpointOverrides::default(),
        shutdown,
        stop_at,
        metrics: Arc::clone(&metrics),
        health: Arc::new(Health::default()),
    };
    tokio::time::timeout(Duration::from_secs(120), run(&run_spec, options))
        .await
        .expect("the process role reaches the end offsets within 120 s")
        .expect("the process role succeeds");
    let text = metrics.encode();
    let value = |line: &str| -> f64 {
        line.rsplit(' ')
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no value in {line}"))
    };
    let mut buckets = Vec::new();
    let (mut count, mut sum) = (None, None);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("rtdp_consumer_batch_records_bucket{") {
            let bound = rest
                .split("le=\"")
                .nth(1)
                .and_then(|after| after.split('"').next())
                .unwrap_or_else(|| panic!("no le label in {line}"));
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound
                    .parse()
                    .unwrap_or_else(|_| panic!("le {bound} in {line}"))
            };
            buckets.push((bound, value(line) as u64));
        } else if line.starts_with("rtdp_consumer_batch_records_count") {
            count = Some(value(line) as u64);
        } else if line.starts_with("rtdp_consumer_batch_records_sum") {
            sum = Some(value(line));
        }
    }
    let (Some(count), Some(sum)) = (count, sum) else {
        panic!("no rtdp_consumer_batch_records histogram in:\n{text}");
    };
    (buckets, count, sum)
}

/// Batches at most `bound` large, from the histogram's buckets.
fn at_most(buckets: &[(f64, u64)], bound: f64) -> u64 {
    buckets
        .iter()
        .find(|(le, _)| *le == bound)
        .map(|(_, batches)| *batches)
        .unwrap_or_else(|| panic!("no bucket le={bound} in {buckets:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_consumer_takes_at_most_max_records_at_once() {
    let mut pipeline = listings_pipeline("consumer-batch");
    // The plain write path (one INSERT per table); each run below renames the Pipeline for a
    // fresh consumer group, which with an identity would also need a state table of its own.
    pipeline.spec.schema.identity = None;
    provision(&pipeline).await;
    let producer = producer(&pipeline);
    let topic = pipeline.topic_name();
    let records = 300;
    for index in 0..records {
        let (zpid, payload) = listing_with_price(index, 100_000 + index as i64);
        produce(&producer, &topic, &zpid, Some(payload.as_bytes())).await;
    }

    // Every record is already in the topic, so fetches bring many at once; the default
    // concurrency leaves more write slots than 4 records.
    let (buckets, batches, taken) = consumer_batches(&pipeline, 4).await;
    eprintln!("maxRecords 4: {batches} batches of {taken} records; buckets {buckets:?}");
    assert_eq!(taken, records as f64, "every record taken once");
    assert_eq!(
        at_most(&buckets, 4.0),
        batches,
        "with maxRecords 4, no batch holds more than 4"
    );
    assert!(
        at_most(&buckets, 2.0) < batches,
        "with maxRecords 4 and everything fetched, some batches hold more than 2: {buckets:?}"
    );

    let (buckets, batches, taken) = consumer_batches(&pipeline, 500).await;
    eprintln!("maxRecords 500: {batches} batches of {taken} records; buckets {buckets:?}");
    assert_eq!(taken, records as f64, "every record taken once");
    assert!(
        at_most(&buckets, 4.0) < batches,
        "with maxRecords 500, some batches hold more than 4 (so 4 was the bound at work): \
         {buckets:?}"
    );

    let session = cassandra().await;
    let keyspace = &pipeline.spec.cassandra.keyspace.name;
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .expect("dropping the test keyspace");
}

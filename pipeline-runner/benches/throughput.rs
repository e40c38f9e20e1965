//! `make bench`: the runner's throughput, latency and memory on the local stack, against the
//! ceiling of the same Cassandra in the same run.
//!
//! 0. Warm-up, discarded: ceiling runs until two in a row agree within 15 % (a fresh Cassandra
//!    needs several to reach its pace), then one `process` run.
//! 1. Pairs (`BENCH_PAIRS`, default 3), alternating which side goes first:
//!    - process: N (`BENCH_RECORDS`, default 100 000) generated ~1 KB listings produced to a
//!      fresh topic (`BENCH_PARTITIONS`, default 3), then `pipeline-runner process` (a child
//!      process, release build) drains them into the two tables of the property-listings
//!      example: records/s from its first record consumed to its last one finished (read
//!      from its own counters every 20 ms, as the ceiling is timed from its first write),
//!      its start-up apart, CPU per record, peak RSS; then, untimed, its offsets must reach
//!      the end of the topic;
//!    - ceiling: the scylla driver alone (the runner's own prepared INSERTs, same concurrency)
//!      writes the same N rows into the same tables, no Kafka: records/s, CPU per record.
//! 2. The medians and spreads of each figure and of the per-pair ratios.
//! 3. Latency: listings produced at half the median ceiling rate, then at 1 000/s; p50/p99
//!    of produce → Cassandra ack from the runner's end-to-end histogram, next to the driver
//!    alone writing the same rows at the same rate (Cassandra's own latency, each write timed
//!    from when it was due), and the ratio of the two p99s; more rates with
//!    `BENCH_LATENCY_RATES=2500,5000`. Also the driver alone at that rate while the same
//!    records are produced to a topic nobody reads: what the producer and the broker take
//!    from Cassandra on a shared machine, without the runner. And Kafka alone: the same
//!    records at the same rate to a consumer with the runner's settings that only receives
//!    them, each timed from its broker append time, as the runner's end-to-end latency is:
//!    the share of the path the runner cannot go below.
//! 4. Where the machine's CPU went in each timed window: the share of all cores busy, the
//!    broker's and Cassandra's CPU (their pids from the local stack's state), and in the
//!    latency runs how long the runner's threads waited for a core (its `rtdp_cpu_wait_seconds_total`).
//!    `BENCH_LATENCY_REALTIME=1` runs the latency's runner under `chrt --fifo` (a diagnostic:
//!    its latency when it never waits behind Cassandra for a core); `BENCH_PAIRS=0` measures
//!    latency only (1 000/s and `BENCH_LATENCY_RATES`). `BENCH_ISOLATE=1` runs everything with
//!    Cassandra on a CPU of its own (see `Isolation`).
//!
//! Every run drops its keyspace and topics when done (and the bench first removes what an
//! interrupted run left): a Cassandra holding every earlier run's tables grows slower.
//!
//! Not a test: these machines are shared and noisy; read the figures, don't assert them.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pipeline_runner::ingest::generator::listing;
use pipeline_runner::process::identity::{Change, IdentityWriter};
use pipeline_runner::process::writer::TableWriter;
use pipeline_runner::record::RecordParser;
use pipeline_runner::telemetry::{Health, Metrics};
use pipeline_runner::transform::{Outcome, Transforms};
use rdkafka::ClientConfig;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rtdp_crds::{Pipeline, parse_pipeline};
use rtdp_provisioning::kafka::Admin;
use rtdp_test_support::prometheus::{histogram_buckets, metric_sum};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::value::CqlValue;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `make bench` (it starts the local stack and exports it)")
    })
}

/// The topic's partitions (`BENCH_PARTITIONS`, default 3).
fn partitions() -> i32 {
    i32::try_from(setting("BENCH_PARTITIONS", 3)).unwrap_or(3)
}

fn pipeline(suffix: &str) -> Pipeline {
    let text = include_str!("../../examples/property-listings.yaml");
    let mut pipeline = parse_pipeline(text, "property-listings.yaml").expect("the example parses");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let name = format!("bench-{stamp}-{suffix}");
    pipeline.metadata.name = Some(name.clone());
    pipeline.metadata.namespace = Some("bench".into());
    pipeline.spec.topic.name = Some(name);
    pipeline.spec.topic.partitions = partitions();
    pipeline.spec.source = None;
    // The plain write path, one INSERT per table, which is what the ceiling issues: the
    // identity's state reads, writes and deletes are not part of this comparison.
    pipeline.spec.schema.identity = None;
    pipeline.spec.kafka.bootstrap_servers = vec![env("KAFKA_BOOTSTRAP_SERVERS")];
    pipeline.spec.cassandra.contact_points = env("CASSANDRA_CONTACT_POINTS")
        .split(',')
        .map(str::to_string)
        .collect();
    pipeline.spec.cassandra.keyspace.name = format!("bench_{stamp}_{suffix}");
    pipeline
}

/// The bench's own Kafka admin client (topics made and dropped), made once.
fn kafka_admin() -> &'static Admin {
    static ADMIN: OnceLock<Admin> = OnceLock::new();
    ADMIN.get_or_init(|| {
        rtdp_provisioning::kafka::admin_client(&env("KAFKA_BOOTSTRAP_SERVERS"), &BTreeMap::new())
            .expect("admin client")
    })
}

/// The bench's own Cassandra session (keyspaces and tables made and dropped), made once; not
/// the one the runner or the ceiling writes with. It keeps no schema metadata: it only runs
/// DDL, and the driver would otherwise re-read every keyspace after each statement.
async fn cassandra_admin() -> &'static Session {
    static SESSION: tokio::sync::OnceCell<Session> = tokio::sync::OnceCell::const_new();
    SESSION
        .get_or_init(|| async {
            let contact_points: Vec<String> = env("CASSANDRA_CONTACT_POINTS")
                .split(',')
                .map(str::to_string)
                .collect();
            SessionBuilder::new()
                .known_nodes(&contact_points)
                .fetch_schema_metadata(false)
                .fetch_full_schema_metadata(false)
                .build()
                .await
                .expect("cassandra")
        })
        .await
}

async fn provision(pipeline: &Pipeline) {
    provision_topics(pipeline).await;
    rtdp_provisioning::cassandra::ensure_schema(cassandra_admin().await, pipeline)
        .await
        .expect("schema");
}

/// The Pipeline's topics only (a run that writes nothing to Cassandra).
async fn provision_topics(pipeline: &Pipeline) {
    rtdp_provisioning::kafka::ensure_topics(kafka_admin(), pipeline)
        .await
        .expect("topics");
}

/// Drops what a run made (its keyspace, its topics): a Cassandra that keeps every earlier
/// run's tables and data grows slower run after run, which is not what a bench should show.
async fn remove(pipeline: &Pipeline) {
    cassandra_admin()
        .await
        .query_unpaged(
            format!(
                "DROP KEYSPACE IF EXISTS {}",
                pipeline.spec.cassandra.keyspace.name
            ),
            (),
        )
        .await
        .expect("dropping the bench's keyspace");
    let topics = [pipeline.topic_name(), pipeline.dead_letter_topic_name()];
    delete_topics(&topics).await;
}

async fn delete_topics(topics: &[String]) {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    // A topic already gone is no error here.
    let _ = kafka_admin()
        .delete_topics(&names, &AdminOptions::new())
        .await;
}

/// Removes what an interrupted earlier bench left: `bench_*` keyspaces and `bench-*` topics.
async fn remove_leftovers() {
    let session = cassandra_admin().await;
    let keyspaces: Vec<String> = session
        .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces", ())
        .await
        .expect("listing keyspaces")
        .into_rows_result()
        .expect("rows")
        .rows::<(String,)>()
        .expect("keyspace names")
        .filter_map(Result::ok)
        .map(|(name,)| name)
        .filter(|name| name.starts_with("bench_"))
        .collect();
    for keyspace in &keyspaces {
        session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
            .await
            .expect("dropping a leftover keyspace");
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BOOTSTRAP_SERVERS"))
        .create()
        .expect("consumer");
    let topics: Vec<String> = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .expect("Kafka metadata")
        .topics()
        .iter()
        .map(|topic| topic.name().to_string())
        .filter(|name| name.starts_with("bench-"))
        .collect();
    if !keyspaces.is_empty() || !topics.is_empty() {
        println!(
            "removed an earlier bench's leftovers: {} keyspaces, {} topics",
            keyspaces.len(),
            topics.len()
        );
    }
    for chunk in topics.chunks(50) {
        delete_topics(chunk).await;
    }
}

async fn produce(producer: &FutureProducer, topic: &str, count: u64, rate: Option<f64>) {
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for index in 0..count {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(index as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let (key, payload) = listing(index, 50_000);
        loop {
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err(_) => {
                    // librdkafka's queue is full: wait for a delivery and try again.
                    let _ = pending.next().await;
                }
            }
        }
        while pending.len() > 10_000 {
            let _ = pending.next().await;
        }
    }
    while let Some(result) = pending.next().await {
        result
            .expect("the producer lives")
            .map_err(|(error, _)| error)
            .expect("produce");
    }
}

fn committed_at_end(pipeline: &Pipeline) -> bool {
    let topic = pipeline.topic_name();
    let consumer: BaseConsumer = ClientConfig::new()
        .set(
            "bootstrap.servers",
            pipeline.spec.kafka.bootstrap_servers.join(","),
        )
        .set("group.id", pipeline.consumer_group())
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..pipeline.spec.topic.partitions {
        partitions.add_partition(&topic, partition);
    }
    let Ok(committed) = consumer.committed_offsets(partitions, Duration::from_secs(5)) else {
        return false;
    };
    (0..pipeline.spec.topic.partitions).all(|partition| {
        let Ok((_, high)) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))
        else {
            return false;
        };
        match committed
            .find_partition(&topic, partition)
            .map(|element| element.offset())
        {
            Some(Offset::Offset(offset)) => offset >= high,
            _ => high == 0,
        }
    })
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

/// User + system CPU seconds the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|times| {
            times
                .iter()
                .filter_map(|value| value.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or_default();
    ticks / 100.0
}

/// `BENCH_ISOLATE=1`: Cassandra on the first CPU alone, the broker, the bench and its runner
/// on the others, as if Cassandra had a machine of its own (a deployment keeps the processors
/// off Cassandra's nodes); the ceiling is then that one core's, and both sides are measured
/// against it. Every CPU is given back to the daemons when the run ends.
struct Isolation {
    all: String,
}

impl Isolation {
    fn start() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(1);
        assert!(
            cpus >= 2,
            "BENCH_ISOLATE=1 needs at least 2 CPUs, this machine has {cpus}"
        );
        let rest = format!("1-{}", cpus - 1);
        let cassandra = stack_pid("cassandra").expect("the local stack's Cassandra pid");
        let kafka = stack_pid("kafka").expect("the local stack's Kafka pid");
        pin(cassandra, "0");
        pin(kafka, &rest);
        pin(std::process::id(), &rest);
        println!(
            "isolated: Cassandra on CPU 0; the broker, the bench and its runner on CPUs {rest}"
        );
        Self {
            all: format!("0-{}", cpus - 1),
        }
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        for name in ["cassandra", "kafka"] {
            if let Some(pid) = stack_pid(name) {
                pin(pid, &self.all);
            }
        }
    }
}

/// Every thread of `pid` (and what they start later) on `cpus` (`taskset`'s list syntax).
fn pin(pid: u32, cpus: &str) {
    let status = Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", cpus])
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .expect("running taskset (util-linux)");
    assert!(
        status.success(),
        "taskset could not pin pid {pid} to CPUs {cpus}"
    );
}

/// A local-stack daemon's pid (`dev/stack` records each in `$RTDP_STATE/<name>/pid`).
fn stack_pid(name: &str) -> Option<u32> {
    let state = std::env::var("RTDP_STATE")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.stack").to_string());
    std::fs::read_to_string(format!("{state}/{name}/pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Where the machine's CPU went, read at one instant: the Kafka broker's and Cassandra's
/// JVMs, and the whole machine's busy and total CPU time (`/proc/stat`), in seconds.
#[derive(Clone, Copy, Debug)]
struct MachineSample {
    /// When it was read: a window's wall time is between two samples.
    at: Instant,
    kafka: f64,
    cassandra: f64,
    busy: f64,
    total: f64,
}

impl MachineSample {
    fn now() -> Self {
        let jiffies: Vec<f64> = std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .next()
            .map(|line| {
                line.split_whitespace()
                    .skip(1)
                    .filter_map(|value| value.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
        let total: f64 = jiffies.iter().take(8).sum();
        let idle = jiffies.get(3).copied().unwrap_or_default()
            + jiffies.get(4).copied().unwrap_or_default();
        Self {
            at: Instant::now(),
            kafka: stack_pid("kafka").map(cpu_seconds).unwrap_or_default(),
            cassandra: stack_pid("cassandra").map(cpu_seconds).unwrap_or_default(),
            busy: (total - idle) / 100.0,
            total: total / 100.0,
        }
    }

    /// What went where between `self` and now.
    fn until_now(self) -> MachineUse {
        let now = Self::now();
        MachineUse {
            seconds: (now.at - self.at).as_secs_f64(),
            kafka_seconds: now.kafka - self.kafka,
            cassandra_seconds: now.cassandra - self.cassandra,
            busy_share: (now.busy - self.busy) / (now.total - self.total).max(0.01),
        }
    }
}

/// The machine during a timed window: its wall time, CPU seconds of the broker and of
/// Cassandra, and the share of all cores that was busy (1.0: every core, all the time).
#[derive(Clone, Copy, Debug, Default)]
struct MachineUse {
    seconds: f64,
    kafka_seconds: f64,
    cassandra_seconds: f64,
    busy_share: f64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Percentiles (seconds) from the runner's end-to-end histogram, interpolated in buckets.
fn histogram_percentiles(metrics: &str, histogram: &str, percentiles: &[f64]) -> Vec<f64> {
    let buckets = histogram_buckets(metrics, histogram);
    let total = buckets.last().map_or(0.0, |bucket| bucket.1);
    percentiles
        .iter()
        .map(|percentile| {
            let target = total * percentile / 100.0;
            let mut previous = (0.0, 0.0);
            for (bound, count) in &buckets {
                if *count >= target {
                    if bound.is_infinite() {
                        return previous.0;
                    }
                    let width = count - previous.1;
                    let share = if width > 0.0 {
                        (target - previous.1) / width
                    } else {
                        1.0
                    };
                    return previous.0 + (bound - previous.0) * share;
                }
                previous = (*bound, *count);
            }
            previous.0
        })
        .collect()
}

async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    body
}

/// `realtime`: run it under `chrt --fifo` (a diagnostic, `BENCH_LATENCY_REALTIME=1`: the
/// runner's latency when its threads never wait behind Cassandra's for a core; needs root).
fn start_process(pipeline: &Pipeline, port: u16, realtime: bool) -> std::process::Child {
    let manifest = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}.yaml", pipeline.topic_name()));
    std::fs::write(&manifest, serde_yaml_ng::to_string(pipeline).expect("yaml")).expect("manifest");
    let runner = env!("CARGO_BIN_EXE_pipeline-runner");
    let mut command = if realtime {
        let mut chrt = Command::new("chrt");
        chrt.args(["--fifo", "10", runner]);
        chrt
    } else {
        Command::new(runner)
    };
    command
        .args(["process", "--file"])
        .arg(&manifest)
        .arg("--metrics-address")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting pipeline-runner process")
}

fn stop(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// One side of a pair: records/s, CPU per record and peak RSS and start-up (the runner only).
#[derive(Clone, Copy, Debug)]
struct Measurement {
    rate: f64,
    cpu_per_record_us: f64,
    machine: MachineUse,
    records: f64,
    rss_mib: Option<f64>,
    startup_seconds: Option<f64>,
}

impl Measurement {
    /// The broker's CPU per record in this window (µs).
    fn kafka_us(&self) -> f64 {
        self.machine.kafka_seconds / self.records * 1e6
    }

    /// Cassandra's CPU per record in this window (µs).
    fn cassandra_us(&self) -> f64 {
        self.machine.cassandra_seconds / self.records * 1e6
    }
}

/// Records the runner finished: written to every table, filtered out or dead-lettered.
fn finished(metrics: &str) -> f64 {
    [
        "rtdp_records_written_total",
        "rtdp_records_filtered_total",
        "rtdp_records_dead_lettered_total",
    ]
    .iter()
    .map(|metric| metric_sum(metrics, metric))
    .sum()
}

/// `pipeline-runner process` draining `records` pre-produced listings. Timed from its first
/// record consumed to its last one finished, read from its own counters every 20 ms: its
/// start-up (process, Cassandra session and statements, group join) is reported apart, as
/// the ceiling's session and statements are not timed either; and the offsets it commits
/// once a second would add up to a second to a run of a few seconds.
async fn process_run(producer: &FutureProducer, records: u64, round: usize) -> Measurement {
    process_run_of(producer, records, pipeline(&format!("process_{round}"))).await
}

/// [`process_run`] of a given Pipeline.
async fn process_run_of(
    producer: &FutureProducer,
    records: u64,
    throughput: Pipeline,
) -> Measurement {
    let round = throughput.metadata.name.clone().unwrap_or_default();
    provision(&throughput).await;
    produce(producer, &throughput.topic_name(), records, None).await;
    let port = free_port();
    let spawned = MachineSample::now();
    let mut child = start_process(&throughput, port, false);
    let deadline = spawned.at + Duration::from_secs(600);
    // The timed window opens at the first record consumed.
    let mut first_consumed: Option<MachineSample> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "process did not finish {records} records in 600 s"
        );
        let metrics = scrape(port).await;
        if first_consumed.is_none() && metric_sum(&metrics, "rtdp_records_consumed_total") > 0.0 {
            first_consumed = Some(MachineSample::now());
        }
        if finished(&metrics) >= records as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_consumed = first_consumed.unwrap_or(spawned);
    let machine = first_consumed.until_now();
    let rss = peak_rss_kib(child.id());
    let cpu = cpu_seconds(child.id());
    // Nothing lost: the committed offsets reach the end of the topic (untimed).
    while !committed_at_end(&throughput) {
        assert!(
            Instant::now() < deadline,
            "the offsets of {round} did not reach the end of the topic"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(&mut child);
    remove(&throughput).await;
    Measurement {
        rate: records as f64 / machine.seconds,
        cpu_per_record_us: cpu / records as f64 * 1e6,
        machine,
        records: records as f64,
        rss_mib: Some(rss as f64 / 1024.0),
        startup_seconds: Some((first_consumed.at - spawned.at).as_secs_f64()),
    }
}

/// What the ceiling writes with: the bench's rows (parsed and transformed once, untimed),
/// the runner's own prepared INSERTs, and the runner's concurrency.
struct Ceiling {
    pipeline: Pipeline,
    writer: TableWriter,
    rows: Vec<Vec<Option<CqlValue>>>,
    in_flight: usize,
}

async fn ceiling(records: u64, round: &str) -> Ceiling {
    let ceiling_pipeline = pipeline(&format!("ceiling_{round}"));
    provision(&ceiling_pipeline).await;
    let (rows, names) = rows_of(&ceiling_pipeline, records);
    let session = Arc::new(
        pipeline_runner::connect::cassandra_session(
            &ceiling_pipeline.spec.cassandra,
            &Default::default(),
        )
        .await
        .expect("session"),
    );
    let writer = TableWriter::prepare(session, &ceiling_pipeline.spec, &names)
        .await
        .expect("prepare");
    let in_flight = (usize::try_from(ceiling_pipeline.spec.runner.concurrency).unwrap_or(1)
        / writer.table_count())
    .max(1);
    Ceiling {
        pipeline: ceiling_pipeline,
        writer,
        rows,
        in_flight,
    }
}

/// The ceiling: the same rows, tables, statements and concurrency through the scylla driver
/// alone, no Kafka, as fast as Cassandra takes them.
async fn ceiling_run(records: u64, round: &str) -> Measurement {
    let Ceiling {
        pipeline,
        writer,
        rows,
        in_flight,
    } = ceiling(records, round).await;
    let machine_before = MachineSample::now();
    let cpu_before = cpu_seconds(std::process::id());
    let mut pending = FuturesUnordered::new();
    for (index, values) in rows.iter().enumerate() {
        pending.push(writer.write(values, 1_000_000 + index as i64));
        if pending.len() >= in_flight {
            pending
                .next()
                .await
                .expect("a write")
                .expect("the write succeeds");
        }
    }
    while let Some(result) = pending.next().await {
        result.expect("the write succeeds");
    }
    let measured = driver_measurement(rows.len(), machine_before, cpu_before);
    remove(&pipeline).await;
    measured
}

/// What a driver-only run of `rows` measured since `machine_before` and `cpu_before` (the
/// bench's own CPU seconds).
fn driver_measurement(rows: usize, machine_before: MachineSample, cpu_before: f64) -> Measurement {
    let cpu = cpu_seconds(std::process::id()) - cpu_before;
    let machine = machine_before.until_now();
    Measurement {
        rate: rows as f64 / machine.seconds,
        cpu_per_record_us: cpu / rows.max(1) as f64 * 1e6,
        machine,
        records: rows.max(1) as f64,
        rss_mib: None,
        startup_seconds: None,
    }
}

/// The example as it is, with `spec.schema.identity` (one row per listing in both tables):
/// what the views section measures.
fn pipeline_with_identity(suffix: &str) -> Pipeline {
    let example = parse_pipeline(
        include_str!("../../examples/property-listings.yaml"),
        "property-listings.yaml",
    )
    .expect("the example parses");
    let mut pipeline = pipeline(suffix);
    pipeline.spec.schema.identity = example.spec.schema.identity;
    pipeline
}

/// The bench's rows as the runner builds them (parsed and transformed once, untimed), and the
/// names of their values.
fn rows_of(pipeline: &Pipeline, records: u64) -> (Vec<Vec<Option<CqlValue>>>, Vec<String>) {
    let parser = RecordParser::new(&pipeline.spec.schema).expect("parser");
    let transforms = Transforms::new(&pipeline.spec.schema).expect("transforms");
    let context = cel::Context::default();
    let rows = (0..records)
        .filter_map(|index| {
            let (_, payload) = listing(index, 50_000);
            let parsed = parser.parse(Some(&payload)).ok()?;
            match transforms.apply(&context, &parsed).ok()? {
                Outcome::Keep(derived) => {
                    let mut values = parsed.values;
                    values.extend(derived);
                    Some(values)
                }
                Outcome::FilteredOut | Outcome::Delete => None,
            }
        })
        .collect();
    let names = parser
        .field_names()
        .chain(transforms.derived_names())
        .map(str::to_string)
        .collect();
    (rows, names)
}

/// The views' ceiling: the same rows and the statements the runner issues for them with an
/// identity (its own `IdentityWriter`: the INSERTs, the state's read on a key first seen, the
/// superseded row's DELETE when a listing moved, the state's write), through the scylla
/// driver alone, no Kafka, at the runner's concurrency. Write times follow the rows' order, as
/// the processors' chain does.
async fn identity_ceiling_run(records: u64, round: &str) -> Measurement {
    let ceiling_pipeline = pipeline_with_identity(&format!("views_ceiling_{round}"));
    provision(&ceiling_pipeline).await;
    let (rows, names) = rows_of(&ceiling_pipeline, records);
    let session = Arc::new(
        pipeline_runner::connect::cassandra_session(
            &ceiling_pipeline.spec.cassandra,
            &Default::default(),
        )
        .await
        .expect("session"),
    );
    let writer = TableWriter::prepare(Arc::clone(&session), &ceiling_pipeline.spec, &names)
        .await
        .expect("prepare");
    let identities = IdentityWriter::prepare(session, &ceiling_pipeline, &names)
        .await
        .expect("prepare the identity's statements")
        .expect("the example declares an identity");
    let in_flight = (usize::try_from(ceiling_pipeline.spec.runner.concurrency).unwrap_or(1)
        / (writer.table_count() + identities.extra_statements()))
    .max(1);
    let machine_before = MachineSample::now();
    let cpu_before = cpu_seconds(std::process::id());
    let mut pending = FuturesUnordered::new();
    for (index, values) in rows.iter().enumerate() {
        let identity = identities.identity_of(values).expect("zpid");
        let (writer, identities) = (&writer, &identities);
        pending.push(async move {
            let lock = identities.lock(&identity).await;
            identities
                .apply(
                    writer,
                    &lock,
                    &identity,
                    &Change::Upsert(values.clone()),
                    1_000_000 + index as i64,
                )
                .await
                .map(|_| ())
        });
        if pending.len() >= in_flight {
            pending
                .next()
                .await
                .expect("a write")
                .expect("the write succeeds");
        }
    }
    while let Some(result) = pending.next().await {
        result.expect("the write succeeds");
    }
    let measured = driver_measurement(rows.len(), machine_before, cpu_before);
    remove(&ceiling_pipeline).await;
    measured
}

/// The cost of keeping the views (`spec.schema.identity`): the example's listings, each key
/// twice at two random prices (so most move in `listings_by_city`), processed with the
/// identity, without it (plain upserts: the same two INSERTs, superseded rows left), and
/// through the driver alone issuing the identity's statements; rounds alternate the order.
async fn views(producer: &FutureProducer, records: u64, rounds: usize) {
    println!(
        "--- views: {records} listings, {} keys (each twice, re-priced), {rounds} rounds ---",
        records.min(50_000)
    );
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut ceilings = Vec::new();
    for round in 1..=rounds {
        let mut identity = None;
        let mut plain = None;
        let mut ceiling = None;
        // Three orders in turn, so drift hits each side alike.
        for step in 0..3 {
            match (step + round) % 3 {
                0 => {
                    identity = Some(
                        process_run_of(
                            producer,
                            records,
                            pipeline_with_identity(&format!("views_{round}")),
                        )
                        .await,
                    );
                }
                1 => {
                    plain = Some(
                        process_run_of(producer, records, pipeline(&format!("plain_{round}")))
                            .await,
                    );
                }
                _ => {
                    ceiling = Some(identity_ceiling_run(records, &round.to_string()).await);
                }
            }
        }
        let (Some(identity), Some(plain), Some(ceiling)) = (identity, plain, ceiling) else {
            unreachable!("each round runs all three")
        };
        println!(
            "round {round}:  with identity {:.0} records/s ({:.0} us CPU/record) | without {:.0} records/s ({:.0} us CPU/record) | identity ceiling {:.0} records/s ({:.0} us CPU/record) | ratio to the ceiling {:.2}, to the plain pipeline {:.2}",
            identity.rate,
            identity.cpu_per_record_us,
            plain.rate,
            plain.cpu_per_record_us,
            ceiling.rate,
            ceiling.cpu_per_record_us,
            identity.rate / ceiling.rate,
            identity.rate / plain.rate
        );
        with.push(identity);
        without.push(plain);
        ceilings.push(ceiling);
    }
    let line = |name: &str, values: Vec<f64>| {
        let (median, low, high) = summary(&values);
        println!("{name:<40} median {median:.2} (spread {low:.2}–{high:.2})");
    };
    let ratio = |a: &[Measurement], b: &[Measurement], cpu: bool| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(a, b)| {
                if cpu {
                    a.cpu_per_record_us / b.cpu_per_record_us
                } else {
                    a.rate / b.rate
                }
            })
            .collect()
    };
    line(
        "views: rate ÷ identity ceiling (goal ≥ 0.9)",
        ratio(&with, &ceilings, false),
    );
    line(
        "views: rate ÷ without identity",
        ratio(&with, &without, false),
    );
    line(
        "views: CPU/record ÷ without identity",
        ratio(&with, &without, true),
    );
}

/// Cassandra's own write latency at `rate`: the ceiling's writes paced at `rate` for
/// `seconds`, each timed from when it was due (as the runner's end-to-end latency is timed
/// from when its record was produced) to its acknowledgement. Returns p50 and p99 in ms.
async fn driver_latency(rate: f64, ceiling: Ceiling) -> (f64, f64) {
    let Ceiling {
        pipeline,
        writer,
        rows,
        in_flight,
    } = ceiling;
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut record = |elapsed: Duration| {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        histogram.saturating_record(micros.max(1));
    };
    let started = tokio::time::Instant::now();
    let mut pending = FuturesUnordered::new();
    for (index, values) in rows.iter().enumerate() {
        let due = started + Duration::from_secs_f64(index as f64 / rate);
        // Keep the writes in flight moving while waiting for the next one's time.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(due) => break,
                Some(elapsed) = pending.next(), if !pending.is_empty() => record(elapsed),
            }
        }
        while pending.len() >= in_flight {
            if let Some(elapsed) = pending.next().await {
                record(elapsed);
            }
        }
        let writer = &writer;
        pending.push(async move {
            writer
                .write(values, 1_000_000 + index as i64)
                .await
                .expect("the write succeeds");
            due.elapsed()
        });
    }
    while let Some(elapsed) = pending.next().await {
        record(elapsed);
    }
    remove(&pipeline).await;
    (
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

/// Kafka's own latency at `rate` on this machine: `records` listings produced at that rate to
/// a fresh topic, received by a consumer with the runner's settings (`kafka::consumer`) that
/// does nothing else, each timed from its broker append time to its receipt (milliseconds,
/// as the runner's end-to-end histogram). Returns p50 and p99 in ms.
async fn kafka_latency(
    producer: &FutureProducer,
    suffix: &str,
    rate: f64,
    records: u64,
) -> (f64, f64) {
    let alone = pipeline(&format!("latency_{suffix}_kafka"));
    provision_topics(&alone).await;
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", env("KAFKA_BOOTSTRAP_SERVERS"));
    let consumer = pipeline_runner::kafka::consumer(
        &base,
        &alone.consumer_group(),
        Arc::new(Metrics::new("bench/kafka-alone")),
        Arc::new(Health::default()),
    )
    .expect("consumer");
    let topic = alone.topic_name();
    consumer.subscribe(&[topic.as_str()]).expect("subscribe");
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("histogram");
    let deadline = Duration::from_secs_f64(records as f64 / rate + 120.0);
    let receive = async {
        for _ in 0..records {
            let message = tokio::time::timeout(deadline, consumer.recv())
                .await
                .expect("Kafka alone: every produced record arrives")
                .expect("consume");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis() as i64)
                .unwrap_or_default();
            if let Timestamp::CreateTime(appended) | Timestamp::LogAppendTime(appended) =
                message.timestamp()
            {
                histogram.saturating_record(u64::try_from(now - appended).unwrap_or(0).max(1));
            }
        }
    };
    let send = async {
        // As for the runner: let the consumer join its group before the clock starts.
        tokio::time::sleep(Duration::from_secs(5)).await;
        produce(producer, &topic, records, Some(rate)).await;
    };
    tokio::join!(receive, send);
    drop(consumer);
    remove(&alone).await;
    (
        histogram.value_at_quantile(0.5) as f64,
        histogram.value_at_quantile(0.99) as f64,
    )
}

/// A freshly started Cassandra needs more than one run to reach its pace (its JIT, its
/// memtables): ceiling runs until two in a row agree within 15 % (at most
/// `WARM_UP_MAX_RUNS`), then one `process` run for the broker's fetch path; all discarded.
/// With a single warm-up run the first pair still ran at half the pace of the next two.
async fn warm_up(producer: &FutureProducer, records: u64) {
    const WARM_UP_MAX_RUNS: usize = 5;
    let mut previous: Option<f64> = None;
    for run in 1..=WARM_UP_MAX_RUNS {
        let rate = ceiling_run(records, &format!("warmup_{run}")).await.rate;
        let settled = previous.is_some_and(|before| (rate - before).abs() <= 0.15 * before);
        println!(
            "warm-up {run}: ceiling {rate:.0} records/s (discarded{})",
            if settled { "; settled" } else { "" }
        );
        if settled {
            break;
        }
        previous = Some(rate);
    }
    let process = process_run(producer, records, 0).await;
    println!(
        "warm-up:   process {:.0} records/s (discarded)",
        process.rate
    );
}

/// The median and the spread (min–max) of `values`.
fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    };
    (
        median,
        sorted.first().copied().unwrap_or_default(),
        sorted.last().copied().unwrap_or_default(),
    )
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let records = setting("BENCH_RECORDS", 100_000);
    // 0: latency only (the fixed rate and `BENCH_LATENCY_RATES`), for studying it alone.
    let pairs = usize::try_from(setting("BENCH_PAIRS", 3)).unwrap_or(3);
    println!(
        "RTDP bench: {records} listings (~1 KB) into 2 tables, {} partitions, {pairs} alternating pairs; Kafka and Cassandra on {} CPUs",
        partitions(),
        std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(1)
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BOOTSTRAP_SERVERS"))
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");

    // Held to the end of the run: restores every CPU to the stack's daemons when dropped.
    let _isolation = (setting("BENCH_ISOLATE", 0) == 1).then(Isolation::start);
    remove_leftovers().await;
    warm_up(&producer, records.min(30_000)).await;

    // The cost of keeping the views: `BENCH_VIEWS` rounds (default 3; 0 skips it); with
    // `BENCH_PAIRS=0 BENCH_VIEWS_ONLY=1` nothing else runs.
    let view_rounds = usize::try_from(setting("BENCH_VIEWS", 3)).unwrap_or(3);
    if view_rounds > 0 {
        views(&producer, records, view_rounds).await;
    }
    if setting("BENCH_VIEWS_ONLY", 0) == 1 {
        return;
    }

    // Alternating pairs, the order swapped each round, so drift hits both sides alike.
    let mut processes = Vec::new();
    let mut ceilings = Vec::new();
    for round in 1..=pairs {
        let (process, ceiling) = if !round.is_multiple_of(2) {
            let process = process_run(&producer, records, round).await;
            (process, ceiling_run(records, &round.to_string()).await)
        } else {
            let ceiling = ceiling_run(records, &round.to_string()).await;
            (process_run(&producer, records, round).await, ceiling)
        };
        println!(
            "pair {round}:   process {:.0} records/s ({:.0} us CPU/record, peak RSS {:.1} MiB, start-up {:.2} s) | ceiling {:.0} records/s ({:.0} us CPU/record) | ratio {:.2}",
            process.rate,
            process.cpu_per_record_us,
            process.rss_mib.unwrap_or_default(),
            process.startup_seconds.unwrap_or_default(),
            ceiling.rate,
            ceiling.cpu_per_record_us,
            process.rate / ceiling.rate
        );
        println!(
            "          machine: process side {:.0} % busy, broker {:.1} us/record, Cassandra {:.1} us/record | ceiling side {:.0} % busy, broker {:.1}, Cassandra {:.1} us/record",
            process.machine.busy_share * 100.0,
            process.kafka_us(),
            process.cassandra_us(),
            ceiling.machine.busy_share * 100.0,
            ceiling.kafka_us(),
            ceiling.cassandra_us(),
        );
        processes.push(process);
        ceilings.push(ceiling);
    }
    if pairs > 0 {
        pair_summary(&processes, &ceilings);
        // Latency at half the measured ceiling.
        let (ceiling_rate, _, _) = summary(&ceilings.iter().map(|m| m.rate).collect::<Vec<_>>());
        latency(&producer, "half_rate", ceiling_rate / 2.0, None).await;
    }
    // And at a modest fixed rate.
    latency(&producer, "fixed_rate", 1000.0, Some(50.0)).await;
    // Where the latency turns: more rates on request, e.g. `BENCH_LATENCY_RATES=2500,5000`.
    let extra_rates = std::env::var("BENCH_LATENCY_RATES").unwrap_or_default();
    for rate in extra_rates
        .split(',')
        .filter_map(|rate| rate.trim().parse::<f64>().ok())
    {
        latency(&producer, &format!("rate_{rate:.0}"), rate, None).await;
    }
}

/// The medians and spreads of the pairs' figures.
fn pair_summary(processes: &[Measurement], ceilings: &[Measurement]) {
    let pairs = processes.len();
    let line = |name: &str, values: Vec<f64>, unit: &str| {
        let (median, low, high) = summary(&values);
        println!("{name:<28} median {median:.2}{unit} (spread {low:.2}–{high:.2})");
    };
    println!("--- medians of {pairs} pairs ---");
    line(
        "process records/s",
        processes.iter().map(|m| m.rate).collect(),
        "",
    );
    line(
        "ceiling records/s",
        ceilings.iter().map(|m| m.rate).collect(),
        "",
    );
    line(
        "ratio process/ceiling",
        processes
            .iter()
            .zip(ceilings)
            .map(|(process, ceiling)| process.rate / ceiling.rate)
            .collect(),
        " (goal >= 0.9)",
    );
    line(
        "CPU/record process (us)",
        processes.iter().map(|m| m.cpu_per_record_us).collect(),
        "",
    );
    line(
        "CPU/record ceiling (us)",
        ceilings.iter().map(|m| m.cpu_per_record_us).collect(),
        "",
    );
    line(
        "CPU ratio process/ceiling",
        processes
            .iter()
            .zip(ceilings)
            .map(|(process, ceiling)| process.cpu_per_record_us / ceiling.cpu_per_record_us)
            .collect(),
        " (goal <= 1.3)",
    );
    line(
        "machine busy, process (%)",
        processes
            .iter()
            .map(|m| m.machine.busy_share * 100.0)
            .collect(),
        "",
    );
    line(
        "machine busy, ceiling (%)",
        ceilings
            .iter()
            .map(|m| m.machine.busy_share * 100.0)
            .collect(),
        "",
    );
    line(
        "broker CPU/record, process",
        processes.iter().map(Measurement::kafka_us).collect(),
        " us",
    );
    line(
        "Cassandra CPU/record, proc.",
        processes.iter().map(Measurement::cassandra_us).collect(),
        " us",
    );
    line(
        "Cassandra CPU/record, ceil.",
        ceilings.iter().map(Measurement::cassandra_us).collect(),
        " us",
    );
    // On a machine whose cores are all busy, records/s is the cores over the CPU every
    // record costs the whole machine: the ratio a side's own CPU leaves for the other.
    line(
        "machine CPU/record ratio",
        processes
            .iter()
            .zip(ceilings)
            .map(|(process, ceiling)| {
                (process.cpu_per_record_us + process.kafka_us() + process.cassandra_us())
                    / (ceiling.cpu_per_record_us + ceiling.kafka_us() + ceiling.cassandra_us())
            })
            .collect(),
        " (runner + broker + Cassandra vs driver + Cassandra)",
    );
    line(
        "start-up process (s)",
        processes.iter().filter_map(|m| m.startup_seconds).collect(),
        "",
    );
    line(
        "peak RSS process (MiB)",
        processes.iter().filter_map(|m| m.rss_mib).collect(),
        " (goal <= 64)",
    );
}

/// Produce → Cassandra ack at `rate` through the runner, next to the driver alone at the
/// same rate (Cassandra's own share). `goal_ms`: the absolute p99 goal at this rate, if any.
async fn latency(producer: &FutureProducer, suffix: &str, rate: f64, goal_ms: Option<f64>) {
    let latency = pipeline(&format!("latency_{suffix}"));
    provision(&latency).await;
    let port = free_port();
    let realtime = setting("BENCH_LATENCY_REALTIME", 0) == 1;
    let mut child = start_process(&latency, port, realtime);
    // Let it join its group before the clock starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seconds = 20.0;
    let machine_before = MachineSample::now();
    // The runner's own count of its threads' wait for a core.
    let waited_before = metric_sum(&scrape(port).await, "rtdp_cpu_wait_seconds_total");
    let runner_cpu_before = cpu_seconds(child.id());
    produce(
        producer,
        &latency.topic_name(),
        (rate * seconds) as u64,
        Some(rate),
    )
    .await;
    while !committed_at_end(&latency) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let machine = machine_before.until_now();
    let window = machine.seconds;
    let scraped = scrape(port).await;
    let waited = metric_sum(&scraped, "rtdp_cpu_wait_seconds_total") - waited_before;
    let runner_cores = (cpu_seconds(child.id()) - runner_cpu_before) / window;
    let values = histogram_percentiles(&scraped, "rtdp_end_to_end_latency_seconds", &[50.0, 99.0]);
    let writes = histogram_percentiles(&scraped, "rtdp_write_latency_seconds", &[50.0, 99.0]);
    let rss = peak_rss_kib(child.id());
    stop(&mut child);
    remove(&latency).await;
    let (end_to_end_p50, end_to_end_p99) = (
        values.first().copied().unwrap_or_default() * 1000.0,
        values.get(1).copied().unwrap_or_default() * 1000.0,
    );
    let records = (rate * seconds) as u64;
    let alone = ceiling(records, &format!("{suffix}_driver")).await;
    let (driver_p50, driver_p99) = driver_latency(rate, alone).await;
    // The same driver run while the same records are produced to a topic nobody reads: the
    // producer and the broker's share of the machine, without the runner.
    let background = pipeline(&format!("latency_{suffix}_background"));
    provision(&background).await;
    let loaded = ceiling(records, &format!("{suffix}_loaded")).await;
    let background_topic = background.topic_name();
    let loaded_machine_before = MachineSample::now();
    let ((loaded_p50, loaded_p99), ()) = tokio::join!(
        driver_latency(rate, loaded),
        produce(producer, &background_topic, records, Some(rate)),
    );
    let loaded_machine = loaded_machine_before.until_now();
    remove(&background).await;
    let (kafka_p50, kafka_p99) = kafka_latency(producer, suffix, rate, records).await;
    let goal = goal_ms.map_or(String::new(), |goal| format!(", goal p99 <= {goal:.0} ms"));
    println!(
        "latency:  at {rate:.0} records/s for {seconds:.0} s{}: produce -> Cassandra ack p50 {end_to_end_p50:.1} ms, p99 {end_to_end_p99:.1} ms (runner's writes p50 {:.1}, p99 {:.1} ms; peak RSS {:.1} MiB)\n          driver alone at that rate p50 {driver_p50:.1} ms, p99 {driver_p99:.1} ms: p99 ratio {:.2} (goal <= 2{goal}); driver alone while the same records are produced p50 {loaded_p50:.1} ms, p99 {loaded_p99:.1} ms\n          Kafka alone at that rate (broker append -> a consumer with the runner's settings) p50 {kafka_p50:.0} ms, p99 {kafka_p99:.0} ms\n          machine while the runner ran: {:.0} % busy (broker {:.2}, Cassandra {:.2} cores), the runner {:.2} cores and its threads waited {:.0} ms per second for one; while the driver ran under the producer's load: {:.0} % busy (broker {:.2} cores)",
        if realtime {
            " (the runner at real-time priority, a diagnostic)"
        } else {
            ""
        },
        writes.first().copied().unwrap_or_default() * 1000.0,
        writes.get(1).copied().unwrap_or_default() * 1000.0,
        rss as f64 / 1024.0,
        end_to_end_p99 / driver_p99.max(0.001),
        machine.busy_share * 100.0,
        machine.kafka_seconds / window,
        machine.cassandra_seconds / window,
        runner_cores,
        waited / window * 1000.0,
        loaded_machine.busy_share * 100.0,
        loaded_machine.kafka_seconds / loaded_machine.seconds,
    );
}

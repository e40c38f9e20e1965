//! Shared by the runner's integration tests: a Pipeline on the local stack with unique
//! topics and keyspace, runner child processes, and readers of what landed in Kafka and
//! Cassandra.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rtdp_crds::{Pipeline, RecordCounts, parse_pipeline};
use rtdp_test_support::process::Process;
use rtdp_test_support::{
    cassandra_contact_points, cassandra_session, eventually, kafka_bootstrap_servers,
    unique_cql_identifier, unique_name,
};
use scylla::client::session::Session;
use scylla::value::{CqlValue, Row};

/// The property-listings example, pointed at the local stack, with unique names.
pub(crate) fn listings_pipeline(prefix: &str) -> Pipeline {
    let text = include_str!("../../../../examples/property-listings.yaml");
    let mut pipeline = parse_pipeline(text, "property-listings.yaml").expect("the example parses");
    let name = unique_name(prefix);
    pipeline.metadata.name = Some(name.clone());
    pipeline.metadata.namespace = Some("tests".into());
    pipeline.spec.topic.name = Some(name);
    pipeline.spec.topic.partitions = 3;
    pipeline.spec.kafka.bootstrap_servers = vec![kafka_bootstrap_servers()];
    pipeline.spec.cassandra.contact_points = cassandra_contact_points();
    pipeline.spec.cassandra.keyspace.name = unique_cql_identifier(prefix);
    pipeline
}

/// A Kafka client configuration for the pipeline's bootstrap servers.
pub(crate) fn kafka_config(pipeline: &Pipeline) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set(
        "bootstrap.servers",
        pipeline.spec.kafka.bootstrap_servers.join(","),
    );
    config
}

/// Writes the manifest where a runner process can read it.
pub(crate) fn write_manifest(pipeline: &Pipeline) -> PathBuf {
    // Under the target directory (cargo cleans it), never loose in /tmp.
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}.yaml",
        pipeline.metadata.name.as_deref().unwrap_or("pipeline")
    ));
    let text = serde_yaml_ng::to_string(pipeline).expect("the pipeline serializes");
    std::fs::write(&path, text).expect("writing the manifest");
    path
}

/// Creates the topics, keyspace and tables with the shared provisioning code.
pub(crate) async fn provision(pipeline: &Pipeline) {
    let admin = rtdp_provisioning::kafka::admin_client(
        &pipeline.spec.kafka.bootstrap_servers.join(","),
        &BTreeMap::new(),
    )
    .expect("a Kafka admin client");
    rtdp_provisioning::kafka::ensure_topics(&admin, pipeline)
        .await
        .expect("creating the topics");
    let session = cassandra().await;
    rtdp_provisioning::cassandra::ensure_schema(&session, pipeline)
        .await
        .expect("creating the schema");
}

/// A Cassandra session on the local stack.
pub(crate) async fn cassandra() -> Session {
    cassandra_session().await
}

/// A `pipeline-runner` child process, killed when dropped; its stderr goes to a log file
/// that failures print.
pub(crate) struct Runner {
    process: Process,
    pub(crate) log: PathBuf,
}

impl Runner {
    /// Starts `pipeline-runner ARGS... --file MANIFEST` with the test's secrets.
    pub(crate) fn start(arguments: &[&str], manifest: &Path, extra_env: &[(&str, &str)]) -> Self {
        let role = arguments.first().copied().unwrap_or("runner");
        let log = manifest.with_extension(format!("{role}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"));
        command
            .args(arguments)
            .arg("--file")
            .arg(manifest)
            .env("RTDP_HTTP_HEADER_X_RAPIDAPI_KEY", "test-key")
            .env("RTDP_METRICS_ADDRESS", "127.0.0.1:0")
            .env("RUST_LOG", "info,pipeline_runner=debug");
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let process = Process::spawn("the runner", command, &log);
        Self { process, log }
    }

    /// Waits for the process to exit by itself.
    pub(crate) fn wait(mut self, timeout: Duration) -> ExitStatus {
        self.process.wait(timeout)
    }

    /// Sends SIGTERM (what Kubernetes does) and waits for the exit.
    pub(crate) fn terminate(mut self, timeout: Duration) -> ExitStatus {
        self.process.terminate(timeout)
    }

    /// SIGKILL: no chance to finish anything.
    pub(crate) fn kill(mut self) {
        self.process.kill();
    }

    /// The log so far.
    pub(crate) fn log_text(&self) -> String {
        self.process.log_text()
    }
}

/// Every row of a table, each as column name → value.
pub(crate) async fn read_rows(
    session: &Session,
    table: &str,
) -> Vec<BTreeMap<String, Option<CqlValue>>> {
    let result = session
        .query_unpaged(format!("SELECT * FROM {table}"), ())
        .await
        .unwrap_or_else(|error| panic!("reading {table}: {error}"))
        .into_rows_result()
        .expect("a rows result");
    let names: Vec<String> = result
        .column_specs()
        .iter()
        .map(|spec| spec.name().to_string())
        .collect();
    result
        .rows::<Row>()
        .expect("typed rows")
        .map(|row| {
            let row = row.expect("a row");
            names.iter().cloned().zip(row.columns).collect()
        })
        .collect()
}

/// Rows of a table keyed by a bigint column.
pub(crate) async fn rows_by(
    session: &Session,
    table: &str,
    key: &str,
) -> BTreeMap<i64, BTreeMap<String, Option<CqlValue>>> {
    read_rows(session, table)
        .await
        .into_iter()
        .map(|row| {
            let Some(Some(CqlValue::BigInt(id))) = row.get(key) else {
                panic!("row without a bigint {key}: {row:?}")
            };
            (*id, row)
        })
        .collect()
}

/// A dead letter as read back from the dead-letter topic.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub(crate) headers: HashMap<String, String>,
    pub(crate) payload: Option<Vec<u8>>,
}

/// Reads `count` records of the dead-letter topic (fails after a timeout).
pub(crate) async fn read_dead_letters(pipeline: &Pipeline, count: usize) -> Vec<DeadLetter> {
    let consumer: StreamConsumer = kafka_config(pipeline)
        .set("group.id", unique_name("dead-letter-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    consumer
        .subscribe(&[pipeline.dead_letter_topic_name().as_str()])
        .expect("subscribing to the dead-letter topic");
    let mut letters = Vec::new();
    while letters.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {count} dead letters arrived: {letters:?}",
                    letters.len()
                )
            })
            .expect("consuming a dead letter");
        let mut headers = HashMap::new();
        if let Some(record_headers) = message.headers() {
            for header in record_headers.iter() {
                headers.insert(
                    header.key.to_string(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        letters.push(DeadLetter {
            headers,
            payload: message.payload().map(<[u8]>::to_vec),
        });
    }
    letters
}

/// The group's committed offset and the end offset of every partition of the topic.
pub(crate) fn committed_and_end(pipeline: &Pipeline) -> Vec<(i32, Option<i64>, i64)> {
    let topic = pipeline.topic_name();
    let consumer: BaseConsumer = kafka_config(pipeline)
        .set("group.id", pipeline.consumer_group())
        .create()
        .expect("a consumer");
    let timeout = Duration::from_secs(10);
    let mut partitions = TopicPartitionList::new();
    for partition in 0..pipeline.spec.topic.partitions {
        partitions.add_partition(&topic, partition);
    }
    let committed = consumer
        .committed_offsets(partitions, timeout)
        .expect("reading committed offsets");
    (0..pipeline.spec.topic.partitions)
        .map(|partition| {
            let (_, high) = consumer
                .fetch_watermarks(&topic, partition, timeout)
                .expect("reading watermarks");
            let committed = match committed
                .find_partition(&topic, partition)
                .map(|element| element.offset())
            {
                Some(Offset::Offset(offset)) => Some(offset),
                _ => None,
            };
            (partition, committed, high)
        })
        .collect()
}

/// Waits until the group committed the end of every partition (that has records): every
/// record processed, none skipped; fails with the last offsets seen.
pub(crate) async fn wait_offsets_at_end(pipeline: &Pipeline, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let offsets = committed_and_end(pipeline);
        if offsets
            .iter()
            .all(|(_, committed, end)| *end == 0 || *committed == Some(*end))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the committed offsets did not reach the end offsets within {timeout:?}: (partition, committed, end) {offsets:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `price` of every row of a table keyed by `zpid`: the latest value per listing.
pub(crate) async fn prices_by_zpid(session: &Session, table: &str) -> BTreeMap<i64, i64> {
    rows_by(session, table, "zpid")
        .await
        .iter()
        .filter_map(|(zpid, row)| match row.get("price") {
            Some(Some(CqlValue::BigInt(price))) => Some((*zpid, *price)),
            _ => None,
        })
        .collect()
}

/// Waits until the table holds exactly `expected` (zpid → price).
pub(crate) async fn wait_for_prices(
    session: &Session,
    table: &str,
    expected: &BTreeMap<i64, i64>,
    timeout: Duration,
) {
    eventually("every listing with its latest price", timeout, || async {
        (prices_by_zpid(session, table).await == *expected).then_some(())
    })
    .await;
}

/// Waits until the table holds at least `count` rows.
pub(crate) async fn wait_for_rows(session: &Session, table: &str, count: usize, timeout: Duration) {
    eventually(&format!("{count} rows in {table}"), timeout, || async {
        (read_rows(session, table).await.len() >= count).then_some(())
    })
    .await;
}

/// Asserts the group committed exactly the end of every partition: nothing skipped, nothing
/// left behind.
pub(crate) fn assert_offsets_at_end(pipeline: &Pipeline) {
    for (partition, committed, end) in committed_and_end(pipeline) {
        if end == 0 {
            continue;
        }
        assert_eq!(
            committed,
            Some(end),
            "partition {partition}: committed offset should be the end offset"
        );
    }
}

/// The records the processors finished, by outcome, summed from the progress they committed
/// with each partition's offset (what the operator reports as `status.freshness.records`).
pub(crate) fn records_finished(pipeline: &Pipeline) -> RecordCounts {
    let topic = pipeline.topic_name();
    let consumer: BaseConsumer = kafka_config(pipeline)
        .set("group.id", pipeline.consumer_group())
        .create()
        .expect("a consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..pipeline.spec.topic.partitions {
        partitions.add_partition(&topic, partition);
    }
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("reading committed offsets");
    committed
        .elements()
        .iter()
        .map(|element| rtdp_provisioning::kafka::committed_progress(element).records)
        .fold(RecordCounts::default(), RecordCounts::plus)
}

/// Moves the group back to the beginning of every partition (the group must be empty).
pub(crate) fn reset_group_to_beginning(pipeline: &Pipeline) {
    let topic = pipeline.topic_name();
    let consumer: BaseConsumer = kafka_config(pipeline)
        .set("group.id", pipeline.consumer_group())
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut offsets = TopicPartitionList::new();
    for partition in 0..pipeline.spec.topic.partitions {
        offsets
            .add_partition_offset(&topic, partition, Offset::Offset(0))
            .expect("an offset");
    }
    consumer
        .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
        .expect("committing offset 0 for the group");
}

/// An idempotent producer for raw test records.
pub(crate) fn producer(pipeline: &Pipeline) -> FutureProducer {
    kafka_config(pipeline)
        .set("enable.idempotence", "true")
        .create()
        .expect("a producer")
}

/// Produces one raw record (key, payload) and waits for the ack.
pub(crate) async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: Option<&[u8]>,
) {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .unwrap_or_else(|(error, _)| panic!("producing {key}: {error}"));
}

/// Listing `index` of the listings API's generator with its price set: (key, the zpid as
/// text; payload).
pub(crate) fn listing_with_price(index: usize, price: i64) -> (String, String) {
    let mut listing = rtdp_test_support::listings_api::listing(index);
    listing["price"] = serde_json::Value::from(price);
    (listing["zpid"].to_string(), listing.to_string())
}

/// Rounds of updates of the same `keys` listings, for the tests of the latest value: round `r`
/// sets each listing's price to 100 000 + r, so the last round produced is the latest value.
#[derive(Clone)]
pub(crate) struct PriceRounds {
    producer: FutureProducer,
    topic: String,
    keys: i64,
}

impl PriceRounds {
    /// Rounds of `keys` listings into the pipeline's topic.
    pub(crate) fn new(pipeline: &Pipeline, keys: i64) -> Self {
        Self {
            producer: producer(pipeline),
            topic: pipeline.topic_name(),
            keys,
        }
    }

    /// Produces the rounds `rounds`, each acknowledged, pausing `pause` after each round.
    pub(crate) async fn send(self, rounds: std::ops::Range<i64>, pause: Duration) {
        for round in rounds {
            for key in 0..self.keys {
                let (zpid, payload) = listing_with_price(key as usize, 100_000 + round);
                produce(&self.producer, &self.topic, &zpid, Some(payload.as_bytes())).await;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// What the table holds once `rounds` rounds are processed: zpid → the last round's price.
    pub(crate) fn latest(&self, rounds: i64) -> BTreeMap<i64, i64> {
        (0..self.keys)
            .map(|key| {
                let (zpid, _) = listing_with_price(key as usize, 0);
                (zpid.parse().expect("a numeric zpid"), 100_000 + rounds - 1)
            })
            .collect()
    }
}

/// Every row of every table the pipeline owns (the state table without its write times,
/// which a replay moves on purpose), each as text, sorted: two runs compare equal when they
/// left exactly the same rows.
pub(crate) async fn every_row(
    session: &Session,
    pipeline: &Pipeline,
) -> BTreeMap<String, Vec<String>> {
    let keyspace = &pipeline.spec.cassandra.keyspace.name;
    let mut tables: Vec<(String, String)> = pipeline
        .spec
        .cassandra
        .tables
        .iter()
        .map(|table| (table.name.clone(), table.name.clone()))
        .collect();
    if let Some(state) = pipeline.identity_state_table() {
        tables.push(("identity state".to_string(), state));
    }
    let mut all = BTreeMap::new();
    for (label, table) in tables {
        let mut rows: Vec<String> = read_rows(session, &format!("{keyspace}.{table}"))
            .await
            .into_iter()
            .map(|mut row| {
                row.remove(rtdp_provisioning::cassandra::STATE_WRITE_TIME);
                format!("{row:?}")
            })
            .collect();
        rows.sort();
        all.insert(label, rows);
    }
    all
}

/// The same Pipeline reading the same topic into a keyspace and a dead-letter topic of its
/// own, under another name (so another consumer group): a clean run to compare with.
pub(crate) fn clean_twin(pipeline: &Pipeline, prefix: &str) -> Pipeline {
    let mut twin = listings_pipeline(prefix);
    twin.spec = pipeline.spec.clone();
    twin.spec.cassandra.keyspace.name = unique_cql_identifier(prefix);
    twin.spec.topic.dead_letter.name = Some(format!(
        "{}.dlq",
        twin.metadata.name.as_deref().unwrap_or("clean")
    ));
    twin
}

/// Runs the process role over everything in the topic, then stops it.
pub(crate) async fn process_everything(pipeline: &Pipeline) {
    let manifest = write_manifest(pipeline);
    let process = Runner::start(&["process"], &manifest, &[]);
    wait_offsets_at_end(pipeline, Duration::from_secs(120)).await;
    let log = process.log_text();
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}; log:\n{log}");
}

/// Every record of `topic` (all its partitions, from the beginning to the end offsets as they
/// are now), in each partition's order; fails after 60 s naming what is missing.
pub(crate) fn read_topic_to_end(pipeline: &Pipeline, topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = kafka_config(pipeline)
        .set("group.id", unique_name("topic-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .unwrap_or_else(|error| panic!("reading topic {topic}'s metadata: {error}"));
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for partition in metadata
        .topics()
        .iter()
        .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
    {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .unwrap_or_else(|error| panic!("reading topic {topic}'s watermarks: {error}"));
        if high > low {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("assigning a partition");
            remaining.insert(partition, high);
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return records;
    }
    consumer.assign(&assignment).expect("assigning the topic");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "topic {topic} was not read to its end: {remaining:?} left"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.expect("reading a record").detach();
        if remaining
            .get(&message.partition())
            .is_some_and(|high| message.offset() + 1 >= *high)
        {
            remaining.remove(&message.partition());
        }
        records.push(message);
    }
    records
}

/// Every dead letter in the pipeline's dead-letter topic as (original partition, original
/// offset, reason): a set, since a crash may dead-letter a record again (at least once, like
/// every write).
pub(crate) fn dead_letter_set(pipeline: &Pipeline) -> BTreeSet<(String, String, String)> {
    read_topic_to_end(pipeline, &pipeline.dead_letter_topic_name())
        .iter()
        .map(|letter| {
            let header = |name: &str| {
                letter
                    .headers()
                    .and_then(|headers| {
                        headers
                            .iter()
                            .find(|header| header.key == name)
                            .and_then(|header| header.value)
                    })
                    .map(|value| String::from_utf8_lossy(value).into_owned())
                    .unwrap_or_default()
            };
            (
                header("rtdp.original.partition"),
                header("rtdp.original.offset"),
                header("rtdp.reason"),
            )
        })
        .collect()
}

/// Asserts that every row of every table and every dead letter of `pipeline` (whose
/// processors have finished the topic) are what a clean run of the same spec over the same
/// records leaves: a twin processes the whole topic into its own keyspace and dead-letter
/// topic, and both are compared.
pub(crate) async fn assert_same_as_a_clean_run(
    session: &Session,
    pipeline: &Pipeline,
    after: &str,
) {
    let clean = clean_twin(pipeline, "clean");
    provision(&clean).await;
    process_everything(&clean).await;
    let tables = every_row(session, pipeline).await;
    assert!(
        tables.values().any(|rows| !rows.is_empty()),
        "{after}: the tables hold rows"
    );
    assert_eq!(
        tables,
        every_row(session, &clean).await,
        "{after}: every row of every table is what a clean run of the same records left"
    );
    assert_eq!(
        dead_letter_set(pipeline),
        dead_letter_set(&clean),
        "{after}: the dead letters are those of a clean run"
    );
}

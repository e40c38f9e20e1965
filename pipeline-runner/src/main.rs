//! `pipeline-runner`: runs the roles of a Pipeline manifest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pipeline_runner::connect::EndpointOverrides;
use pipeline_runner::error::RunnerError;
use pipeline_runner::ingest::{self, IngestOptions};
use pipeline_runner::process::{self, ProcessOptions};
use pipeline_runner::record::RecordParser;
use pipeline_runner::shutdown;
use pipeline_runner::standalone::{self, StandaloneOptions};
use pipeline_runner::telemetry::{self, Health, Metrics};
use pipeline_runner::transform::Transforms;
use rtdp_crds::Pipeline;
use rtdp_crds::template::Interval;
use rtdp_provisioning::cassandra::{keyspace_cql, schema_tables};
use rtdp_provisioning::kafka::topic_definitions;
use tokio::sync::watch;

/// The RTDP data plane: moves a Pipeline's records from its source through Kafka into
/// Cassandra. Each role reads the same Pipeline manifest the operator reconciles.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a Pipeline manifest without connecting anywhere: parse it, compile its schema,
    /// derived fields and filter, and print the topics and Cassandra DDL it declares.
    Validate {
        /// The Pipeline manifest (YAML; other documents in the file are skipped).
        #[arg(short = 'f', long = "file", value_name = "PIPELINE_YAML")]
        file: PathBuf,
    },
    /// Pull records from the Pipeline's source (HTTP API or generator) into its topic, with
    /// an idempotent producer (acks=all).
    Ingest {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Consume the topic in the Pipeline's consumer group, parse and transform each record,
    /// write it to every table, dead-letter what cannot be written. Offsets are stored only
    /// after Cassandra acknowledged the record and every earlier one of its partition.
    /// SIGTERM finishes in-flight writes, commits and exits 0.
    Process {
        #[command(flatten)]
        run: RunArgs,
    },
    /// No Kubernetes: create the topics, keyspace and tables, then run ingest and process in
    /// one process (like Kafka Connect's standalone mode), with live progress on a terminal.
    Standalone {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        pass: PassArgs,
        /// Do not draw the progress line.
        #[arg(long)]
        no_progress: bool,
    },
    /// Run one CQL query against the Pipeline's Cassandra and print the rows as a table
    /// (e.g. `SELECT city, price FROM real_estate.listings_by_city PER PARTITION LIMIT 5`).
    Query {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// The CQL statement.
        cql: String,
    },
}

/// The manifest and where its Cassandra is: what every command that reaches the tables needs.
#[derive(Debug, Args)]
struct ManifestArgs {
    /// The Pipeline manifest (YAML; other documents in the file are skipped).
    #[arg(short = 'f', long = "file", value_name = "PIPELINE_YAML")]
    file: PathBuf,
    /// Cassandra contact points (host:port,...) instead of the manifest's.
    #[arg(
        long,
        env = "RTDP_CASSANDRA_CONTACT_POINTS",
        value_name = "HOST:PORT,..."
    )]
    cassandra_contact_points: Option<String>,
}

/// Flags shared by the roles that connect to servers.
#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Kafka bootstrap servers (host:port,...) instead of the manifest's.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "RTDP_KAFKA_BOOTSTRAP_SERVERS",
        value_name = "HOST:PORT,..."
    )]
    kafka_bootstrap_servers: Option<String>,
    /// The HTTP source's URL instead of the manifest's (a local or staging API).
    #[arg(long, env = "RTDP_SOURCE_URL", value_name = "URL")]
    source_url: Option<String>,
    /// Where to serve /metrics, /healthz and /readyz (port 0 picks a free one).
    #[arg(
        long,
        env = "RTDP_METRICS_ADDRESS",
        default_value = "0.0.0.0:9090",
        value_name = "ADDRESS:PORT"
    )]
    metrics_address: SocketAddr,
    /// Log format.
    #[arg(long, env = "RTDP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (what log collectors want).
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (run, default_level) = match &cli.command {
        Command::Validate { file } => {
            return match validate(file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("pipeline-runner: {error:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Query { .. } => {
            init_logging(LogFormat::Text, "warn");
            let runtime = match start_runtime(&mut tokio::runtime::Builder::new_current_thread()) {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            return match runtime.block_on(query(cli.command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("pipeline-runner: {error}");
                    error.exit_code()
                }
            };
        }
        Command::Standalone { run, .. } => (run, "warn"),
        Command::Ingest { run, .. } | Command::Process { run } => (run, "info"),
    };
    init_logging(run.log_format, default_level);
    // The process role runs on one thread. Its work is a stream of small steps (take a record,
    // parse it, hand its writes to the driver, take the acks) between its loop and the
    // Cassandra connections' tasks; on a multi-threaded runtime each hand-over woke another
    // thread, and those wake-ups cost more CPU than the records' own work (a third of the
    // process's CPU in a profile). On one thread, `make bench` measured 15.2 instead of
    // 23.8 µs of CPU per record, and 0.92 instead of 0.66 of the driver-alone ceiling. A
    // processor then uses at most one core: it scales with replicas and partitions, as Kafka
    // consumers do.
    let mut builder = if matches!(cli.command, Command::Process { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match start_runtime(&mut builder) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(run_role(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(reason = error.reason(), %error, "stopped");
            eprintln!("pipeline-runner: {error}");
            error.exit_code()
        }
    }
}

/// How much ingest does: one pass or continuously, and for which interval.
#[derive(Debug, clap::Args)]
struct PassArgs {
    /// One pass over the HTTP source's pages (or the generator's totalRecords), then exit:
    /// 0 when every page was ingested, 3 when some failed after their retries, 1 when nothing
    /// could be ingested (what the CronJob of a scheduled source runs). Standalone: also
    /// process everything ingested, print a report and exit.
    #[arg(long)]
    once: bool,
    /// The logical interval the request templates (`{{ interval.start }}`...) are filled in
    /// with, `FROM..TO` in RFC 3339, e.g. `2026-11-26T00:00:00Z..2026-11-27T00:00:00Z`:
    /// re-runs or backfills one interval. Default: a scheduled source's latest schedule
    /// interval, a polling source's time since its previous pass.
    #[arg(long, value_parser = parse_interval)]
    interval: Option<Interval>,
    /// Runs each interval of the source's schedule within `FROM..TO` (RFC 3339), one pass
    /// each, in order, then exits (implies --once): Airflow's backfill. A failed interval is
    /// reported and the next one runs; exit 3 when any failed. Re-running an interval stores
    /// the same rows (keys and record timestamps make the writes idempotent).
    #[arg(long, value_parser = parse_interval, conflicts_with = "interval")]
    backfill: Option<Interval>,
}

/// `--interval FROM..TO`.
fn parse_interval(text: &str) -> Result<Interval, String> {
    Interval::parse(text)
}

/// The async runtime, or the exit code after saying why there is none.
fn start_runtime(
    builder: &mut tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|error| {
        eprintln!("pipeline-runner: starting the async runtime: {error}");
        ExitCode::from(1)
    })
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// What every connected role starts with.
struct Started {
    pipeline: Pipeline,
    overrides: EndpointOverrides,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
}

async fn start(run: &RunArgs) -> Result<Started, RunnerError> {
    let pipeline = rtdp_crds::load_pipeline(&run.manifest.file)?;
    RecordParser::new(&pipeline.spec.schema)
        .map_err(|error| RunnerError::Config(error.to_string()))?;
    Transforms::new(&pipeline.spec.schema)
        .map_err(|error| RunnerError::Config(error.to_string()))?;
    let name = format!(
        "{}/{}",
        pipeline.namespace_or_default(),
        pipeline.metadata.name.clone().unwrap_or_default()
    );
    let metrics = Arc::new(Metrics::new(&name));
    let health = Arc::new(Health::default());
    let listener = telemetry::bind(run.metrics_address).await?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    }
    telemetry::serve(listener, Arc::clone(&metrics), Arc::clone(&health));
    Ok(Started {
        pipeline,
        overrides: EndpointOverrides {
            kafka_bootstrap_servers: run.kafka_bootstrap_servers.clone(),
            cassandra_contact_points: run.manifest.cassandra_contact_points.clone(),
            source_url: run.source_url.clone(),
        },
        metrics,
        health,
        shutdown: shutdown::on_signal(),
    })
}

async fn run_role(command: Command) -> Result<ExitCode, RunnerError> {
    match command {
        Command::Validate { .. } | Command::Query { .. } => Ok(ExitCode::SUCCESS),
        Command::Ingest {
            run,
            pass:
                PassArgs {
                    once,
                    interval,
                    backfill,
                },
        } => {
            let started = start(&run).await?;
            let intervals = ingest::planned_intervals(&started.pipeline, interval, backfill)?;
            let report = ingest::run(
                &started.pipeline,
                IngestOptions {
                    overrides: started.overrides,
                    once: once || !intervals.is_empty(),
                    intervals,
                    shutdown: started.shutdown,
                    metrics: started.metrics,
                    health: started.health,
                },
            )
            .await?;
            tracing::info!(
                records = report.records,
                pages = report.pages,
                failures = report.failures,
                "ingest finished"
            );
            if report.runs.len() > 1 {
                // The runs of a backfill or a catch-up, one line per interval.
                for run in &report.runs {
                    println!("{run}");
                }
            }
            if report.is_partial() {
                eprintln!(
                    "pipeline-runner: ingest finished with {} failures: {}",
                    report.failures,
                    report.first_error.as_deref().unwrap_or("unknown")
                );
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Process { run } => {
            let started = start(&run).await?;
            let (_stop_sender, stop_at) = watch::channel(None);
            process::run(
                &started.pipeline,
                ProcessOptions {
                    overrides: started.overrides,
                    shutdown: started.shutdown,
                    stop_at,
                    metrics: started.metrics,
                    health: started.health,
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Standalone {
            run,
            pass:
                PassArgs {
                    once,
                    interval,
                    backfill,
                },
            no_progress,
        } => {
            let started = start(&run).await?;
            let intervals = ingest::planned_intervals(&started.pipeline, interval, backfill)?;
            let report = standalone::run(
                &started.pipeline,
                StandaloneOptions {
                    progress: !no_progress,
                    once: once || !intervals.is_empty(),
                    intervals,
                    overrides: started.overrides,
                    shutdown: started.shutdown,
                    metrics: started.metrics,
                    health: started.health,
                },
            )
            .await?;
            println!("{report}");
            let partial = report
                .ingest
                .as_ref()
                .is_some_and(|ingest| ingest.is_partial());
            Ok(if partial {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

async fn query(command: Command) -> Result<(), RunnerError> {
    let Command::Query {
        manifest: ManifestArgs {
            file,
            cassandra_contact_points,
        },
        cql,
    } = command
    else {
        return Ok(());
    };
    let pipeline = rtdp_crds::load_pipeline(&file)?;
    let overrides = EndpointOverrides {
        cassandra_contact_points,
        ..EndpointOverrides::default()
    };
    let session =
        pipeline_runner::connect::cassandra_session(&pipeline.spec.cassandra, &overrides).await?;
    let failed = |error: &dyn std::fmt::Display| RunnerError::CassandraUnavailable {
        context: format!("running {cql:?}"),
        message: error.to_string(),
    };
    let result = session
        .query_unpaged(cql.as_str(), ())
        .await
        .map_err(|error| failed(&error))?;
    let rows = result.into_rows_result().map_err(|error| failed(&error))?;
    let header: Vec<String> = rows
        .column_specs()
        .iter()
        .map(|spec| spec.name().to_string())
        .collect();
    let mut table: Vec<Vec<String>> = vec![header];
    for row in rows
        .rows::<scylla::value::Row>()
        .map_err(|error| failed(&error))?
    {
        let row = row.map_err(|error| failed(&error))?;
        table.push(
            row.columns
                .iter()
                .map(|value| render(value.as_ref()))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|column| {
            table
                .iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (index, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
        if index == 0 {
            let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
            println!("{}", rule.join("  "));
        }
    }
    println!("({} rows)", table.len() - 1);
    Ok(())
}

fn render(value: Option<&scylla::value::CqlValue>) -> String {
    use scylla::value::CqlValue;
    match value {
        None => "null".to_string(),
        Some(CqlValue::Text(text) | CqlValue::Ascii(text)) => text.clone(),
        Some(CqlValue::Double(number)) => format!("{number:.2}"),
        Some(CqlValue::Float(number)) => format!("{number:.2}"),
        Some(CqlValue::Int(number)) => number.to_string(),
        Some(CqlValue::BigInt(number)) => number.to_string(),
        Some(CqlValue::Boolean(flag)) => flag.to_string(),
        Some(other) => format!("{other:?}"),
    }
}

fn validate(file: &Path) -> anyhow::Result<()> {
    let pipeline = rtdp_crds::load_pipeline(file)?;
    RecordParser::new(&pipeline.spec.schema)?;
    Transforms::new(&pipeline.spec.schema)?;
    println!("# {} is valid", file.display());
    for topic in topic_definitions(&pipeline) {
        println!(
            "# topic {} (partitions {}, replication factor {})",
            topic.name, topic.partitions, topic.replication_factor
        );
    }
    println!("{};", keyspace_cql(&pipeline.spec.cassandra.keyspace));
    // The declared tables and the identity's state table: what provisioning creates.
    for table in schema_tables(&pipeline) {
        println!("{};", table.create_cql());
    }
    Ok(())
}

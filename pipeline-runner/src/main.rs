//! `pipeline-runner`: runs the roles of a Pipeline manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pipeline_runner::record::RecordParser;
use pipeline_runner::transform::Transforms;
use rtdp_provisioning::cassandra::{keyspace_cql, table_definitions};
use rtdp_provisioning::kafka::topic_definitions;

/// The RTDP data plane: moves a Pipeline's records from its source through Kafka into
/// Cassandra.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => match validate(&file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("pipeline-runner: {error:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn validate(file: &std::path::Path) -> anyhow::Result<()> {
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
    for table in table_definitions(&pipeline.spec) {
        println!("{};", table.create_cql());
    }
    Ok(())
}

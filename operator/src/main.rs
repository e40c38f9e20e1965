//! `rtdp-operator`: watches Pipelines and makes the world match each one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use kube::runtime::events::Reporter;
use rtdp_operator::controller::{self, Context, Settings};
use rtdp_operator::events::EventRecorders;
use rtdp_operator::leader::{LeaderElector, LeaseSettings};
use rtdp_operator::metrics::{self, Metrics};
use rtdp_operator::resources::BuildContext;
use tokio::sync::watch;

/// The RTDP operator: reconciles Pipelines into Kafka topics, Cassandra schema and runner
/// workloads.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// What to do; without a command, run the operator.
    #[command(subcommand)]
    command: Option<Command>,

    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long, env = "RTDP_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,

    /// Where to serve /metrics and /healthz.
    #[arg(long, env = "RTDP_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,

    /// Where to serve the validating admission webhook (HTTPS), when --webhook-cert-dir is set.
    #[arg(long, env = "RTDP_WEBHOOK_ADDRESS", default_value = "0.0.0.0:9443")]
    webhook_address: SocketAddr,

    /// The directory holding the webhook's tls.crt and tls.key (re-read when they change);
    /// without it the webhook is off.
    #[arg(long, env = "RTDP_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<PathBuf>,

    /// How often the webhook's certificate files are checked for changes, in seconds.
    #[arg(long, default_value_t = 30)]
    webhook_cert_reload_seconds: u64,

    /// The pipeline-runner image for Pipelines that do not set spec.runner.image.
    #[arg(
        long,
        env = "RTDP_RUNNER_IMAGE",
        default_value = "ghcr.io/rtdp-dev/pipeline-runner:0.1.0"
    )]
    runner_image: String,

    /// The namespace of the leader election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,

    /// The name of the leader election Lease.
    #[arg(long, env = "RTDP_LEASE_NAME", default_value = "rtdp-operator")]
    lease_name: String,

    /// Create the Lease when it does not exist. The Helm chart creates it (so that
    /// `helm uninstall` removes it) and passes `--create-lease=false`.
    #[arg(long, env = "RTDP_CREATE_LEASE", default_value_t = true, action = clap::ArgAction::Set)]
    create_lease: bool,

    /// This replica's identity in the Lease; defaults to the pod name (or host) and the pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// The field manager of server-side applies.
    #[arg(long, default_value = "rtdp-operator")]
    field_manager: String,

    /// Reconciles running at once.
    #[arg(long, env = "RTDP_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,

    /// How often a healthy Pipeline is reconciled anyway, in seconds (to set drift in Kafka
    /// and Cassandra back).
    #[arg(long, env = "RTDP_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,

    /// How often each Pipeline's freshness (consumer lag, last stored record) is read from
    /// Kafka and written to its status, in seconds.
    #[arg(long, env = "RTDP_FRESHNESS_PERIOD_SECONDS", default_value_t = 30)]
    freshness_period_seconds: u64,

    /// Attempts at dropping a deleted Pipeline's topics and tables before the deletion is
    /// reported as blocked (with how to release it).
    #[arg(long, env = "RTDP_CLEANUP_ATTEMPTS", default_value_t = 5)]
    cleanup_attempts: u32,

    /// The longest retry delay after transient errors, in seconds.
    #[arg(long, default_value_t = 300)]
    max_backoff_seconds: u64,

    /// Log format: json (structured, the default) or text.
    #[arg(long, env = "RTDP_LOG_FORMAT", default_value = "json", global = true)]
    log_format: LogFormat,

    /// Tests only: pause every reconcile after this step (to restart the operator mid-way).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    test_pause_after: Option<controller::Step>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints what applying a Pipeline manifest would do (the Pipeline's spec changes, topics,
    /// CQL statements, owned objects, and what would be refused), changing nothing; exits 1
    /// when something would be refused. Reads Kafka and Cassandra with the Pipeline's own
    /// settings and Secrets, so run it where they are reachable (e.g. `kubectl exec` into the
    /// operator with `-f -`). As a kubectl plugin: link the binary as `kubectl-rtdp` and run
    /// `kubectl rtdp plan -f pipeline.yaml`.
    Plan {
        /// The manifest; `-` reads standard input.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// The namespace, when the manifest names none (default: the kubeconfig's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Exits 1, saying what to do, while Pipelines exist in the served namespaces: the Helm
    /// chart's pre-delete hook, so that `helm uninstall` does not orphan them.
    UninstallCheck {
        /// The Helm release, for the commands the message suggests.
        #[arg(long, default_value = "rtdp")]
        release: String,
        /// The release's namespace.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        release_namespace: String,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    match &args.command {
        Some(Command::UninstallCheck {
            release,
            release_namespace,
        }) => return uninstall_check(&args, release, release_namespace).await,
        Some(Command::Plan { file, namespace }) => {
            return plan(&args, file, namespace.as_deref()).await;
        }
        None => {}
    }

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let metrics = Arc::new(Metrics::new());
    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(signals(stop_sender));

    let listener = metrics::bind(args.metrics_address).await?;
    tracing::info!(address = %args.metrics_address, "serving /metrics and /healthz");
    tokio::spawn(metrics::serve(
        listener,
        Arc::clone(&metrics),
        stopped(stop.clone()),
    ));

    // Every replica serves the webhook, the standbys too: admission must not wait for an
    // election.
    if let Some(directory) = &args.webhook_cert_dir {
        let listener = rtdp_operator::webhook::bind(
            args.webhook_address,
            directory,
            Duration::from_secs(args.webhook_cert_reload_seconds.max(1)),
        )
        .await?;
        tracing::info!(
            address = %args.webhook_address,
            certificates = %directory.display(),
            "serving the admission webhook at {}",
            rtdp_operator::webhook::PATH
        );
        tokio::spawn(rtdp_operator::webhook::serve(
            listener,
            stopped(stop.clone()),
        ));
    }

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API server (in-cluster config or KUBECONFIG)")?;

    let elector = Arc::new(LeaderElector::new(
        client.clone(),
        LeaseSettings {
            create: args.create_lease,
            ..LeaseSettings::new(
                args.leader_election_namespace.clone(),
                args.lease_name.clone(),
                identity.clone(),
            )
        },
    ));
    let settings = Settings {
        field_manager: args.field_manager.clone(),
        build: BuildContext {
            default_image: args.runner_image.clone(),
        },
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(args.max_backoff_seconds.max(1)),
        cleanup_attempts: args.cleanup_attempts.max(1),
        concurrency: args.concurrency,
        freshness_period: Duration::from_secs(args.freshness_period_seconds.max(1)),
        #[cfg(feature = "test-hooks")]
        test_hooks: controller::test_hooks::TestHooks {
            pause_after: args.test_pause_after,
        },
    };
    let namespaces = served_namespaces(&args);

    // Lead, or stand by until the Lease can be had; a lost Lease (another replica took it, or
    // the API server was unreachable for longer than the renew deadline) stops the controller
    // at once and goes back to standing by, without a restart: an API server outage does not
    // turn into a crash loop.
    loop {
        tokio::select! {
            () = elector.acquire() => {}
            () = stopped(stop.clone()) => {
                tracing::info!("stopped before becoming the leader");
                return Ok(());
            }
        }
        metrics.set_leader(true);
        let recorder = EventRecorders::new(
            client.clone(),
            Reporter {
                controller: args.field_manager.clone(),
                instance: Some(identity.clone()),
            },
        );
        let context = Arc::new(Context::new(
            client.clone(),
            settings.clone(),
            Arc::clone(&metrics),
            recorder,
        ));
        tracing::info!(?namespaces, %identity, "starting the controller");

        // The controller stops gracefully on SIGTERM; losing the Lease stops it at once.
        let (graceful_sender, graceful) = futures::channel::oneshot::channel::<()>();
        let mut stop_for_controller = stop.clone();
        let forward_stop = tokio::spawn(async move {
            let _ = stop_for_controller.wait_for(|stopped| *stopped).await;
            let _ = graceful_sender.send(());
        });
        let controller = controller::run(context, namespaces.clone(), graceful.map(|_| ()));
        let holder = Arc::clone(&elector);
        tokio::select! {
            () = controller => {
                metrics.set_leader(false);
                elector.release().await;
                tracing::info!("stopped");
                return Ok(());
            }
            lost = holder.hold() => {
                forward_stop.abort();
                metrics.set_leader(false);
                tracing::warn!(error = %lost, "lost leadership; the controller stopped, standing by to lead again");
            }
        }
    }
}

/// `plan`: prints what applying the manifest would do; exits 1 when it would be refused.
async fn plan(args: &Args, file: &std::path::Path, namespace: Option<&str>) -> anyhow::Result<()> {
    let (text, origin) = if file == std::path::Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the manifest from standard input")?;
        (text, "standard input".to_string())
    } else {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        (text, file.display().to_string())
    };
    let mut pipeline = match rtdp_crds::parse_pipeline(&text, &origin) {
        Ok(pipeline) => pipeline,
        Err(error) => {
            println!("The manifest would be refused: {error}\nNothing was changed.");
            std::process::exit(1);
        }
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API server (KUBECONFIG or in-cluster config)")?;
    if pipeline.metadata.namespace.is_none() {
        pipeline.metadata.namespace =
            Some(namespace.map_or_else(|| client.default_namespace().to_string(), str::to_string));
    }
    let build = BuildContext {
        default_image: args.runner_image.clone(),
    };
    let plan = rtdp_operator::plan::plan(&client, pipeline, &build).await;
    print!("{plan}");
    if plan.is_refused() {
        std::process::exit(1);
    }
    Ok(())
}

/// The pre-delete check: prints its verdict, fails while Pipelines are left.
async fn uninstall_check(
    args: &Args,
    release: &str,
    release_namespace: &str,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API server (in-cluster config or KUBECONFIG)")?;
    let remaining = rtdp_operator::uninstall::remaining(&client, &served_namespaces(args))
        .await
        .context("listing the Pipelines left")?;
    match rtdp_operator::uninstall::verdict(&remaining, release, release_namespace) {
        Ok(note) => {
            println!("{note}");
            Ok(())
        }
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    }
}

/// The namespaces to serve: an empty RTDP_NAMESPACES (or a trailing comma) means none named
/// (every namespace), not "".
fn served_namespaces(args: &Args) -> Vec<String> {
    args.namespaces
        .iter()
        .map(|namespace| namespace.trim().to_string())
        .filter(|namespace| !namespace.is_empty())
        .collect()
}

/// Resolves once a stop was requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// The first SIGTERM or Ctrl-C asks for a graceful stop; the second exits at once.
async fn signals(stop: watch::Sender<bool>) {
    wait_for_signal().await;
    tracing::info!("shutting down gracefully; signal again to exit at once");
    let _ = stop.send(true);
    wait_for_signal().await;
    tracing::warn!("exiting at once");
    std::process::exit(130);
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|host| !host.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|host| host.trim().to_string())
        })
        .unwrap_or_else(|| "rtdp-operator".into());
    format!("{host}-{}", std::process::id())
}

fn init_logging(format: LogFormat) {
    // kube-client's HTTP layer logs every failed request at ERROR without saying what it was
    // for (e.g. each watch cut while `helm uninstall` removes the ServiceAccount); the same
    // failures reach this operator's own logs as errors with context. RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
    });
    // Colour escapes only on a terminal: `kubectl logs` and log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

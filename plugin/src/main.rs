//! `kubectl podnet`: where in the cluster pod networking is broken, from the Kubernetes API
//! alone: the nodes with podnet's `PodNetworkProblem` condition and the state of their agent,
//! the pods podnet reported Events on, and `check <node>` (runs `podnet-agent check` in that
//! node's agent pod through `kubectl exec`).
//!
//! kubectl finds it on `PATH` as `kubectl-podnet`. Exit codes: 0 fine, 1 problems found (or
//! `check`'s own 1), 2 bad arguments or the API not reachable.

mod api;
mod exec;
mod table;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{ColorChoice, Parser, Subcommand, ValueEnum};

/// kubectl podnet: podnet's findings across the cluster (nodes, pods, one node's check).
#[derive(Debug, Parser)]
#[command(name = "kubectl podnet", version, color = ColorChoice::Never, max_term_width = 100)]
struct Cli {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// Namespace of podnet's DaemonSet.
    #[arg(
        long,
        global = true,
        env = "PODNET_NAMESPACE",
        default_value = "podnet",
        value_name = "NAMESPACE"
    )]
    podnet_namespace: String,

    /// Label selector of the agent's pods.
    #[arg(
        long,
        global = true,
        env = "PODNET_AGENT_SELECTOR",
        default_value = "app.kubernetes.io/name=podnet",
        value_name = "SELECTOR"
    )]
    agent_selector: String,

    /// Output format: the table, more columns, or JSON.
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "PODNET_OUTPUT",
        default_value = "table",
        value_name = "FORMAT"
    )]
    output: Output,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Nodes with podnet's condition (PodNetworkProblem) and whether their agent is ready;
    /// problems first.
    Nodes,
    /// Pods podnet reported Events on (events.k8s.io/v1, reportingController podnet.io/agent),
    /// the latest per pod; warnings first.
    Pods,
    /// Run `podnet-agent check` in NODE's agent pod (`kubectl exec`; needs `pods/exec` on the
    /// agent's namespace) and pass its table and exit code through.
    Check {
        /// The node.
        node: String,
    },
}

/// Output formats, as kubectl spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Columns.
    Table,
    /// More columns.
    Wide,
    /// JSON.
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let msg = e.render().to_string();
            let line = msg
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments");
            eprintln!("kubectl-podnet: {}", line.trim());
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubectl-podnet: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (text, problems) = match &cli.command {
        Command::Check { node } => return exec::check(cli, node),
        Command::Nodes => block_on(async {
            let client = api::client(cli.kubeconfig.as_deref()).await?;
            let rows = api::nodes(&client, &cli.podnet_namespace, &cli.agent_selector).await?;
            let bad = rows.iter().any(api::NodeRow::is_problem);
            Ok((table::nodes(&rows, cli.output)?, bad))
        })?,
        Command::Pods => block_on(async {
            let client = api::client(cli.kubeconfig.as_deref()).await?;
            let rows = api::pods(&client).await?;
            let bad = rows.iter().any(|r| r.kind == "Warning");
            Ok((table::pods(&rows, cli.output)?, bad))
        })?,
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(if problems {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Run `f` on a single-threaded runtime (a few API calls, then exit).
fn block_on<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

//! `podnet-agent check`: one look at this node with the agent's own engine (host state, the
//! API where reachable, one probe round), printed as a table or JSON, with an exit code a
//! script or an on-call person can act on:
//!
//! * 0: healthy; 1: problems (the table says which pod and why);
//! * 2: could not check (bad flags, missing privileges, the kernel not readable in time).
//!
//! It takes every flag and environment variable of the agent (so `kubectl exec
//! ds/podnet-agent -- podnet-agent check` judges exactly as the agent does), serves no HTTP
//! and leaves nothing behind.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::error::ErrorKind;
use clap::{ArgAction, ColorChoice, CommandFactory, FromArgMatches, Parser};
use podnet_probe::metrics::Metrics;
use podnet_probe::model::{ProbeResult, SourceName, Workers};
use podnet_probe::report::{CheckReport, table};
use podnet_probe::snapshot::Snapshot;
use tokio::sync::watch;

use crate::config::{Args, parse_duration};
use crate::{caps, engine, one_line, scoping, source};

/// `podnet-agent check`: check this node once and exit 0 (healthy), 1 (problems) or 2 (could
/// not check). Takes every flag of the agent.
#[derive(Debug, Parser)]
#[command(name = "podnet-agent check", color = ColorChoice::Never, max_term_width = 100)]
pub struct CheckArgs {
    /// The agent's flags and environment.
    #[command(flatten)]
    pub agent: Args,

    /// Print the report as JSON (schema: docs/check.md) instead of the table.
    #[arg(long, env = "PODNET_CHECK_JSON", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub json: bool,

    /// Give up after this long: exit 2 if the node's state was not read by then; otherwise
    /// report what is known (pods whose probe round is incomplete show their probes so far).
    #[arg(long, env = "PODNET_CHECK_TIMEOUT", default_value = "30s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Probes in a check run once per this interval (not the agent's 10 s): a round's failures are
/// confirmed by the prober's quick re-check within a few seconds.
const CHECK_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Share of `--timeout` spent waiting for the API's pod list before judging the node's own
/// interfaces instead (as the agent does until its first list).
const API_WAIT_SHARE: u32 = 3;

/// Capability bits the check cannot do without (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;

/// Run `podnet-agent check` with `argv` (the program name first, `check` removed).
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let cli = match parse(argv) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let line = one_line(&e.render().to_string());
            return cannot(line.strip_prefix("error: ").unwrap_or(&line));
        }
    };
    let mut args = cli.agent;
    args.probe_interval = CHECK_PROBE_INTERVAL.max(args.probe_timeout);
    let checked = args
        .check_probes()
        .and_then(|()| scoping::probing(&args))
        .and_then(|t| Ok((t, source::choose(&args)?)))
        .and_then(|c| privileges(!args.no_probes).map(|()| c));
    let (probing, choice) = match checked {
        Ok(c) => c,
        Err(e) => return cannot(&e),
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return cannot(&format!("starting the runtime: {e}")),
    };
    let result = runtime.block_on(observe(args, probing, choice, cli.timeout));
    runtime.shutdown_timeout(Duration::from_millis(200));
    let snap = match result {
        Ok(s) => s,
        Err(e) => return cannot(&format!("{e:#}")),
    };
    let report = CheckReport::from_snapshot(&snap);
    let text = if cli.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => j + "\n",
            Err(e) => return cannot(&format!("encoding the report: {e}")),
        }
    } else {
        table(&report)
    };
    if std::io::stdout().lock().write_all(text.as_bytes()).is_err() {
        return ExitCode::from(2);
    }
    if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Parse with the subcommand's own name and usage (the flattened agent flags bring the agent's
/// command attributes along, which would otherwise name it `podnet-agent`).
fn parse(argv: Vec<OsString>) -> Result<CheckArgs, clap::Error> {
    let cmd = CheckArgs::command()
        .name("podnet-agent check")
        .bin_name("podnet-agent check")
        .override_usage("podnet-agent check [OPTIONS]")
        .after_help(
            "Exit codes: 0 healthy, 1 problems, 2 could not check. JSON schema: docs/check.md.",
        )
        .max_term_width(100);
    CheckArgs::from_arg_matches(&cmd.try_get_matches_from(argv)?)
}

/// "Could not check": one line on stderr, exit code 2.
fn cannot(why: &str) -> ExitCode {
    eprintln!("podnet-agent check: cannot check: {why}");
    ExitCode::from(2)
}

/// Warnings and errors only, unless `PODNET_LOG` asks for more: stdout is the report.
fn init_logging() {
    let filter = std::env::var("PODNET_LOG").unwrap_or_else(|_| "warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// The check needs what the agent needs to see pods' addresses and to probe: without it the
/// answer would be wrong, not merely incomplete, so it refuses (`grep CapEff /proc/self/status`).
fn privileges(probes: bool) -> Result<(), String> {
    let p = caps::Privileges::read().ok_or("cannot read CapEff from /proc/self/status")?;
    let mut missing = Vec::new();
    let mut need = vec![(CAP_NET_ADMIN, "CAP_NET_ADMIN")];
    if probes {
        need.extend([
            (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            (CAP_NET_RAW, "CAP_NET_RAW"),
        ]);
    }
    for (bit, name) in need {
        if p.effective & (1 << bit) == 0 {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing {} (run as root on the node, or in the agent's pod with kubectl exec; \
             --no-probes needs only CAP_NET_ADMIN)",
            missing.join(", ")
        ))
    }
}

/// Run the engine until the node is read and one probe round is in (or `timeout`), then stop
/// it and return the last snapshot.
async fn observe(
    args: Args,
    probing: scoping::Probing,
    choice: source::Choice,
    timeout: Duration,
) -> anyhow::Result<Arc<Snapshot>> {
    let started = tokio::time::Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let workers = Workers::default();
    let mut metrics = Metrics::with_revision(env!("CARGO_PKG_VERSION"), env!("PODNET_REVISION"));
    let node = crate::node_name(&args);
    let threshold = args.probe_failures;
    let probes = !args.no_probes;
    let engine = tokio::time::timeout(
        timeout,
        engine::build(
            &args,
            probing,
            choice,
            node,
            &mut metrics,
            &workers,
            stopped,
        ),
    )
    .await
    .context("starting the engine timed out")??;
    let mut snapshots = engine.snapshots;
    tokio::spawn(engine.monitor.run(stopped()));
    if let Some(p) = engine.prober {
        tokio::spawn(p.run(stopped()));
    }
    let api_deadline = started + timeout / API_WAIT_SHARE;
    let deadline = started + timeout;
    loop {
        let snap = Arc::clone(&snapshots.borrow_and_update());
        let api_wait = tokio::time::Instant::now() < api_deadline;
        if settled(&snap, probes, threshold, api_wait) {
            break;
        }
        tokio::select! {
            changed = snapshots.changed() => changed.context("the monitor stopped")?,
            () = tokio::time::sleep_until(api_deadline), if api_wait => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    let _ = stop_tx.send(true);
    let snap = Arc::clone(&snapshots.borrow());
    if !snap.synced {
        anyhow::bail!("the node's network state could not be read within {timeout:?}");
    }
    if snap.pod_source == SourceName::NodeUntilListed {
        tracing::warn!(
            "the Kubernetes API did not list this node's pods in time: pods are the node's own \
             interfaces (names unknown)"
        );
    }
    Ok(snap)
}

/// Read the node, listed the API's pods (while `api_wait`), and every pod with an interface has
/// a settled answer from each of its probes: answered, or failed `threshold` times.
fn settled(snap: &Snapshot, probes: bool, threshold: u32, api_wait: bool) -> bool {
    if !snap.synced || (api_wait && snap.pod_source == SourceName::NodeUntilListed) {
        return false;
    }
    !probes
        || snap
            .verdicts
            .pods
            .iter()
            .filter(|p| p.link.is_some() && !p.pod.ips.is_empty())
            .all(|p| {
                !p.probes.is_empty()
                    && p.probes.iter().all(|t| {
                        !t.pending
                            && (t.state.last == ProbeResult::Ok
                                || t.state.consecutive_failures >= threshold)
                    })
            })
}

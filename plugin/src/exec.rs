//! `kubectl podnet check NODE`: `kubectl exec -n NS POD -- podnet-agent check`, in that node's
//! agent pod. Through kubectl (not the API's exec stream) so the user's own credentials,
//! context and auth plugins apply; the user needs `create` on `pods/exec` in podnet's
//! namespace (docs/kubernetes.md), which the agent itself is never granted.

use std::process::{Command, ExitCode};

use anyhow::Context;

use crate::{Cli, Output, api};

/// Find NODE's agent pod and run `check` there; its output and exit code pass through
/// (0 healthy, 1 problems, 2 could not check).
pub fn check(cli: &Cli, node: &str) -> anyhow::Result<ExitCode> {
    let pod = crate::block_on(async {
        let client = api::client(cli.kubeconfig.as_deref()).await?;
        api::agent_on(&client, &cli.podnet_namespace, &cli.agent_selector, node).await
    })?;
    let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let mut cmd = Command::new(&kubectl);
    if let Some(k) = &cli.kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    cmd.args([
        "exec",
        "-n",
        &cli.podnet_namespace,
        &pod,
        "--",
        "podnet-agent",
        "check",
    ]);
    if cli.output == Output::Json {
        cmd.arg("--json");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", kubectl.to_string_lossy()))?;
    Ok(match status.code() {
        Some(c @ 0..=2) => ExitCode::from(c as u8),
        _ => ExitCode::from(2),
    })
}

//! Embeds the source revision for `podnet_build_info{revision}`: `PODNET_REVISION` from the
//! environment (the image build sets it), else `git rev-parse HEAD`, else "unknown" (a source
//! tarball without git).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=PODNET_REVISION");
    let revision = std::env::var("PODNET_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            // Re-run when HEAD moves (a commit, a checkout): its reflog changes each time.
            if let Some(log) = git(&[
                "rev-parse",
                "--path-format=absolute",
                "--git-path",
                "logs/HEAD",
            ]) {
                println!("cargo:rerun-if-changed={log}");
            }
            git(&["rev-parse", "HEAD"])
        })
        .filter(|r| r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PODNET_REVISION={revision}");
}

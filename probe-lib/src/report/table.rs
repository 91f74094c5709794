//! `podnet-agent check`'s text table, in kubectl's style: upper-case headers, columns padded
//! with spaces, problems first, then a line per problem's evidence.

use std::fmt::Write as _;

use super::{CheckReport, PodRow};

/// Widest a cell gets; longer values (pod names, details, all pod-controlled) are cut.
const MAX_CELL: usize = 63;

/// The report as text: a summary line, node problems, the pod table, then the evidence of
/// every problem. Pod-controlled strings have control characters replaced.
pub fn table(r: &CheckReport) -> String {
    let mut out = String::new();
    let pods_bad = r.pods.iter().filter(|p| !p.is_healthy()).count();
    let summary = if !r.synced {
        "NOT SYNCED (the node's state could not be read in time)".to_owned()
    } else if r.healthy {
        format!("HEALTHY: {} pods, no problems", r.pods.len())
    } else {
        format!(
            "PROBLEMS: {pods_bad} of {} pods, {} node problems",
            r.pods.len(),
            r.node_problems.len()
        )
    };
    let _ = writeln!(
        out,
        "node {} (pods from {}): {summary}",
        clean(&r.node),
        r.pod_source
    );
    for n in &r.node_problems {
        let _ = writeln!(out, "NODE PROBLEM {}: {}", n.reason, clean(&n.detail));
    }
    let header = ["POD", "IPS", "INTERFACE", "ROUTE", "PROBES", "VERDICT"];
    let rows: Vec<[String; 6]> = r.pods.iter().map(cells).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ");
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    let with_details: Vec<&PodRow> = r.pods.iter().filter(|p| !p.details.is_empty()).collect();
    if !with_details.is_empty() {
        out.push('\n');
        for p in with_details {
            for d in &p.details {
                let _ = writeln!(out, "{}: {}", clean(&p.display_name()), clean(d));
            }
        }
    }
    out
}

fn cells(p: &PodRow) -> [String; 6] {
    let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
    [
        cut(&clean(&p.display_name())),
        if ips.is_empty() {
            "-".into()
        } else {
            ips.join(",")
        },
        cut(&clean(&p.interface)),
        p.route.clone(),
        p.probes.clone(),
        cut(&p.verdict),
    ]
}

/// Control characters (a terminal escape in a pod-chosen string) become `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(MAX_CELL - 1).collect();
        c.push('…');
        c
    }
}

//! kubectl-style output: upper-case headers, space-padded columns, `-o wide` adds columns,
//! `-o json` prints `{"items": [...]}`.

use serde::Serialize;

use crate::Output;
use crate::api::{NodeRow, PodRow};

/// Longest cell (messages come from the API and may be long); cut with `…`.
const MAX_CELL: usize = 80;

/// `kubectl podnet nodes`.
pub fn nodes(rows: &[NodeRow], out: Output) -> anyhow::Result<String> {
    let mut header = vec!["NAME", "PODNET-PROBLEM", "REASON", "AGENT"];
    if out == Output::Wide {
        header.extend(["AGENT-POD", "SINCE", "MESSAGE"]);
    }
    render(rows, out, &header, |r| {
        let mut c = vec![
            r.name.clone(),
            r.status.clone(),
            dash(&r.reason),
            r.agent.clone(),
        ];
        if out == Output::Wide {
            c.extend([r.agent_pod.clone(), dash(&r.since), dash(&r.message)]);
        }
        c
    })
}

/// `kubectl podnet pods`.
pub fn pods(rows: &[PodRow], out: Output) -> anyhow::Result<String> {
    let mut header = vec!["NAMESPACE", "POD", "TYPE", "REASON", "LAST-SEEN"];
    if out == Output::Wide {
        header.extend(["NODE", "COUNT", "MESSAGE"]);
    }
    render(rows, out, &header, |r| {
        let mut c = vec![
            r.namespace.clone(),
            r.pod.clone(),
            r.kind.clone(),
            r.reason.clone(),
            dash(&r.last_seen),
        ];
        if out == Output::Wide {
            c.extend([dash(&r.node), r.count.to_string(), dash(&r.message)]);
        }
        c
    })
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

fn render<T: Serialize>(
    rows: &[T],
    out: Output,
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<String> {
    if out == Output::Json {
        return Ok(serde_json::to_string_pretty(&serde_json::json!({ "items": rows }))? + "\n");
    }
    if rows.is_empty() {
        return Ok("No resources found.\n".to_owned());
    }
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    table.extend(
        rows.iter()
            .map(|r| cells(r).iter().map(|c| clean(c)).collect()),
    );
    let mut widths = vec![0; header.len()];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for row in &table {
        let mut line = String::new();
        for (c, w) in row.iter().zip(&widths) {
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', w - c.chars().count() + 3));
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    Ok(s)
}

/// Control characters (terminal escapes from API strings) become `?`; long cells are cut.
fn clean(s: &str) -> String {
    let mut c: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_CELL)
        .collect();
    if s.chars().count() > MAX_CELL {
        c.pop();
        c.push('…');
    }
    c
}

//! The status page at `/`: one self-contained HTML document (inline CSS, no script, no external
//! asset), refreshed by the browser every few seconds. Every string that comes from a pod, the
//! API or the kernel is escaped.

use std::fmt::Write as _;

use super::{CheckReport, PodRow};
use crate::snapshot::Snapshot;

/// Seconds between the browser's reloads (`<meta http-equiv="refresh">`).
pub const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}th,td{padding:.25em .8em;text-align:left;\
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f3f3f3}\
tr.problem td{background:#fde8e8}tr.ok td{background:#eef8ee}\
.bad{color:#a00;font-weight:bold}.good{color:#060;font-weight:bold}\
small{color:#666}";

/// The page for `snap`.
pub fn status_page(snap: &Snapshot) -> String {
    let r = CheckReport::from_snapshot(snap);
    let mut h = String::with_capacity(1024 + r.pods.len() * 256);
    let node = escape(&r.node);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>podnet: {node}</title><style>{STYLE}</style></head><body>\
         <h1>podnet on {node}</h1>"
    );
    let bad = r.pods.iter().filter(|p| !p.is_healthy()).count();
    let summary = if !r.synced {
        "<p id=\"summary\" class=\"bad\">Not synced yet: verdicts are not meaningful.</p>"
            .to_owned()
    } else if r.healthy {
        format!(
            "<p id=\"summary\" class=\"good\">Healthy: {} pods, no problems.</p>",
            r.pods.len()
        )
    } else {
        format!(
            "<p id=\"summary\" class=\"bad\">Problems: {bad} of {} pods, {} node problems.</p>",
            r.pods.len(),
            r.node_problems.len()
        )
    };
    h.push_str(&summary);
    let _ = write!(
        h,
        "<p><small>pods from {}, snapshot {}, reloads every {REFRESH_SECONDS} s; \
         the same facts as JSON at <a href=\"/status\">/status</a></small></p>",
        r.pod_source, snap.generation
    );
    if !r.node_problems.is_empty() {
        h.push_str("<h2>Node problems</h2><ul id=\"node-problems\">");
        for n in &r.node_problems {
            let _ = write!(
                h,
                "<li><span class=\"bad\">{}</span>: {}</li>",
                n.reason,
                escape(&n.detail)
            );
        }
        h.push_str("</ul>");
    }
    h.push_str(
        "<h2>Pods</h2><table id=\"pods\"><thead><tr><th>Pod</th><th>IPs</th><th>Interface</th>\
         <th>Route</th><th>Probes</th><th>Verdict</th></tr></thead><tbody>",
    );
    for p in &r.pods {
        row(&mut h, p);
    }
    h.push_str("</tbody></table></body></html>\n");
    h
}

fn row(h: &mut String, p: &PodRow) {
    let class = if p.is_healthy() { "ok" } else { "problem" };
    let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
    let _ = write!(
        h,
        "<tr class=\"{class}\" data-pod=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td class=\"verdict\">{}",
        escape(&p.display_name()),
        escape(&p.display_name()),
        ips.join(", "),
        escape(&p.interface),
        escape(&p.route),
        escape(&p.probes),
        escape(&p.verdict),
    );
    for d in &p.details {
        let _ = write!(h, "<br><small>{}</small>", escape(d));
    }
    h.push_str("</td></tr>");
}

/// HTML-escape text and attribute values (`&`, `<`, `>`, `"`, `'`); control characters are
/// dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

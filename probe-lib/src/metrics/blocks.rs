//! Remote block series: other nodes' pod blocks checked, and the failing ones (bounded).

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::gauge;
use crate::snapshot::Snapshot;

/// Most `podnet_remote_block_problem` series: a node that lost every route (thousands of
/// blocks) must not explode the scrape; `podnet_remote_block_problems` keeps the full count.
const MAX_BLOCK_SERIES: usize = 500;

/// Failing remote blocks only: one series per block with its node and reason.
pub(super) fn encode_remote_blocks(
    encoder: &mut DescriptorEncoder,
    snap: &Snapshot,
) -> fmt::Result {
    gauge(
        encoder,
        "podnet_remote_blocks",
        "Other nodes' pod blocks whose routes are checked (0 when the check is off)",
        snap.remote_blocks_checked as i64,
    )?;
    gauge(
        encoder,
        "podnet_remote_block_problems",
        "Other nodes' pod blocks not routed toward their node",
        snap.remote_blocks.len() as i64,
    )?;
    let mut e = encoder.encode_descriptor(
        "podnet_remote_block_problem",
        "1 while another node's pod block is not routed toward that node; absent when healthy",
        None,
        MetricType::Gauge,
    )?;
    for p in snap.remote_blocks.iter().take(MAX_BLOCK_SERIES) {
        let block = p.block.to_string();
        let labels = [
            ("block", block.as_str()),
            // Not `node`: scrapes label every series with the agent's own node.
            ("remote_node", p.node.as_str()),
            ("reason", p.reason.as_str()),
        ];
        ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

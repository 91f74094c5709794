//! The control-plane section of the snapshot: the source's latest view, judged against the
//! node's route verdicts (an unreachable endpoint names what podnet knows about its route),
//! with a log line whenever a Service's reason changes.

use tracing::{info, warn};

use super::Monitor;
use crate::model::ControlPlaneReason;
use crate::verdict::{
    BlockProblem, ControlPlaneStatus, Verdicts, control_plane_status, route_hint,
};

impl<H> Monitor<H> {
    /// `None` while the check is off or idle (nothing read yet: not a control-plane node).
    pub(super) fn control_plane_status(
        &self,
        verdicts: &Verdicts,
        blocks: &[BlockProblem],
    ) -> Option<ControlPlaneStatus> {
        let rx = self.config.control_plane.as_ref()?;
        let view = rx.borrow().clone();
        if !view.synced && view.error.is_none() {
            return None;
        }
        let hint = |ip| route_hint(&verdicts.pods, blocks, ip);
        let status = control_plane_status(&view, &hint);
        log_changes(self.last.control_plane.as_ref(), &status);
        Some(status)
    }
}

/// One line per Service whose reason changed (a handful of Services, changing rarely).
fn log_changes(last: Option<&ControlPlaneStatus>, now: &ControlPlaneStatus) {
    for s in &now.services {
        let before = last
            .and_then(|l| l.services.iter().find(|x| x.service == s.service))
            .map(|x| x.reason);
        if before == Some(s.reason) || (before.is_none() && s.reason == ControlPlaneReason::Pending)
        {
            continue;
        }
        let svc = format!(
            "{}/{}:{}",
            s.service.namespace, s.service.name, s.service.port
        );
        if s.affects_apiserver {
            warn!(service = %svc, reason = s.reason.as_str(), message = %s.message, "kube-apiserver cannot reach a Service it calls");
        } else {
            info!(service = %svc, reason = s.reason.as_str(), message = %s.message, "control-plane Service path");
        }
    }
}

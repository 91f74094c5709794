//! Exporters that tell Kubernetes, not only Prometheus: the node condition podnet owns
//! ([`condition`]) and Events on the affected Pod or the Node ([`events`]). Pure decisions from
//! the snapshot; the agent performs the writes (it holds the API client, the clock and the
//! retries).

pub mod bucket;
pub mod condition;
mod controlplane;
pub mod events;
mod observe;
mod pending;
pub mod precedence;
pub mod reasons;

pub use bucket::TokenBucket;
pub use condition::{CONDITION_TYPE, ConditionPatch, Desired, Written};
pub use events::{EventTracker, Observed, REPORTING_CONTROLLER, Step, Write};

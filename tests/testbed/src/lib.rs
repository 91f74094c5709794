//! podnet's test bed: a simulated Calico node built from real network namespaces, the real
//! agent binary started inside it, and helpers to read what it reports. Used by the agent's
//! integration tests (`agent/tests/`), the demo (`podnet-demo`) and the benchmarks
//! (`podnet-bench`). The Kubernetes API double is a crate of its own, `podnet-kube-double`.

pub mod agent;
pub mod agent_proc;
pub mod alerting;
pub mod bench;
pub mod cluster;
pub mod cni;
pub mod connects;
pub mod dns;
pub mod exposition;
pub mod faults;
pub mod felix;
pub mod http;
pub mod kong;
pub mod netns;
pub mod peers;
pub mod podserver;
pub mod sentinel;
pub mod simnode;

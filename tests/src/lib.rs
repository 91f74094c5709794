//! podnet's test bed: a simulated Calico node built from real network namespaces, the real
//! agent binary started inside it, and helpers to read what it reports. Used by the
//! integration tests, the demo (`podnet-demo`) and the benchmarks (`podnet-bench`).

pub mod agent;
pub mod agent_proc;
pub mod bench;
pub mod exposition;
pub mod kubeapi;
pub mod netns;
pub mod simnode;

//! `filter`: the control plane of a host packet filter (SPEC.md).
//!
//! A rule-set document ([`model`]) is validated ([`validate`]) into a
//! [`ruleset::Ruleset`], which the reference evaluator ([`eval`]) decides
//! packets against straight from SPEC §3, and which the compiler
//! ([`compile`]) turns into the contents of the data plane's maps.
//! [`dataplane`] loads the eBPF object and writes generations into it; the
//! daemon, the socket API, the flow log ([`flowlog`]) and the two thin
//! binaries make the product.
pub mod api;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod digest;
pub mod eval;
pub mod fleet;
pub mod flowlog;
pub mod metrics;
pub mod model;
pub mod ruleset;
pub mod systemd;
pub mod validate;
pub mod verdict;

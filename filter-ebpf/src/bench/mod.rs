//! Programs for `cargo xtask bench` only, built into the benchmark's object
//! (feature `bench`, `filter-bench`) and never into the one the daemon
//! loads. They share the data plane's modules and maps.
//!
//! | file | what it measures |
//! |---|---|
//! | `noop.rs` | empty programs: the baseline every program pays |
//! | `unaccounted.rs` | the pipeline without flow accounting |
//! | `lookup_cost.rs` | single map lookups: the floor under the pipeline |
//! | `flowlog.rs` | flow-log events as fast as one CPU makes them |
//! | `live.rs` | live frames on a veth (a generator) and the drop-rate ceiling |
mod flowlog;
mod live;
mod lookup_cost;
mod noop;
mod unaccounted;

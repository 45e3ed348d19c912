//! Empty library target: `filter-user` lists this crate as a build
//! dependency so cargo rebuilds the eBPF object when it changes, and cargo
//! ignores a dependency without a library (the aya-template layout).
#![no_std]

//! The kernel side seen from user space: load the eBPF object, pin, attach,
//! and write compiled generations into its maps.
pub mod object;

//! Compile-time benchmark (`cargo xtask bench`).
fn main() {}

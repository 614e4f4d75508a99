//! Project automation; run `cargo xtask help`.
fn main() {}

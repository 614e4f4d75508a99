//! Generates the protobuf types from `proto/` with protox, a pure-Rust
//! protobuf compiler, so building needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `proto` in the crate: a link to the workspace's `proto/` in the
    // repository, the files themselves in a packaged crate.
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let file = proto_root.join("journal/v1/journal.proto");
    println!("cargo:rerun-if-changed={}", file.display());

    let descriptors = protox::compile([&file], [&proto_root])?;
    prost_build::Config::new()
        // Deterministic encoding: map entries in key order.
        .btree_map(["."])
        // These carry URLs; their Debug is written by hand to redact passwords.
        .skip_debug(["journal.v1.PostgresConfig", "journal.v1.RedisConfig"])
        .compile_fds(descriptors)?;
    Ok(())
}

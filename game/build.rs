//! Compiles `proto/*.proto` (the protobuf form of the inventory messages) into Rust with prost.
//! As in the engine, the .proto files are parsed by `protox`, a pure-Rust protobuf compiler,
//! so building the game needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 1] = ["inventory.proto"];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    // `BTreeMap` for maps: the JSON form's types (`Inventory::items`, a trade's `give`) are
    // `BTreeMap`s, so converting is a move, and iteration order is deterministic.
    prost_build::Config::new().btree_map(["."]).compile_fds(descriptors)?;
    Ok(())
}

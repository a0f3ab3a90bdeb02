//! Compiles `proto/*.proto` into Rust with prost. The .proto files are parsed by `protox`, a
//! pure-Rust protobuf compiler, so building the engine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 7] = [
        "account.proto",
        "client.proto",
        "gate.proto",
        "orm.proto",
        "rpc.proto",
        "rpc_messages.proto",
        "session.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    // Gate frames pass through untouched, and RPC bodies go from the connection's read buffer
    // to the handler and from the handler's reply to the wire: `bytes` fields are `Bytes`
    // there (no copies).
    prost_build::Config::new()
        .btree_map(["."])
        .bytes([".sandtable.gate", ".sandtable.rpc.wire"])
        .compile_fds(descriptors)?;
    Ok(())
}

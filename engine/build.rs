//! Compiles `proto/*.proto` into Rust with prost. The .proto files are parsed by `protox`, a
//! pure-Rust protobuf compiler, so building the engine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 6] =
        ["account.proto", "client.proto", "orm.proto", "rpc.proto", "rpc_messages.proto", "session.proto"];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    prost_build::Config::new().btree_map(["."]).compile_fds(descriptors)?;
    Ok(())
}

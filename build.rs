//! Compiles the Cap'n Proto schema (src/rpc/dynamo.capnp) into Rust in OUT_DIR.
fn main() {
    println!("cargo:rerun-if-changed=src/rpc/dynamo.capnp");
    if let Err(e) = capnpc::CompilerCommand::new()
        .src_prefix("src/rpc")
        // The generated module lives at crate::rpc::dynamo_capnp.
        .default_parent_module(vec!["rpc".into()])
        .file("src/rpc/dynamo.capnp")
        .run()
    {
        // The `capnp` tool is a system package: say how to get it.
        panic!("compiling src/rpc/dynamo.capnp failed: {e}\n(is the `capnp` tool installed? `apt-get install capnproto`, or run `bash .ci/install`)");
    }
}

//! The embedded node: a Dynamo node served by a thread inside the host process.

use std::ffi::{c_char, CString};
use std::sync::Mutex;
use std::time::Duration;

use dynamo_core::client::{Client, ClientOptions};
use dynamo_core::config::NodeConfig;
use dynamo_core::node::RunningNode;

use crate::args;
use crate::error::{
    boundary, dynamo_status, FfiError, DYNAMO_ERR_BAD_REQUEST, DYNAMO_ERR_UNAVAILABLE,
};
use crate::handle::Registry;

/// A node running inside this process (opaque). Start it with `dynamo_node_start` or
/// `dynamo_node_start_file`, stop and free it with `dynamo_node_stop`. Thread-safe.
pub struct dynamo_node {
    _opaque: [u8; 0],
}

struct NodeHandle {
    node: Mutex<Option<RunningNode>>,
    address: CString,
    client: Client,
}

static NODES: Registry<NodeHandle> = Registry::new("dynamo_node");

fn start(config: NodeConfig) -> Result<*mut dynamo_node, FfiError> {
    let node = RunningNode::start(config)
        .map_err(|e| FfiError::new(DYNAMO_ERR_UNAVAILABLE, format!("starting the node: {e}")))?;
    let address = node.address().to_owned();
    let client = Client::connect(
        std::slice::from_ref(&address),
        ClientOptions {
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        },
    )?;
    Ok(NODES.insert(NodeHandle {
        node: Mutex::new(Some(node)),
        address: CString::new(address).unwrap_or_default(),
        client,
    }))
}

/// Starts a node in this process from the TOML config text `config_toml` (the format of
/// `dynamo node --config`; an empty string is a single node on 127.0.0.1:7400 with its
/// data in ./data). Opens its data and stores and binds its address before returning,
/// so every startup error (bad config, port taken, unreadable data) is returned here,
/// as `DYNAMO_ERR_BAD_REQUEST` for a config error and `DYNAMO_ERR_UNAVAILABLE`
/// otherwise. On `DYNAMO_OK` writes the node to `*node`; the caller stops it with
/// `dynamo_node_stop`. The node installs no signal handlers. Thread-safe.
/// The config is copied; the caller owns `*node`.
#[no_mangle]
pub extern "C" fn dynamo_node_start(
    config_toml: *const c_char,
    node: *mut *mut dynamo_node,
) -> dynamo_status {
    boundary("dynamo_node_start", || {
        args::out(node, "node")?;
        // SAFETY: a NUL-terminated string, as documented.
        let text = unsafe { args::text(config_toml, "config_toml") }?;
        let config = NodeConfig::parse(text, "config_toml")
            .map_err(|e| FfiError::new(DYNAMO_ERR_BAD_REQUEST, e.to_string()))?;
        let h = start(config)?;
        // SAFETY: checked non-null above.
        unsafe { args::write(node, h) };
        Ok(())
    })
}

/// As `dynamo_node_start`, reading the config from the file at `path`.
/// The path is copied; the caller owns `*node`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_node_start_file(
    path: *const c_char,
    node: *mut *mut dynamo_node,
) -> dynamo_status {
    boundary("dynamo_node_start_file", || {
        args::out(node, "node")?;
        // SAFETY: a NUL-terminated string, as documented.
        let path = unsafe { args::text(path, "path") }?;
        let config = NodeConfig::load(std::path::Path::new(path))
            .map_err(|e| FfiError::new(DYNAMO_ERR_BAD_REQUEST, e.to_string()))?;
        let h = start(config)?;
        // SAFETY: checked non-null above.
        unsafe { args::write(node, h) };
        Ok(())
    })
}

/// Writes the address the node listens on (`host:port`, with the real port when the
/// config asked for port 0) to `*address`: a string owned by the node, valid until
/// `dynamo_node_stop`.
/// Borrows `node`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_node_address(
    node: *mut dynamo_node,
    address: *mut *const c_char,
) -> dynamo_status {
    boundary("dynamo_node_address", || {
        args::out(address, "address")?;
        let n = NODES.get(node)?;
        // SAFETY: checked non-null above; the string lives in the registry's object.
        unsafe { args::write(address, n.address.as_ptr()) };
        Ok(())
    })
}

/// The node's status as JSON (the same object as `dynamo status --json`: name, members
/// and their health, hints owed, stores, in-flight requests, `unhealthy`). On
/// `DYNAMO_OK` writes a NUL-terminated string to `*json` that the caller frees with
/// `dynamo_free`. Blocks for one local call. Thread-safe.
/// Borrows `node`. The caller owns `*json`.
#[no_mangle]
pub extern "C" fn dynamo_node_status(
    node: *mut dynamo_node,
    json: *mut *mut c_char,
) -> dynamo_status {
    boundary("dynamo_node_status", || {
        args::out(json, "json")?;
        let n = NODES.get(node)?;
        let address = n.address.to_string_lossy().into_owned();
        let status = n.client.blocking().status(Some(&address))?;
        let text = serde_json::to_string(&status)
            .map_err(|e| FfiError::internal(format!("encoding the status: {e}")))?;
        // SAFETY: checked non-null above.
        unsafe { args::write(json, args::give_buffer(text.as_bytes()).cast()) };
        Ok(())
    })
}

/// Stops the node cleanly (stops accepting, lets in-flight requests finish for up to
/// 10 s, flushes its engines, frees its port) and frees the handle. A second stop
/// returns `DYNAMO_ERR_BAD_REQUEST`, and so does a call from a completion callback.
/// Ends the caller's ownership. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_node_stop(node: *mut dynamo_node) -> dynamo_status {
    boundary("dynamo_node_stop", || {
        crate::future::refuse_in_callback("dynamo_node_stop")?;
        let n = NODES.remove(node)?;
        let running = n.node.lock().unwrap_or_else(|p| p.into_inner()).take();
        match running {
            Some(mut r) => r
                .stop()
                .map_err(|e| FfiError::internal(format!("stopping the node: {e}"))),
            None => Ok(()),
        }
    })
}

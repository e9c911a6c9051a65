//! Cap'n Proto RPC: the schema (`dynamo.capnp`, compiled by `build.rs`), connecting to a
//! node, and the conversions between wire structs and the core's types.
//!
//! capnp-rpc objects are `Rc`-based and `!Send`: everything here runs on a
//! current-thread tokio runtime inside a `LocalSet` (see `DESIGN.md`, Runtime).
//! Every socket gets TCP_NODELAY; every connect has a timeout (calls are timed by their
//! callers).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use capnp_rpc::{rpc_twoparty_capnp, twoparty, RpcSystem};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::codec::Reader;
use crate::context::Context;
use crate::error::{DynamoError, ErrorKind};
use crate::quorum::ReplicaReply;
use crate::version::Version;

pub mod anti_entropy;
mod write_batch;

/// Code generated from `src/rpc/dynamo.capnp` by build.rs (see the schema for docs).
#[allow(missing_docs)]
pub mod dynamo_capnp {
    include!(concat!(env!("OUT_DIR"), "/dynamo_capnp.rs"));
}

pub use dynamo_capnp::{dynamo, failure, internode};

/// An open connection to a node: its client-facing capability and whether the
/// connection is still up. Invariant: once `alive()` is false it never turns true, and
/// a closed connection has released its socket.
#[derive(Clone)]
pub struct Connection {
    /// The node's bootstrap capability.
    pub dynamo: dynamo::Client,
    alive: Rc<Cell<bool>>,
    task: Rc<tokio::task::AbortHandle>,
    abandon: write_batch::Abandon,
}

impl Connection {
    /// The node's internode capability on this connection (pipelined: no round trip).
    pub fn internode(&self) -> internode::Client {
        self.dynamo.internode_request().send().pipeline.get_node()
    }

    /// Whether `other` is a clone of this same connection.
    pub fn same_as(&self, other: &Connection) -> bool {
        Rc::ptr_eq(&self.alive, &other.alive)
    }

    /// False once the connection broke or was closed.
    pub fn alive(&self) -> bool {
        self.alive.get()
    }

    /// Gives the connection up: marks it unusable, so the next request opens a fresh
    /// one, and closes its socket now (a peer that stopped answering would otherwise
    /// keep it open forever). Calls still waiting on it fail.
    pub fn close(&self) {
        self.alive.set(false);
        self.abandon.abandon();
        self.task.abort();
    }
}

/// The largest Cap'n Proto message accepted from a peer, in bytes, when nothing more
/// specific is known (the library's own default, 64 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// Reader limits for messages of up to `max_message` bytes.
pub fn reader_options(max_message: usize) -> capnp::message::ReaderOptions {
    let mut o = capnp::message::ReaderOptions::new();
    // The traversal limit counts 8-byte words; list and struct headers add a little.
    o.traversal_limit_in_words(Some(max_message / 8 + 1024));
    o
}

/// Opens a connection to `address` within `timeout`, accepting messages of up to
/// `max_message` bytes. Must run inside a `LocalSet`.
pub async fn connect(
    address: &str,
    timeout: Duration,
    max_message: usize,
) -> Result<Connection, DynamoError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| {
            DynamoError::unreachable(
                address,
                format!("connect timed out after {} ms", timeout.as_millis()),
            )
        })?
        .map_err(|e| DynamoError::unreachable(address, e))?;
    Ok(attach(stream, max_message))
}

/// The RPC system over an accepted or connected stream (for an accepted stream,
/// `bootstrap` is the capability we serve).
fn run_rpc(
    stream: TcpStream,
    side: rpc_twoparty_capnp::Side,
    bootstrap: Option<capnp::capability::Client>,
    max_message: usize,
    last_read: Rc<Cell<Instant>>,
) -> (RpcSystem<rpc_twoparty_capnp::Side>, write_batch::Abandon) {
    tune(&stream);
    let (reader, writer) = stream.into_split();
    let (writer, abandon, sender) = write_batch::batch_writer(writer);
    tokio::task::spawn_local(sender);
    let network = twoparty::VatNetwork::new(
        futures::io::BufReader::new(ActivityReader {
            inner: reader.compat(),
            last: last_read,
        }),
        writer,
        side,
        reader_options(max_message),
    );
    (RpcSystem::new(Box::new(network), bootstrap), abandon)
}

fn attach(stream: TcpStream, max_message: usize) -> Connection {
    let last_read = Rc::new(Cell::new(Instant::now()));
    let (mut system, abandon) = run_rpc(
        stream,
        rpc_twoparty_capnp::Side::Client,
        None,
        max_message,
        last_read,
    );
    let dynamo: dynamo::Client = system.bootstrap(rpc_twoparty_capnp::Side::Server);
    let alive = Rc::new(Cell::new(true));
    let flag = alive.clone();
    let task = tokio::task::spawn_local(async move {
        let _ = system.await;
        flag.set(false);
    });
    Connection {
        dynamo,
        alive,
        task: Rc::new(task.abort_handle()),
        abandon,
    }
}

/// TCP settings of every connection: no Nagle delay (without NODELAY a request waits up
/// to 40 ms for the peer's delayed ACK), and keepalive probes, so a peer that vanished
/// without a FIN or RST (a cut cable, a machine powered off) is noticed and its
/// connection closed within about a minute even when nothing is sent.
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// A reader that notes when it last read anything (for the idle timeout).
struct ActivityReader<R> {
    inner: R,
    last: Rc<Cell<Instant>>,
}

impl<R: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for ActivityReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.last.set(Instant::now());
        }
        polled
    }
}

/// Serves `bootstrap` on an accepted stream until the peer hangs up or sends nothing
/// for `idle` (the connection is then closed), accepting messages of up to
/// `max_message` bytes. `open` counts the connections served: it is one more while
/// this one lives.
pub fn serve_stream(
    stream: TcpStream,
    bootstrap: dynamo::Client,
    max_message: usize,
    idle: Duration,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let last_read = Rc::new(Cell::new(Instant::now()));
    let (system, abandon) = run_rpc(
        stream,
        rpc_twoparty_capnp::Side::Server,
        Some(bootstrap.client),
        max_message,
        last_read.clone(),
    );
    open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    tokio::task::spawn_local(async move {
        let watch = async {
            loop {
                let quiet = last_read.get().elapsed();
                if quiet >= idle {
                    return;
                }
                tokio::time::sleep(idle - quiet).await;
            }
        };
        tokio::select! {
            _ = system => {},
            // Idle: the socket is released now, whatever is unsent.
            _ = watch => abandon.abandon(),
        }
        open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    });
}

/// Resolves `address` (`host:port`) to a socket address, for listening.
pub fn resolve(address: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .map_err(|e| format!("{address:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address:?} resolves to no address"))
}

fn kind_to_wire(kind: ErrorKind) -> failure::Kind {
    match kind {
        ErrorKind::Internal | ErrorKind::Protocol => failure::Kind::Internal,
        ErrorKind::BadRequest => failure::Kind::BadRequest,
        ErrorKind::UnknownStore => failure::Kind::UnknownStore,
        ErrorKind::BadContext => failure::Kind::BadContext,
        ErrorKind::Quorum => failure::Kind::Quorum,
        ErrorKind::Unavailable => failure::Kind::Unavailable,
        ErrorKind::Timeout => failure::Kind::Deadline,
        ErrorKind::TooLarge => failure::Kind::TooLarge,
        ErrorKind::Overloaded => failure::Kind::Overloaded,
    }
}

fn kind_from_wire(kind: Result<failure::Kind, capnp::NotInSchema>) -> ErrorKind {
    match kind {
        Ok(failure::Kind::Internal) => ErrorKind::Internal,
        Ok(failure::Kind::BadRequest) => ErrorKind::BadRequest,
        Ok(failure::Kind::UnknownStore) => ErrorKind::UnknownStore,
        Ok(failure::Kind::BadContext) => ErrorKind::BadContext,
        Ok(failure::Kind::Quorum) => ErrorKind::Quorum,
        Ok(failure::Kind::Unavailable) => ErrorKind::Unavailable,
        Ok(failure::Kind::TooLarge) => ErrorKind::TooLarge,
        Ok(failure::Kind::Overloaded) => ErrorKind::Overloaded,
        Ok(failure::Kind::Deadline) => ErrorKind::Timeout,
        // A kind added by a newer peer: still a failure, message intact.
        Err(_) => ErrorKind::Internal,
    }
}

/// Fills a `Failure` struct from an error.
pub fn write_failure(mut b: failure::Builder<'_>, e: &DynamoError) {
    b.set_kind(kind_to_wire(e.kind));
    b.set_message(e.message.as_str());
}

/// Reads a reply's `failure` field: `Some` when the reply reports a failure.
pub fn read_failure(has: bool, r: capnp::Result<failure::Reader<'_>>) -> Option<DynamoError> {
    if !has {
        return None;
    }
    Some(match r {
        Ok(f) => {
            let message = text(f.get_message()).unwrap_or_default();
            DynamoError::new(
                kind_from_wire(f.get_kind()),
                if message.is_empty() {
                    "the node reported a failure without a message".into()
                } else {
                    message
                },
            )
        }
        Err(e) => protocol(format!("unreadable failure: {e}")),
    })
}

/// A protocol error (a malformed message from a peer).
pub fn protocol(message: impl Into<String>) -> DynamoError {
    DynamoError::new(ErrorKind::Protocol, message)
}

/// A capnp error as a request error: network failures are `Unavailable`.
pub fn from_capnp(address: &str, e: capnp::Error) -> DynamoError {
    match e.kind {
        capnp::ErrorKind::Failed => protocol(format!("node {address}: {}", e.extra)),
        _ => DynamoError::unreachable(address, e),
    }
}

/// Reads a `Text` field as a `String`, refusing invalid UTF-8.
pub fn text(r: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, DynamoError> {
    r.map_err(|e| protocol(format!("reading a text field: {e}")))?
        .to_string()
        .map_err(|e| protocol(format!("text field is not UTF-8: {e}")))
}

/// Reads a `Data` field.
pub fn data(r: capnp::Result<capnp::data::Reader<'_>>) -> Result<Vec<u8>, DynamoError> {
    r.map(<[u8]>::to_vec)
        .map_err(|e| protocol(format!("reading a data field: {e}")))
}

/// Encodes versions for a `List(VersionBytes)`.
pub fn encode_versions(versions: &[Version]) -> Vec<Vec<u8>> {
    versions
        .iter()
        .map(|v| {
            let mut out = Vec::new();
            v.encode_into(&mut out);
            out
        })
        .collect()
}

/// Writes pre-encoded versions into a list builder.
pub fn set_versions(mut list: capnp::data_list::Builder<'_>, encoded: &[Vec<u8>]) {
    for (i, e) in encoded.iter().enumerate() {
        list.set(i as u32, e);
    }
}

/// Decodes a `List(VersionBytes)`, refusing malformed entries and values over
/// `max_value` bytes.
pub fn decode_versions(
    r: capnp::Result<capnp::data_list::Reader<'_>>,
    max_value: u64,
) -> Result<Vec<Version>, DynamoError> {
    let list = r.map_err(|e| protocol(format!("reading versions: {e}")))?;
    let mut out = Vec::with_capacity(list.len() as usize);
    for item in list.iter() {
        let bytes = item.map_err(|e| protocol(format!("reading a version: {e}")))?;
        let mut reader = Reader::new(bytes, "version");
        let v = Version::decode_from(&mut reader, max_value)
            .map_err(|e| protocol(format!("malformed version: {e}")))?;
        out.push(v);
    }
    Ok(out)
}

use crate::api::{
    Deadline, GetRequest, GetResponse, MemberStatus, NodeStatus, PutResponse, Sibling, StoreSummary,
};

/// A received `deadlineMs` as a deadline on this node's clock (0: the sender set none).
pub fn read_deadline(budget_ms: u32) -> Option<Deadline> {
    (budget_ms != 0).then(|| Deadline::from_budget_ms(budget_ms, std::time::Duration::ZERO))
}

/// The `deadlineMs` to send for `deadline` (0: none). Callers check that it has not
/// passed before they send (see [`check_deadline`]).
pub fn write_deadline(deadline: Option<&Deadline>) -> u32 {
    deadline.map_or(0, Deadline::budget_ms)
}

/// A `Timeout` failure when `deadline` has passed: the call `what` to `to` is not sent.
pub fn check_deadline(
    deadline: Option<&Deadline>,
    what: &str,
    to: &str,
) -> Result<(), DynamoError> {
    match deadline {
        Some(d) if d.passed() => Err(DynamoError::new(
            ErrorKind::Timeout,
            format!("the request's deadline passed before its {what} to {to} was sent"),
        )),
        _ => Ok(()),
    }
}

/// The request of a `Dynamo.get` call, and whether it was forwarded by a node.
pub fn read_get_params(
    p: dynamo::get_params::Reader<'_>,
) -> Result<(crate::api::GetRequest, bool), DynamoError> {
    Ok((
        crate::api::GetRequest {
            store: text(p.get_store())?,
            key: data(p.get_key())?,
            r: (p.get_r() != 0).then_some(p.get_r()),
            deadline: read_deadline(p.get_deadline_ms()),
        },
        p.get_forwarded(),
    ))
}

/// A [`crate::api::PutRequest`] from put or delete params (distinct capnp types with
/// the same fields), `value` read by the caller; with the `forwarded` flag.
macro_rules! read_write_params {
    ($p:expr, $value:expr) => {{
        let p = $p;
        let context = text(p.get_context())?;
        Ok((
            crate::api::PutRequest {
                store: text(p.get_store())?,
                key: data(p.get_key())?,
                value: $value,
                context: (!context.is_empty()).then_some(context),
                w: (p.get_w() != 0).then_some(p.get_w()),
                request_id: (p.get_request_id() != 0).then_some(p.get_request_id()),
                retry: p.get_retry(),
                deadline: read_deadline(p.get_deadline_ms()),
            },
            p.get_forwarded(),
        ))
    }};
}

/// The request of a `Dynamo.put` call, and whether it was forwarded by a node.
pub fn read_put_params(
    p: dynamo::put_params::Reader<'_>,
) -> Result<(crate::api::PutRequest, bool), DynamoError> {
    read_write_params!(p, Some(data(p.get_value())?))
}

/// The request of a `Dynamo.delete` call (a put with no value), and whether it was
/// forwarded by a node.
pub fn read_delete_params(
    p: dynamo::delete_params::Reader<'_>,
) -> Result<(crate::api::PutRequest, bool), DynamoError> {
    read_write_params!(p, None)
}

/// A replica read (`Internode.read`) as a replica receives it.
#[derive(Clone, Debug)]
pub struct IncomingRead {
    /// The store.
    pub store: String,
    /// The key.
    pub key: Vec<u8>,
    /// The caller reads this node as one of the key's owners.
    pub as_owner: bool,
    /// The caller's deadline (`None`: it sent none).
    pub deadline: Option<Deadline>,
}

/// The request of an `Internode.read` call.
pub fn read_replica_read_params(
    p: internode::read_params::Reader<'_>,
) -> Result<IncomingRead, DynamoError> {
    Ok(IncomingRead {
        store: text(p.get_store())?,
        key: data(p.get_key())?,
        as_owner: p.get_as_owner(),
        deadline: read_deadline(p.get_deadline_ms()),
    })
}

/// Versions sent to a replica (`Internode.write`, or `deliverHint` with no `hint_for`,
/// `step` or `reaped`) as the replica receives them, decoded.
#[derive(Clone, Debug)]
pub struct IncomingWrite {
    /// The store.
    pub store: String,
    /// The key.
    pub key: Vec<u8>,
    /// The versions.
    pub versions: Vec<Version>,
    /// The owner this node stands in for (`None`: it is written as an owner).
    pub hint_for: Option<String>,
    /// The caller's membership view (empty: not checked).
    pub step: String,
    /// A reaped context to take in.
    pub reaped: Option<Context>,
    /// The caller's deadline (`None`: it sent none).
    pub deadline: Option<Deadline>,
}

/// Decodes the versions of an incoming write for `key` of `store`, refusing values over
/// `max_value` (the receiving store's limit) with a message that names them.
fn incoming_versions(
    versions: capnp::Result<capnp::data_list::Reader<'_>>,
    store: &str,
    key: &[u8],
    max_value: u64,
) -> Result<Vec<Version>, DynamoError> {
    decode_versions(versions, max_value).map_err(|e| {
        DynamoError::new(
            e.kind,
            format!(
                "refused versions for key {} in store {store}: {} (this node's max_value_size is {max_value})",
                crate::store::printable_key(key),
                e.message
            ),
        )
    })
}

/// The request of an `Internode.write` call; `max_value` gives the named store's value
/// limit (or refuses the store).
pub fn read_replica_write_params(
    p: internode::write_params::Reader<'_>,
    max_value: impl FnOnce(&str) -> Result<u64, DynamoError>,
) -> Result<IncomingWrite, DynamoError> {
    let store = text(p.get_store())?;
    let key = data(p.get_key())?;
    let max = max_value(&store)?;
    let hint_for = text(p.get_hint_for())?;
    Ok(IncomingWrite {
        versions: incoming_versions(p.get_versions(), &store, &key, max)?,
        hint_for: (!hint_for.is_empty()).then_some(hint_for),
        step: text(p.get_step()).unwrap_or_default(),
        reaped: decode_context(p.get_reaped())?,
        deadline: read_deadline(p.get_deadline_ms()),
        store,
        key,
    })
}

/// The request of an `Internode.deliverHint` call (a plain merge at the owner).
pub fn read_deliver_hint_params(
    p: internode::deliver_hint_params::Reader<'_>,
    max_value: impl FnOnce(&str) -> Result<u64, DynamoError>,
) -> Result<IncomingWrite, DynamoError> {
    let store = text(p.get_store())?;
    let key = data(p.get_key())?;
    let max = max_value(&store)?;
    Ok(IncomingWrite {
        versions: incoming_versions(p.get_versions(), &store, &key, max)?,
        hint_for: None,
        step: String::new(),
        reaped: None,
        deadline: read_deadline(p.get_deadline_ms()),
        store,
        key,
    })
}

/// A page request (`Internode.keys`, `Internode.partitionRecords`) as it travels; as
/// a replica reads it, `limit` is clamped to 1..=[`crate::api::MAX_KEYS_PER_PAGE`].
#[derive(Clone, Debug)]
pub struct PageRequest {
    /// The store.
    pub store: String,
    /// The partition (not checked against the ring yet).
    pub partition: u32,
    /// The last key of the previous page (empty: from the first).
    pub after: Vec<u8>,
    /// Keys at most.
    pub limit: usize,
    /// Bytes of values at most (`partitionRecords`; 0 for `keys`).
    pub max_bytes: u64,
    /// `partitionRecords`: list the partition's reaped keys instead.
    pub graveyard: bool,
}

/// The request of an `Internode.keys` call.
pub fn read_keys_params(p: internode::keys_params::Reader<'_>) -> Result<PageRequest, DynamoError> {
    Ok(PageRequest {
        store: text(p.get_store())?,
        partition: p.get_partition(),
        after: data(p.get_after())?,
        limit: p.get_limit().clamp(1, crate::api::MAX_KEYS_PER_PAGE) as usize,
        max_bytes: 0,
        graveyard: false,
    })
}

/// Fills an `Internode.keys` reply with a page of keys (`more`: others follow).
pub fn write_keys_reply(
    mut r: internode::keys_results::Builder<'_>,
    answer: &Result<(Vec<Vec<u8>>, bool), DynamoError>,
) {
    match answer {
        Ok((keys, more)) => {
            let mut list = r.reborrow().init_keys(keys.len() as u32);
            for (i, k) in keys.iter().enumerate() {
                list.set(i as u32, k);
            }
            r.set_more(*more);
        }
        Err(e) => write_failure(r.init_failure(), e),
    }
}

/// The request of an `Internode.partitionRecords` call.
pub fn read_partition_records_params(
    p: internode::partition_records_params::Reader<'_>,
) -> Result<PageRequest, DynamoError> {
    Ok(PageRequest {
        store: text(p.get_store())?,
        partition: p.get_partition(),
        after: data(p.get_after())?,
        limit: p.get_limit().clamp(1, crate::api::MAX_KEYS_PER_PAGE) as usize,
        max_bytes: p.get_max_bytes(),
        graveyard: p.get_graveyard(),
    })
}

/// One page of a partition's records for a transfer: the records, whether more
/// follow, and whether the replica is rebuilding the partition itself.
pub type RecordsPage = (Vec<crate::store::KeyState>, bool, bool);

/// Fills an `Internode.partitionRecords` reply.
pub fn write_partition_records_reply(
    mut r: internode::partition_records_results::Builder<'_>,
    answer: &Result<RecordsPage, DynamoError>,
) {
    match answer {
        Ok((records, more, rebuilding)) => {
            anti_entropy::write_key_states(
                r.reborrow().init_records(records.len() as u32),
                records,
            );
            r.set_more(*more);
            r.set_rebuilding(*rebuilding);
        }
        Err(e) => write_failure(r.init_failure(), e),
    }
}

/// An `Internode.gossip` call as received: the caller's name, its history's digest and
/// its history (JSON; empty when not sent).
pub fn read_gossip_params(
    p: internode::gossip_params::Reader<'_>,
) -> Result<(String, Vec<u8>, String), DynamoError> {
    Ok((
        text(p.get_from())?,
        data(p.get_digest())?,
        text(p.get_history())?,
    ))
}

/// Fills an `Internode.gossip` reply: this node's digest and, when the digests differ,
/// its history (JSON).
pub fn write_gossip_reply(
    mut r: internode::gossip_results::Builder<'_>,
    answer: &Result<(Vec<u8>, Option<String>), DynamoError>,
) {
    match answer {
        Ok((digest, history)) => {
            r.set_digest(digest);
            r.set_history(history.as_deref().unwrap_or(""));
        }
        Err(e) => write_failure(r.init_failure(), e),
    }
}

/// Fills an `Internode.read` reply: the replica's versions, whether it is rebuilding
/// and its reaped context, or the failure; with the replica's serving ring version.
pub fn write_replica_read_reply(
    mut r: internode::read_results::Builder<'_>,
    answer: &Result<ReplicaReply, DynamoError>,
    ring_version: u64,
) {
    match answer {
        Ok(reply) => {
            r.set_ring_version(ring_version);
            r.set_rebuilding(reply.rebuilding);
            let reaped = encode_context(reply.reaped.as_ref());
            if !reaped.is_empty() {
                r.set_reaped(&reaped);
            }
            let encoded = encode_versions(&reply.versions);
            set_versions(r.init_versions(encoded.len() as u32), &encoded);
        }
        Err(e) => write_failure(r.init_failure(), e),
    }
}

/// Fills an `Internode.write` reply: `Ok((differs, held))` sets `viewDiffers` and the
/// versions other attempts of the written requests left here.
pub fn write_replica_write_reply(
    mut r: internode::write_results::Builder<'_>,
    answer: &Result<(bool, Vec<Version>), DynamoError>,
) {
    match answer {
        Ok((differs, held)) => {
            r.set_view_differs(*differs);
            if !held.is_empty() {
                set_versions(r.init_held(held.len() as u32), &encode_versions(held));
            }
        }
        Err(e) => write_failure(r.init_failure(), e),
    }
}

/// Fills a `RingReply`: the ring as JSON, the members and the stores.
pub fn write_ring_reply(
    mut b: dynamo_capnp::ring_reply::Builder<'_>,
    ring_json: &str,
    members: &[MemberStatus],
    stores: &[StoreSummary],
) {
    b.set_ring_json(ring_json);
    let mut ms = b.reborrow().init_members(members.len() as u32);
    for (i, m) in members.iter().enumerate() {
        write_member(ms.reborrow().get(i as u32), m);
    }
    let mut ss = b.init_stores(stores.len() as u32);
    for (i, s) in stores.iter().enumerate() {
        write_store(ss.reborrow().get(i as u32), s);
    }
}

/// The request of a `Dynamo.admin` call, parsed from its JSON.
pub fn read_admin_params(
    p: dynamo::admin_params::Reader<'_>,
) -> Result<crate::admin::AdminRequest, DynamoError> {
    let json = text(p.get_request())?;
    serde_json::from_str(&json)
        .map_err(|e| DynamoError::new(ErrorKind::BadRequest, format!("not an admin request: {e}")))
}

/// Fills a `Dynamo.admin` reply: the reply as JSON, or the failure.
pub fn write_admin_reply(
    mut r: dynamo::admin_results::Builder<'_>,
    answer: &Result<crate::admin::AdminReply, DynamoError>,
) {
    let json = answer.as_ref().map_err(Clone::clone).and_then(|reply| {
        serde_json::to_string(reply).map_err(|e| {
            DynamoError::new(ErrorKind::Internal, format!("encoding an admin reply: {e}"))
        })
    });
    match json {
        Ok(json) => r.set_reply(json.as_str()),
        Err(e) => write_failure(r.init_failure(), &e),
    }
}

/// Fills a `Dynamo.internode` reply with the internode capability.
pub fn write_internode_reply(
    mut r: dynamo::internode_results::Builder<'_>,
    node: internode::Client,
) {
    r.set_node(node);
}

/// Fills an `Internode.ping` reply: this node's name and data-directory id.
pub fn write_ping_reply(mut r: internode::ping_results::Builder<'_>, name: &str, node_id: &str) {
    r.set_name(name);
    r.set_node_id(node_id);
}

/// Fills a `GetReply` from a response.
pub fn write_get_reply(mut b: dynamo_capnp::get_reply::Builder<'_>, g: &GetResponse) {
    b.set_ring_version(g.ring_version);
    b.set_context(g.context.as_str());
    b.set_coordinator(g.coordinator.as_str());
    let mut list = b.init_siblings(g.siblings.len() as u32);
    for (i, s) in g.siblings.iter().enumerate() {
        let mut e = list.reborrow().get(i as u32);
        match &s.value {
            Some(v) => e.set_value(v),
            None => e.set_deleted(true),
        }
    }
}

/// Reads a `GetReply`: the response, or the failure it reports.
pub fn read_get_reply(
    address: &str,
    r: capnp::Result<dynamo_capnp::get_reply::Reader<'_>>,
) -> Result<GetResponse, DynamoError> {
    let r = r.map_err(|e| from_capnp(address, e))?;
    if let Some(f) = read_failure(r.has_failure(), r.get_failure()) {
        return Err(f);
    }
    let list = r
        .get_siblings()
        .map_err(|e| protocol(format!("reading siblings from {address}: {e}")))?;
    let mut siblings = Vec::with_capacity(list.len() as usize);
    for s in list.iter() {
        siblings.push(Sibling {
            value: if s.get_deleted() {
                None
            } else {
                Some(data(s.get_value())?)
            },
        });
    }
    Ok(GetResponse {
        siblings,
        context: text(r.get_context())?,
        coordinator: text(r.get_coordinator())?,
        stale_replicas: Vec::new(),
        ring_version: r.get_ring_version(),
    })
}

/// Fills a `PutReply` from a response.
pub fn write_put_reply(mut b: dynamo_capnp::put_reply::Builder<'_>, p: &PutResponse) {
    b.set_ring_version(p.ring_version);
    b.set_context(p.context.as_str());
    b.set_coordinator(p.coordinator.as_str());
}

/// Reads a `PutReply`.
pub fn read_put_reply(
    address: &str,
    r: capnp::Result<dynamo_capnp::put_reply::Reader<'_>>,
) -> Result<PutResponse, DynamoError> {
    let r = r.map_err(|e| from_capnp(address, e))?;
    if let Some(f) = read_failure(r.has_failure(), r.get_failure()) {
        return Err(f);
    }
    Ok(PutResponse {
        context: text(r.get_context())?,
        coordinator: text(r.get_coordinator())?,
        ring_version: r.get_ring_version(),
    })
}

/// Fills a `MemberInfo`.
pub fn write_member(mut b: dynamo_capnp::member_info::Builder<'_>, m: &MemberStatus) {
    b.set_name(m.name.as_str());
    b.set_address(m.address.as_str());
    b.set_zone(m.zone.as_deref().unwrap_or(""));
    b.set_up(m.up);
    b.set_partitions(m.partitions);
    b.set_last_error(m.last_error.as_deref().unwrap_or(""));
}

/// Reads a `MemberInfo`.
pub fn read_member(m: dynamo_capnp::member_info::Reader<'_>) -> Result<MemberStatus, DynamoError> {
    let zone = text(m.get_zone())?;
    let err = text(m.get_last_error())?;
    Ok(MemberStatus {
        name: text(m.get_name())?,
        address: text(m.get_address())?,
        zone: (!zone.is_empty()).then_some(zone),
        up: m.get_up(),
        partitions: m.get_partitions(),
        last_error: (!err.is_empty()).then_some(err),
    })
}

/// Fills a `StoreInfo`.
pub fn write_store(mut b: dynamo_capnp::store_info::Builder<'_>, s: &StoreSummary) {
    b.set_name(s.name.as_str());
    b.set_engine(s.engine.as_str());
    b.set_n(s.n);
    b.set_r(s.r);
    b.set_w(s.w);
    b.set_policy(s.policy.as_str());
    b.set_max_value_size(s.max_value_size);
}

/// Reads a `StoreInfo`.
pub fn read_store(s: dynamo_capnp::store_info::Reader<'_>) -> Result<StoreSummary, DynamoError> {
    Ok(StoreSummary {
        name: text(s.get_name())?,
        engine: text(s.get_engine())?,
        n: s.get_n(),
        r: s.get_r(),
        w: s.get_w(),
        policy: text(s.get_policy())?,
        max_value_size: s.get_max_value_size(),
    })
}

/// Fills a `StatusReply`.
pub fn write_status(mut b: dynamo_capnp::status_reply::Builder<'_>, s: &NodeStatus) {
    b.set_node(s.node.as_str());
    b.set_address(s.address.as_str());
    b.set_node_id(s.node_id.as_str());
    b.set_uptime_ms(s.uptime_ms);
    b.set_in_flight(s.in_flight);
    let mut ms = b.reborrow().init_members(s.members.len() as u32);
    for (i, m) in s.members.iter().enumerate() {
        write_member(ms.reborrow().get(i as u32), m);
    }
    b.set_unhealthy(s.unhealthy.as_deref().unwrap_or(""));
    b.set_call_timeouts(s.call_timeouts);
    b.set_ring_version(s.ring_version);
    b.set_membership_changes(s.membership_changes);
    b.set_membership_digest(s.membership_digest.as_str());
    b.set_ring_digest(s.ring_digest.as_str());
    b.set_target_ring_version(s.target_ring_version);
    let transfer = s
        .transfer
        .as_ref()
        .and_then(|t| serde_json::to_string(t).ok())
        .unwrap_or_default();
    b.set_transfer_json(transfer.as_str());
    let ae = s
        .anti_entropy
        .as_ref()
        .and_then(|a| serde_json::to_string(a).ok())
        .unwrap_or_default();
    b.set_anti_entropy_json(ae.as_str());
    let load = s
        .load
        .as_ref()
        .and_then(|l| serde_json::to_string(l).ok())
        .unwrap_or_default();
    b.set_load_json(load.as_str());
    let all_hints = s.hints.iter().map(|h| (h, false));
    let orphaned = s.hints_for_non_members.iter().map(|h| (h, true));
    let count = s.hints.len() + s.hints_for_non_members.len();
    let mut hs = b.reborrow().init_hints(count as u32);
    for (i, ((owner, n), not_member)) in all_hints.chain(orphaned).enumerate() {
        let mut h = hs.reborrow().get(i as u32);
        h.set_owner(owner.as_str());
        h.set_count(*n);
        h.set_not_member(not_member);
    }
    let mut st = b.init_stores(s.stores.len() as u32);
    for (i, x) in s.stores.iter().enumerate() {
        write_store(st.reborrow().get(i as u32), x);
    }
}

/// Reads a `StatusReply`.
pub fn read_status(
    address: &str,
    r: capnp::Result<dynamo_capnp::status_reply::Reader<'_>>,
) -> Result<NodeStatus, DynamoError> {
    let r = r.map_err(|e| from_capnp(address, e))?;
    let bad = |e: capnp::Error| protocol(format!("reading status from {address}: {e}"));
    let mut members = Vec::new();
    for m in r.get_members().map_err(bad)?.iter() {
        members.push(read_member(m)?);
    }
    let mut hints = std::collections::BTreeMap::new();
    let mut hints_for_non_members = std::collections::BTreeMap::new();
    for h in r.get_hints().map_err(bad)?.iter() {
        let to = if h.get_not_member() {
            &mut hints_for_non_members
        } else {
            &mut hints
        };
        to.insert(text(h.get_owner())?, h.get_count());
    }
    let unhealthy = text(r.get_unhealthy())?;
    let mut stores = Vec::new();
    for s in r.get_stores().map_err(bad)?.iter() {
        stores.push(read_store(s)?);
    }
    Ok(NodeStatus {
        node: text(r.get_node())?,
        address: text(r.get_address())?,
        node_id: text(r.get_node_id())?,
        uptime_ms: r.get_uptime_ms(),
        in_flight: r.get_in_flight(),
        members,
        hints,
        hints_for_non_members,
        stores,
        unhealthy: (!unhealthy.is_empty()).then_some(unhealthy),
        call_timeouts: r.get_call_timeouts(),
        ring_version: r.get_ring_version(),
        membership_changes: r.get_membership_changes(),
        membership_digest: text(r.get_membership_digest())?,
        ring_digest: text(r.get_ring_digest())?,
        target_ring_version: r.get_target_ring_version(),
        anti_entropy: {
            let t = text(r.get_anti_entropy_json())?;
            if t.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&t).map_err(|e| {
                    protocol(format!(
                        "reading the anti-entropy status from {address}: {e}"
                    ))
                })?)
            }
        },
        transfer: {
            let t = text(r.get_transfer_json())?;
            if t.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&t).map_err(|e| {
                    protocol(format!("reading the transfer status from {address}: {e}"))
                })?)
            }
        },
        load: {
            let t = text(r.get_load_json())?;
            if t.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&t).map_err(|e| {
                    protocol(format!("reading the load status from {address}: {e}"))
                })?)
            }
        },
    })
}

/// Calls `get` on the node at `address` (its capability `d`) with `req` (its deadline's
/// time left travels with it); `forwarded` marks a node-to-node forward (server-driven
/// coordination).
pub async fn call_get(
    d: &dynamo::Client,
    address: &str,
    get: &GetRequest,
    forwarded: bool,
) -> Result<GetResponse, DynamoError> {
    check_deadline(get.deadline.as_ref(), "get", address)?;
    let mut req = d.get_request();
    let mut p = req.get();
    p.set_store(get.store.as_str());
    p.set_key(&get.key);
    p.set_r(get.r.unwrap_or(0));
    p.set_forwarded(forwarded);
    p.set_deadline_ms(write_deadline(get.deadline.as_ref()));
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let reply = resp.get().map_err(|e| from_capnp(address, e))?;
    read_get_reply(address, reply.get_reply())
}

/// Reads the versions of `key` held by the replica at `address` (its internode
/// capability `node`), hinted copies included, whatever the store's `max_value_size`
/// is now (it may have been lowered since they were written). `as_owner`: see the
/// schema's `Internode.read`; `deadline`: the request's, sent along (and not sent at
/// all once passed).
pub async fn call_replica_read(
    node: &internode::Client,
    address: &str,
    store: &str,
    key: &[u8],
    as_owner: bool,
    deadline: Option<&Deadline>,
) -> Result<(ReplicaReply, u64), DynamoError> {
    check_deadline(deadline, "replica read", address)?;
    let mut req = node.read_request();
    req.get().set_store(store);
    req.get().set_key(key);
    req.get().set_as_owner(as_owner);
    req.get().set_deadline_ms(write_deadline(deadline));
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    if let Some(f) = read_failure(r.has_failure(), r.get_failure()) {
        return Err(f);
    }
    let reply = ReplicaReply {
        versions: decode_versions(r.get_versions(), u64::from(u32::MAX))?,
        rebuilding: r.get_rebuilding(),
        reaped: decode_context(r.get_reaped())?,
    };
    Ok((reply, r.get_ring_version()))
}

/// Encodes an optional context for a `Data` field (empty: none).
pub fn encode_context(c: Option<&Context>) -> Vec<u8> {
    c.filter(|c| !c.is_empty())
        .map(Context::encode)
        .unwrap_or_default()
}

/// Reads an optional context from a `Data` field (empty: none).
pub fn decode_context(
    r: capnp::Result<capnp::data::Reader<'_>>,
) -> Result<Option<Context>, DynamoError> {
    let bytes = r.map_err(|e| protocol(format!("reading a context: {e}")))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    Context::decode(bytes)
        .map(Some)
        .map_err(|e| protocol(format!("malformed reaped context: {e}")))
}

/// Up to `limit` keys the replica at `address` holds in `partition` of `store` after
/// `after` (empty: from the first), and whether more follow.
pub async fn call_replica_keys(
    node: &internode::Client,
    address: &str,
    store: &str,
    partition: u32,
    after: &[u8],
    limit: u32,
) -> Result<(Vec<Vec<u8>>, bool), DynamoError> {
    let mut req = node.keys_request();
    {
        let mut p = req.get();
        p.set_store(store);
        p.set_partition(partition);
        p.set_after(after);
        p.set_limit(limit);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    if let Some(f) = read_failure(r.has_failure(), r.get_failure()) {
        return Err(f);
    }
    let list = r.get_keys().map_err(|e| from_capnp(address, e))?;
    let mut keys = Vec::with_capacity(list.len() as usize);
    for k in list.iter() {
        keys.push(k.map_err(|e| from_capnp(address, e))?.to_vec());
    }
    Ok((keys, r.get_more()))
}

/// One page of a partition's records (see `Internode.partitionRecords`).
#[derive(Debug)]
pub struct PartitionPage {
    /// The keys with their versions and reaped contexts, in key order.
    pub records: Vec<crate::store::KeyState>,
    /// More keys follow.
    pub more: bool,
    /// The replica is rebuilding the partition (it may lack writes it acknowledged).
    pub rebuilding: bool,
}

/// One page of a partition's records from the replica at `address` (see
/// `Internode.partitionRecords`).
pub async fn call_partition_records(
    node: &internode::Client,
    address: &str,
    page: &PageRequest,
    from: &str,
) -> Result<PartitionPage, DynamoError> {
    let mut req = node.partition_records_request();
    {
        let mut p = req.get();
        p.set_graveyard(page.graveyard);
        p.set_store(&page.store);
        p.set_partition(page.partition);
        p.set_after(&page.after);
        p.set_limit(u32::try_from(page.limit).unwrap_or(u32::MAX));
        p.set_max_bytes(page.max_bytes);
        p.set_from(from);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    if let Some(f) = read_failure(r.has_failure(), r.get_failure()) {
        return Err(f);
    }
    let list = r.get_records().map_err(|e| from_capnp(address, e))?;
    let mut out = Vec::with_capacity(list.len() as usize);
    for rec in list.iter() {
        out.push(crate::store::KeyState {
            key: data(rec.get_key())?,
            versions: decode_versions(rec.get_versions(), u64::from(u32::MAX))?,
            reaped: decode_context(rec.get_reaped())?,
        });
    }
    Ok(PartitionPage {
        records: out,
        more: r.get_more(),
        rebuilding: r.get_rebuilding(),
    })
}

/// One gossip exchange with the node at `address` (see `Internode.gossip`): sends this
/// node's digest, and its history (JSON) when given; returns the callee's digest and
/// its history when the digests differed after the callee merged.
pub async fn call_gossip(
    node: &internode::Client,
    address: &str,
    from: &str,
    digest: &[u8],
    history: Option<&str>,
) -> Result<(Vec<u8>, Option<String>), DynamoError> {
    let mut req = node.gossip_request();
    {
        let mut p = req.get();
        p.set_from(from);
        p.set_digest(digest);
        p.set_history(history.unwrap_or(""));
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    if let Some(f) = read_failure(r.has_failure(), r.get_failure()) {
        return Err(f);
    }
    let digest = data(r.get_digest())?;
    let history = text(r.get_history())?;
    Ok((digest, (!history.is_empty()).then_some(history)))
}

/// What a replica answered to a [`ReplicaWrite`] it stored.
#[derive(Clone, Debug, Default)]
pub struct ReplicaAck {
    /// False: the replica serves another view, and it matters (see `Internode.write`).
    pub agrees: bool,
    /// Versions it holds that other attempts of the written requests made (other
    /// dots, same request id).
    pub held: Vec<Version>,
}

/// Merges a [`ReplicaWrite`] into the replica at `address` (not sent once its deadline
/// passed).
pub async fn call_replica_write(
    node: &internode::Client,
    address: &str,
    w: &ReplicaWrite<'_>,
) -> Result<ReplicaAck, DynamoError> {
    check_deadline(w.deadline, "replica write", address)?;
    let mut req = node.write_request();
    {
        let mut p = req.get();
        p.set_store(w.store);
        p.set_key(w.key);
        set_versions(
            p.reborrow().init_versions(w.encoded.len() as u32),
            w.encoded,
        );
        if let Some(h) = w.hint_for {
            p.set_hint_for(h);
        }
        p.set_step(w.step);
        let r = encode_context(w.reaped);
        if !r.is_empty() {
            p.set_reaped(&r);
        }
        p.set_deadline_ms(write_deadline(w.deadline));
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    if let Some(f) = read_failure(r.has_failure(), r.get_failure()) {
        return Err(f);
    }
    let held = if r.has_held() {
        decode_versions(r.get_held(), u64::from(u32::MAX))?
    } else {
        Vec::new()
    };
    Ok(ReplicaAck {
        agrees: !r.get_view_differs(),
        held,
    })
}

/// One replica write (`Internode.write`) as it travels: versions already encoded.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaWrite<'a> {
    /// The store.
    pub store: &'a str,
    /// The key.
    pub key: &'a [u8],
    /// The versions, encoded ([`encode_versions`]).
    pub encoded: &'a [Vec<u8>],
    /// The owner a stand-in keeps them for (`None`: the receiver is an owner).
    pub hint_for: Option<&'a str>,
    /// The caller's membership view (see `Internode.write`; empty: not checked).
    pub step: &'a str,
    /// A reaped context the replica takes in too.
    pub reaped: Option<&'a Context>,
    /// The request's deadline (`None`: none sent).
    pub deadline: Option<&'a Deadline>,
}

/// One put or delete as it travels to a coordinator.
#[derive(Clone, Debug)]
pub struct WriteRequest<'a> {
    /// The store.
    pub store: &'a str,
    /// The key.
    pub key: &'a [u8],
    /// The value; `None` deletes.
    pub value: Option<&'a [u8]>,
    /// Context token; empty means none.
    pub context: &'a str,
    /// W override; `None` means the store's W.
    pub w: Option<u8>,
    /// The client's id for this write, the same on every retry (`None`: no id).
    pub request_id: Option<u64>,
    /// An earlier attempt of this request may have been applied somewhere.
    pub retry: bool,
    /// The request's deadline; its time left travels with the call.
    pub deadline: Option<Deadline>,
}

/// Calls `put` (value `Some`) or `delete` (`None`) on the node at `address`;
/// `forwarded` marks a node-to-node forward.
pub async fn call_put(
    d: &dynamo::Client,
    address: &str,
    req: &WriteRequest<'_>,
    forwarded: bool,
) -> Result<PutResponse, DynamoError> {
    let WriteRequest {
        store,
        key,
        value,
        context,
        w,
        request_id,
        retry,
        deadline,
    } = *req;
    check_deadline(deadline.as_ref(), "write", address)?;
    let request_id = request_id.unwrap_or(0);
    let budget = write_deadline(deadline.as_ref());
    match value {
        Some(v) => {
            let mut req = d.put_request();
            let mut p = req.get();
            p.set_store(store);
            p.set_key(key);
            p.set_value(v);
            p.set_context(context);
            p.set_w(w.unwrap_or(0));
            p.set_forwarded(forwarded);
            p.set_request_id(request_id);
            p.set_retry(retry);
            p.set_deadline_ms(budget);
            let resp = req
                .send()
                .promise
                .await
                .map_err(|e| from_capnp(address, e))?;
            let reply = resp.get().map_err(|e| from_capnp(address, e))?;
            read_put_reply(address, reply.get_reply())
        }
        None => {
            let mut req = d.delete_request();
            let mut p = req.get();
            p.set_store(store);
            p.set_key(key);
            p.set_context(context);
            p.set_w(w.unwrap_or(0));
            p.set_forwarded(forwarded);
            p.set_request_id(request_id);
            p.set_retry(retry);
            p.set_deadline_ms(budget);
            let resp = req
                .send()
                .promise
                .await
                .map_err(|e| from_capnp(address, e))?;
            let reply = resp.get().map_err(|e| from_capnp(address, e))?;
            read_put_reply(address, reply.get_reply())
        }
    }
}

/// Fills a `GetReply` with an answer or its failure.
pub fn answer_get(
    b: dynamo_capnp::get_reply::Builder<'_>,
    answer: &Result<GetResponse, DynamoError>,
) {
    match answer {
        Ok(g) => write_get_reply(b, g),
        Err(e) => write_failure(b.init_failure(), e),
    }
}

/// Fills a `PutReply` with an answer or its failure.
pub fn answer_put(
    b: dynamo_capnp::put_reply::Builder<'_>,
    answer: &Result<PutResponse, DynamoError>,
) {
    match answer {
        Ok(r) => write_put_reply(b, r),
        Err(e) => write_failure(b.init_failure(), e),
    }
}

/// Hands `encoded` versions of `key` off to their owner at `address`
/// (`Internode.deliverHint`); `from` names the stand-in.
pub async fn call_deliver_hint(
    node: &internode::Client,
    address: &str,
    store: &str,
    key: &[u8],
    from: &str,
    encoded: &[Vec<u8>],
) -> Result<(), DynamoError> {
    let mut req = node.deliver_hint_request();
    {
        let mut p = req.get();
        p.set_store(store);
        p.set_key(key);
        p.set_from(from);
        set_versions(p.reborrow().init_versions(encoded.len() as u32), encoded);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    match read_failure(r.has_failure(), r.get_failure()) {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Pings the node at `address` (`Internode.ping`); `from` names the caller. Returns the
/// name the node answers with.
pub async fn call_ping(
    node: &internode::Client,
    address: &str,
    from: &str,
) -> Result<String, DynamoError> {
    let mut req = node.ping_request();
    req.get().set_from(from);
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    text(resp.get().map_err(|e| from_capnp(address, e))?.get_name())
}

/// The ring, members and stores as the node at `address` sees them (`Dynamo.ring`).
pub async fn call_ring(
    node: &dynamo::Client,
    address: &str,
) -> Result<crate::api::RingInfo, DynamoError> {
    let resp = node
        .ring_request()
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp
        .get()
        .and_then(|r| r.get_reply())
        .map_err(|e| from_capnp(address, e))?;
    let ring = crate::ring::Ring::from_json(&text(r.get_ring_json())?)
        .map_err(|e| protocol(format!("ring from {address}: {e}")))?;
    let mut members = Vec::new();
    for m in r.get_members().map_err(|e| from_capnp(address, e))?.iter() {
        members.push(read_member(m)?);
    }
    let mut stores = Vec::new();
    for s in r.get_stores().map_err(|e| from_capnp(address, e))?.iter() {
        stores.push(read_store(s)?);
    }
    Ok(crate::api::RingInfo {
        ring,
        members,
        stores,
    })
}

/// The status of the node at `address` (`Dynamo.status`).
pub async fn call_status(node: &dynamo::Client, address: &str) -> Result<NodeStatus, DynamoError> {
    let resp = node
        .status_request()
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    read_status(
        address,
        resp.get().map_err(|e| from_capnp(address, e))?.get_reply(),
    )
}

/// Sends an admin request (JSON) to the node at `address` (`Dynamo.admin`).
pub async fn call_admin(
    node: &dynamo::Client,
    address: &str,
    request: &str,
) -> Result<crate::admin::AdminReply, DynamoError> {
    let mut req = node.admin_request();
    req.get().set_request(request);
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    if let Some(f) = read_failure(r.has_failure(), r.get_failure()) {
        return Err(f);
    }
    let json = text(r.get_reply())?;
    serde_json::from_str(&json)
        .map_err(|e| protocol(format!("reading the admin reply from {address}: {e}")))
}

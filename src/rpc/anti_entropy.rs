//! The anti-entropy calls of the internode interface (`aaeRoots`, `aaeTree`,
//! `aaeSegments`, `fetch`, `mergeRecords`, `reapCheck`, `reap`) and the conversions of
//! their key records.

use crate::error::DynamoError;
use crate::store::KeyState;

use super::dynamo_capnp::key_versions;
use super::{
    decode_context, decode_versions, encode_context, encode_versions, from_capnp, internode,
    protocol, read_failure, set_versions,
};

/// Most keys one `fetch`, `mergeRecords`, `reapCheck` or `reap` carries.
pub const MAX_RECORDS_PER_CALL: usize = 1_000;

/// What `aaeSegments` answered: the keys of the first `listed` segments asked for, with
/// their state hashes; `more` when a segment had more keys than it listed.
#[derive(Debug)]
pub struct SegmentsPage {
    /// (key, state hash), in segment then key order.
    pub keys: Vec<(Vec<u8>, u64)>,
    /// A segment had more keys than it listed.
    pub more: bool,
    /// How many of the segments asked for are listed (at least one).
    pub listed: usize,
}

/// Fills a `List(KeyVersions)` from key states.
pub fn write_key_states(
    mut list: capnp::struct_list::Builder<'_, key_versions::Owned>,
    states: &[KeyState],
) {
    for (i, s) in states.iter().enumerate() {
        let mut item = list.reborrow().get(i as u32);
        item.set_key(&s.key);
        let encoded = encode_versions(&s.versions);
        set_versions(
            item.reborrow().init_versions(encoded.len() as u32),
            &encoded,
        );
        let reaped = encode_context(s.reaped.as_ref());
        if !reaped.is_empty() {
            item.set_reaped(&reaped);
        }
    }
}

/// Reads a `List(KeyVersions)`, refusing more than [`MAX_RECORDS_PER_CALL`] and values
/// over `max_value` bytes.
pub fn read_key_states(
    r: capnp::Result<capnp::struct_list::Reader<'_, key_versions::Owned>>,
    max_value: u64,
) -> Result<Vec<KeyState>, DynamoError> {
    let list = r.map_err(|e| protocol(format!("reading key records: {e}")))?;
    if list.len() as usize > MAX_RECORDS_PER_CALL {
        return Err(protocol(format!(
            "{} key records in one call; at most {MAX_RECORDS_PER_CALL}",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len() as usize);
    for item in list.iter() {
        out.push(KeyState {
            key: super::data(item.get_key())?,
            versions: decode_versions(item.get_versions(), max_value)?,
            reaped: decode_context(item.get_reaped())?,
        });
    }
    Ok(out)
}

fn failed(has: bool, f: capnp::Result<super::failure::Reader<'_>>) -> Result<(), DynamoError> {
    match read_failure(has, f) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The roots of `partitions` of `store` at the replica at `address`: `None` for a
/// tree that is not ready there.
pub async fn call_roots(
    node: &internode::Client,
    address: &str,
    store: &str,
    partitions: &[u32],
) -> Result<Vec<Option<u64>>, DynamoError> {
    let mut req = node.aae_roots_request();
    {
        let mut p = req.get();
        p.set_store(store);
        let mut list = p.init_partitions(partitions.len() as u32);
        for (i, x) in partitions.iter().enumerate() {
            list.set(i as u32, *x);
        }
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    let roots = r.get_roots().map_err(|e| from_capnp(address, e))?;
    let ready = r.get_ready().map_err(|e| from_capnp(address, e))?;
    if roots.len() as usize != partitions.len() || ready.len() != roots.len() {
        return Err(protocol(format!(
            "{address} answered {} roots for {} partitions",
            roots.len(),
            partitions.len()
        )));
    }
    Ok((0..roots.len())
        .map(|i| ready.get(i).then(|| roots.get(i)))
        .collect())
}

/// The branch hashes (with `branches` empty) or the leaf hashes under `branches` of
/// partition `p`'s tree at `address`; `None` when the tree is not ready there.
pub async fn call_tree(
    node: &internode::Client,
    address: &str,
    store: &str,
    p: u32,
    branches: &[u16],
) -> Result<Option<Vec<u64>>, DynamoError> {
    let mut req = node.aae_tree_request();
    {
        let mut b = req.get();
        b.set_store(store);
        b.set_partition(p);
        let mut list = b.init_branches(branches.len() as u32);
        for (i, x) in branches.iter().enumerate() {
            list.set(i as u32, *x);
        }
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    if !r.get_ready() {
        return Ok(None);
    }
    let list = r.get_hashes().map_err(|e| from_capnp(address, e))?;
    Ok(Some(list.iter().collect()))
}

/// The keys of `segments` of partition `p` at `address` with their state hashes (at
/// most `limit` per segment), and whether a segment had more.
pub async fn call_segments(
    node: &internode::Client,
    address: &str,
    store: &str,
    p: u32,
    segments: &[u16],
    limit: u32,
) -> Result<SegmentsPage, DynamoError> {
    let mut req = node.aae_segments_request();
    {
        let mut b = req.get();
        b.set_store(store);
        b.set_partition(p);
        b.set_limit(limit);
        let mut list = b.init_segments(segments.len() as u32);
        for (i, x) in segments.iter().enumerate() {
            list.set(i as u32, *x);
        }
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    let keys = r.get_keys().map_err(|e| from_capnp(address, e))?;
    let hashes = r.get_hashes().map_err(|e| from_capnp(address, e))?;
    if keys.len() != hashes.len() {
        return Err(protocol(format!(
            "{address} answered {} keys and {} hashes",
            keys.len(),
            hashes.len()
        )));
    }
    let mut out = Vec::with_capacity(keys.len() as usize);
    for i in 0..keys.len() {
        let k = keys.get(i).map_err(|e| from_capnp(address, e))?;
        out.push((k.to_vec(), hashes.get(i)));
    }
    // 0 is what a node from before `listed` existed sends: it listed them all.
    let listed = match usize::from(r.get_listed()) {
        0 => segments.len(),
        n => n,
    };
    if listed == 0 || listed > segments.len() {
        return Err(protocol(format!(
            "{address} listed {listed} of {} segment(s)",
            segments.len()
        )));
    }
    Ok(SegmentsPage {
        keys: out,
        more: r.get_more(),
        listed,
    })
}

/// Every version and the reaped context of the first of `keys` at `address` (a prefix,
/// at least one key: as many as fit in a reply).
pub async fn call_fetch(
    node: &internode::Client,
    address: &str,
    store: &str,
    keys: &[Vec<u8>],
) -> Result<Vec<KeyState>, DynamoError> {
    let mut req = node.fetch_request();
    {
        let mut b = req.get();
        b.set_store(store);
        let mut list = b.init_keys(keys.len() as u32);
        for (i, k) in keys.iter().enumerate() {
            list.set(i as u32, k);
        }
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    let states = read_key_states(r.get_records(), u64::from(u32::MAX))?;
    if states.is_empty() && !keys.is_empty() {
        return Err(protocol(format!(
            "{address} answered a fetch of {} key(s) with none",
            keys.len()
        )));
    }
    for (asked, got) in keys.iter().zip(&states) {
        if *asked != got.key {
            return Err(protocol(format!(
                "{address} answered a fetch with keys out of order"
            )));
        }
    }
    if states.len() > keys.len() {
        return Err(protocol(format!(
            "{address} answered a fetch of {} key(s) with {}",
            keys.len(),
            states.len()
        )));
    }
    Ok(states)
}

/// Merges `records` into the replica at `address`.
pub async fn call_merge_records(
    node: &internode::Client,
    address: &str,
    store: &str,
    records: &[KeyState],
) -> Result<(), DynamoError> {
    let mut req = node.merge_records_request();
    {
        let mut b = req.get();
        b.set_store(store);
        write_key_states(b.init_records(records.len() as u32), records);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())
}

/// What `address` holds of each record's key before a reap (see `Internode.reapCheck`),
/// and whether a membership change is pending in its view.
pub async fn call_reap_check(
    node: &internode::Client,
    address: &str,
    store: &str,
    records: &[KeyState],
) -> Result<(Vec<u8>, bool), DynamoError> {
    let mut req = node.reap_check_request();
    {
        let mut b = req.get();
        b.set_store(store);
        write_key_states(b.init_records(records.len() as u32), records);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    let states: Vec<u8> = r
        .get_states()
        .map_err(|e| from_capnp(address, e))?
        .iter()
        .collect();
    if states.len() != records.len() {
        return Err(protocol(format!(
            "{address} answered {} reap states for {} keys",
            states.len(),
            records.len()
        )));
    }
    Ok((states, r.get_moving()))
}

/// Reaps each record's key at `address` if it still holds exactly those versions.
pub async fn call_reap(
    node: &internode::Client,
    address: &str,
    store: &str,
    records: &[KeyState],
) -> Result<Vec<bool>, DynamoError> {
    let mut req = node.reap_request();
    {
        let mut b = req.get();
        b.set_store(store);
        write_key_states(b.init_records(records.len() as u32), records);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    Ok(r.get_reaped()
        .map_err(|e| from_capnp(address, e))?
        .iter()
        .collect())
}

//! [`BlockingClient`]: the client for plain threads (each call blocks on the async one).

use super::*;

/// [`Client`] for synchronous callers: each call blocks the calling thread (do not use
/// it inside an async runtime). Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct BlockingClient {
    pub(super) client: Client,
}

pub(super) fn block_on<F: Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

impl BlockingClient {
    /// See [`Client::get`].
    pub fn get(&self, store: &str, key: &[u8], r: Option<u8>) -> Result<GetResponse, DynamoError> {
        block_on(self.client.get(store, key, r))
    }
    /// See [`Client::put`].
    pub fn put(
        &self,
        store: &str,
        key: &[u8],
        value: &[u8],
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        block_on(self.client.put(store, key, value, context, w))
    }
    /// See [`Client::delete`].
    pub fn delete(
        &self,
        store: &str,
        key: &[u8],
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        block_on(self.client.delete(store, key, context, w))
    }
    /// See [`Client::status`].
    pub fn status(&self, address: Option<&str>) -> Result<NodeStatus, DynamoError> {
        block_on(self.client.status(address))
    }
    /// See [`Client::ring_version`].
    pub fn ring_version(&self) -> Option<u64> {
        block_on(self.client.ring_version())
    }
    /// See [`Client::admin`].
    pub fn admin(
        &self,
        address: &str,
        request: &crate::admin::AdminRequest,
    ) -> Result<crate::admin::AdminReply, DynamoError> {
        block_on(self.client.admin(address, request))
    }
    /// See [`Client::read_replica`].
    pub fn read_replica(
        &self,
        address: &str,
        store: &str,
        key: &[u8],
    ) -> Result<Vec<Version>, DynamoError> {
        block_on(self.client.read_replica(address, store, key))
    }

    /// See [`Client::list_keys`].
    pub fn list_keys(
        &self,
        store: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, DynamoError> {
        block_on(self.client.list_keys(store, cursor, limit))
    }

    /// See [`Client::ring`].
    pub fn ring(&self) -> Result<RingInfo, DynamoError> {
        block_on(self.client.ring())
    }
}

//! [`LocalClient`]: the client's calls made on its own connection thread, for programs
//! that issue many requests at once (load generators, proxies).
//!
//! Each call through [`Client`] crosses threads twice (the caller's runtime to the
//! connection thread and back): measured on a 2-core machine that was a third of a
//! client's CPU time per GET. Code handed to [`Client::on_connection_thread`] runs on
//! that thread and calls the same request paths directly.

use super::*;

/// The client's calls without a thread hop. Only exists on the client's connection
/// thread (it holds the thread's `Rc` state, so it is neither `Send` nor `Sync`); get
/// one from [`Client::on_connection_thread`]. Cheap to clone. Calls behave exactly as
/// through [`Client`]: same routing, retries, in-flight bound and read repair.
#[derive(Clone)]
pub struct LocalClient {
    pub(super) state: Rc<State>,
}

impl std::fmt::Debug for LocalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalClient")
    }
}

impl LocalClient {
    /// Reads `key` from `store` (see [`Client::get`]).
    pub async fn get(
        &self,
        store: &str,
        key: &[u8],
        r: Option<u8>,
    ) -> Result<GetResponse, DynamoError> {
        self.state
            .request(Op::Get { r }, store, key)
            .await?
            .into_get()
    }

    /// Writes `value` under `key` (see [`Client::put`]).
    pub async fn put(
        &self,
        store: &str,
        key: &[u8],
        value: &[u8],
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        self.write(store, key, Some(value.to_vec()), context, w)
            .await
    }

    /// Deletes `key` (see [`Client::delete`]).
    pub async fn delete(
        &self,
        store: &str,
        key: &[u8],
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        self.write(store, key, None, context, w).await
    }

    /// A put (`value` Some) or delete (None).
    pub(super) async fn write(
        &self,
        store: &str,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        // One id for every attempt of this write: a node that already applied it
        // answers with that version instead of writing a second one.
        let op = Op::Put {
            value,
            context: context.unwrap_or_default().to_owned(),
            w,
            request_id: Some(rand::random::<u64>() | 1),
        };
        self.state.request(op, store, key).await?.into_put()
    }
}

impl Client {
    /// Runs `f` on this client's connection thread and returns what it returns. `f`
    /// gets a [`LocalClient`], whose calls skip the two thread hops each call through
    /// `Client` makes; it may spawn more tasks with `tokio::task::spawn_local` (they
    /// run on the same thread; await them before returning, or they are left running
    /// beside the client's other work). While `f` runs, it shares the thread with
    /// every other call of this client, so it must not block.
    pub async fn on_connection_thread<T, F, Fut>(&self, f: F) -> Result<T, DynamoError>
    where
        T: Send + 'static,
        F: FnOnce(LocalClient) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.run(move |state| async move { Ok(f(LocalClient { state }).await) })
            .await
    }
}

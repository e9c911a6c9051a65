//! Connections to nodes: one client connection and one internode capability per
//! address, opened once (a burst of first requests shares them), and every call under
//! the client's timeout.

use super::in_flight::{InFlight, Permit, Urgency};
use super::*;

impl State {
    pub(super) fn live_conn(&self, address: &str) -> Option<Connection> {
        self.conns
            .borrow()
            .get(address)
            .filter(|c| c.alive())
            .cloned()
    }

    pub(super) async fn conn(&self, address: &str) -> Result<Connection, DynamoError> {
        if let Some(c) = self.live_conn(address) {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.live_conn(address) {
            return Ok(c);
        }
        let c = rpc::connect(address, self.options.timeout, self.options.max_message_size).await?;
        self.conns
            .borrow_mut()
            .insert(address.to_owned(), c.clone());
        Ok(c)
    }

    /// A place among this client's calls in flight to `address`
    /// ([`ClientOptions::max_in_flight_per_node`]), waited for up to the client's
    /// timeout; past it the call fails as `overloaded`, untouched.
    pub(super) async fn place(
        &self,
        address: &str,
        urgency: Urgency,
    ) -> Result<Permit, DynamoError> {
        let bound = self.bound(address);
        if let Some(p) = bound.try_acquire() {
            return Ok(p);
        }
        let t = self.options.timeout;
        tokio::time::timeout(t, bound.acquire(urgency))
            .await
            .map_err(|_| {
                DynamoError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "this client already has {} calls in flight to node {address} \
                         (ClientOptions::max_in_flight_per_node) and none finished within \
                         {} ms; the request was not sent",
                        self.options.max_in_flight_per_node,
                        t.as_millis()
                    ),
                )
            })
    }

    /// A place among the calls in flight to `address` if one is free now: for work
    /// that is dropped rather than queued under load (read repair).
    pub(super) fn place_if_free(&self, address: &str) -> Option<Permit> {
        self.bound(address).try_acquire()
    }

    fn bound(&self, address: &str) -> Rc<InFlight> {
        if let Some(b) = self.in_flight.borrow().get(address) {
            return b.clone();
        }
        self.in_flight
            .borrow_mut()
            .entry(address.to_owned())
            .or_insert_with(|| InFlight::new(self.options.max_in_flight_per_node))
            .clone()
    }

    pub(super) async fn timed<T>(
        &self,
        address: &str,
        call: impl Future<Output = Result<T, DynamoError>>,
    ) -> Result<T, DynamoError> {
        let t = self.options.timeout;
        let (r, timed_out) = match tokio::time::timeout(t, call).await {
            Ok(r) => (r, false),
            Err(_) => (
                Err(DynamoError::new(
                    ErrorKind::Timeout,
                    format!(
                        "node {address} timed out: no answer within {} ms",
                        t.as_millis()
                    ),
                )),
                true,
            ),
        };
        if let Err(e) = &r {
            // A slow reply fails this call only: other calls on the connection go on.
            // A failure the node reported (its deadline passed, it is overloaded) says
            // nothing about the connection either. Only a connection that broke is
            // dropped (it is not alive any more) and its node avoided for a moment.
            let broken = !timed_out
                && matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Protocol)
                && self.live_conn(address).is_none();
            if broken {
                if let Some(c) = self.conns.borrow_mut().remove(address) {
                    c.close();
                }
            }
            if timed_out || matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Protocol) {
                self.failed
                    .borrow_mut()
                    .insert(address.to_owned(), Instant::now());
                self.stale.set(true);
            }
        }
        r
    }

    pub(super) async fn admin_of(
        &self,
        address: &str,
        request: &str,
    ) -> Result<crate::admin::AdminReply, DynamoError> {
        let conn = self.conn(address).await?;
        self.timed(address, rpc::call_admin(&conn.dynamo, address, request))
            .await
    }

    pub(super) async fn status_of(&self, address: &str) -> Result<NodeStatus, DynamoError> {
        let conn = self.conn(address).await?;
        self.timed(address, rpc::call_status(&conn.dynamo, address))
            .await
    }

    /// The internode capability of the node at `address`.
    pub(super) async fn internode(&self, address: &str) -> Result<internode::Client, DynamoError> {
        let conn = self
            .conn(address)
            .await
            .inspect_err(|_| self.note_failure(address))?;
        if let Some((c, node)) = self.internodes.borrow().get(address) {
            if c.alive() && c.same_as(&conn) {
                return Ok(node.clone());
            }
        }
        let node = conn.internode();
        self.internodes
            .borrow_mut()
            .insert(address.to_owned(), (conn, node.clone()));
        Ok(node)
    }
}

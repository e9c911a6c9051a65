//! Gets, puts and deletes sent to a coordinator: the first reachable node of the key's
//! preference list (client-driven) or the nodes in turn (server-driven), with retries.

use super::in_flight::Urgency;
use super::*;

/// The pause after the `n`th `overloaded` refusal of one request before it tries the
/// next coordinator: short (a few milliseconds, doubling to 64 ms), and spread by the
/// clock's nanoseconds so that refused clients do not come back in step.
fn overload_pause(n: u32) -> Duration {
    let base = 2u64 << n.saturating_sub(1).min(5);
    let spread = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % base.max(1);
    Duration::from_millis(base + spread)
}

pub(super) enum Op {
    Get {
        r: Option<u8>,
    },
    Put {
        value: Option<Vec<u8>>,
        context: String,
        w: Option<u8>,
        request_id: Option<u64>,
    },
}

pub(super) enum Answer {
    Get(GetResponse),
    Put(PutResponse),
}

impl Answer {
    pub(super) fn into_get(self) -> Result<GetResponse, DynamoError> {
        match self {
            Answer::Get(g) => Ok(g),
            Answer::Put(_) => Err(rpc::protocol("a put answer to a get")),
        }
    }
    pub(super) fn into_put(self) -> Result<PutResponse, DynamoError> {
        match self {
            Answer::Put(p) => Ok(p),
            Answer::Get(_) => Err(rpc::protocol("a get answer to a put")),
        }
    }
}

impl State {
    pub(super) async fn request(
        self: &Rc<Self>,
        op: Op,
        store: &str,
        key: &[u8],
    ) -> Result<Answer, DynamoError> {
        let mut layout = self.layout_with_retries().await?;
        let mut summary = layout.store(store)?;
        if let (Op::Get { r }, Coordination::ClientDriven) = (&op, self.options.coordination) {
            let mut round = 0;
            let mut followed = false;
            loop {
                let answer = self.coordinate_get(&layout, &summary, key, *r).await;
                // A replica serves a newer ring (owners switched): read again, once, on
                // the new ring, so that no read goes to former owners only.
                if !followed && layout.info.ring.version() < self.known_version.get() {
                    followed = true;
                    if let Ok(fresh) = self.layout().await {
                        if fresh.info.ring.version() > layout.info.ring.version() {
                            layout = fresh;
                            summary = layout.store(store)?;
                            continue;
                        }
                    }
                }
                match answer {
                    Err(e)
                        if round < self.options.retries
                            && matches!(
                                e.kind,
                                ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Overloaded
                            ) =>
                    {
                        round += 1;
                        tokio::time::sleep(retry_pause(round)).await;
                    }
                    answer => return answer.map(Answer::Get),
                }
            }
        }
        let mut errors = Vec::new();
        let mut timed_out = false;
        let mut overloaded = 0;
        let mut attempts = 0;
        for round in 0..=self.options.retries {
            if round > 0 {
                tokio::time::sleep(retry_pause(round)).await;
            }
            for address in self.route(&layout, &summary, key) {
                // An attempt after one that may have been applied (it timed out or its
                // node went away) is a retry; one refused as overloaded was not applied.
                let retry = attempts > overloaded;
                attempts += 1;
                match self.send(&address, &op, store, key, retry).await {
                    Ok(a) => return Ok(a),
                    // Busy: the node refused it untouched. Another coordinator can take
                    // it after a short pause; the node is not avoided as if it were down.
                    Err(e) if e.kind == ErrorKind::Overloaded => {
                        overloaded += 1;
                        errors.push(e.message);
                        tokio::time::sleep(overload_pause(overloaded)).await;
                    }
                    // Unreachable, shutting down or slow: another node can take it.
                    Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) => {
                        timed_out |= e.kind == ErrorKind::Timeout;
                        errors.push(e.message)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if overloaded == attempts && !timed_out {
            return Err(DynamoError::new(
                ErrorKind::Overloaded,
                format!(
                    "every node tried was overloaded and refused the request untouched \
                     ({attempts} attempts): {}",
                    errors.join("; ")
                ),
            ));
        }
        let rounds = match self.options.retries {
            0 => String::new(),
            r => format!(" (in {} rounds)", r + 1),
        };
        Err(DynamoError::new(
            // A write that timed out somewhere may have been applied there.
            if timed_out {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            },
            format!(
                "no node could take the request{rounds}: {}",
                errors.join("; ")
            ),
        ))
    }

    pub(super) async fn send(
        &self,
        address: &str,
        op: &Op,
        store: &str,
        key: &[u8],
        retry: bool,
    ) -> Result<Answer, DynamoError> {
        let urgency = match op {
            Op::Put { context, .. } if !context.is_empty() => Urgency::Finishing,
            _ => Urgency::Starting,
        };
        let _place = self.place(address, urgency).await?;
        let conn = self
            .conn(address)
            .await
            .inspect_err(|_| self.note_failure(address))?;
        // The coordinator and every replica drop the work once this attempt has timed
        // out here, so a retry never runs beside it.
        let deadline = Deadline::after(self.options.timeout);
        let call = async {
            match op {
                Op::Get { r } => {
                    let req = GetRequest {
                        store: store.to_owned(),
                        key: key.to_vec(),
                        r: *r,
                        deadline: Some(deadline),
                    };
                    let g = rpc::call_get(&conn.dynamo, address, &req, false).await?;
                    self.note_ring_version(g.ring_version);
                    Ok(Answer::Get(g))
                }
                Op::Put {
                    value,
                    context,
                    w,
                    request_id,
                } => {
                    let req = rpc::WriteRequest {
                        store,
                        key,
                        value: value.as_deref(),
                        context,
                        w: *w,
                        request_id: *request_id,
                        retry,
                        deadline: Some(deadline),
                    };
                    let p = rpc::call_put(&conn.dynamo, address, &req, false).await?;
                    self.note_ring_version(p.ring_version);
                    Ok(Answer::Put(p))
                }
            }
        };
        self.timed(address, call).await
    }
}

//! Key listing: pages of a store's keys in (partition, key) order, each partition read
//! from its owners, with a cursor token for the next page.

use super::*;

/// The cursor token `partition:hex(after)` a key page hands to the next call.
pub(super) fn key_cursor(partition: u32, after: &[u8]) -> String {
    let mut s = format!("{partition}:");
    for b in after {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses a cursor from [`key_cursor`], checking it against the ring's `q` partitions.
pub(super) fn parse_key_cursor(cursor: &str, q: u32) -> Result<(u32, Vec<u8>), DynamoError> {
    let bad = |why: &str| {
        DynamoError::new(
            ErrorKind::BadRequest,
            format!(
                "bad key-listing cursor {cursor:?}: {why}; pass the `next` of the previous page"
            ),
        )
    };
    let (p, hex) = cursor.split_once(':').ok_or_else(|| bad("no ':'"))?;
    let partition: u32 = p
        .parse()
        .map_err(|_| bad("the partition is not a number"))?;
    if partition >= q {
        return Err(bad(&format!("the ring has only {q} partitions")));
    }
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(bad("the key is not hex"));
    }
    let after = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad("the key is not hex"))?;
    Ok((partition, after))
}

impl State {
    /// One page of [`Client::list_keys`]: the keys of the cursor's partition, asked of
    /// every owner in parallel and merged (a key missing on one replica is still listed),
    /// moving on to the next partition when the cursor's is exhausted.
    pub(super) async fn list_keys(
        self: &Rc<Self>,
        store: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, DynamoError> {
        let layout = self.layout_with_retries().await?;
        let summary = layout.store(store)?;
        let ring = &layout.info.ring;
        let q = ring.partition_count();
        let (mut partition, mut after) = match cursor {
            Some(c) => parse_key_cursor(c, q)?,
            None => (0, Vec::new()),
        };
        let limit = limit.clamp(1, crate::api::MAX_KEYS_PER_PAGE);
        let mut unanswered: Vec<String> = Vec::new();
        while partition < q {
            // The walk goes on past the top N to the stand-ins: only owners are asked.
            let owners: Vec<String> = ring
                .walk(partition, usize::from(summary.n))
                .iter()
                .take(usize::from(summary.n))
                .map(|m| m.name.clone())
                .collect();
            let asks = owners.iter().map(|name| {
                let (after, layout) = (&after, &layout);
                async move {
                    let address = layout.address_of(name)?;
                    let node = self.internode(&address).await?;
                    self.timed(
                        &address,
                        rpc::call_replica_keys(&node, &address, store, partition, after, limit),
                    )
                    .await
                    .map_err(|e| DynamoError::new(e.kind, format!("{name}: {}", e.message)))
                }
            });
            let answers = futures::future::join_all(asks).await;
            let mut merged = std::collections::BTreeSet::new();
            let mut more = false;
            let mut errors = Vec::new();
            let mut answered = 0;
            for (name, a) in owners.iter().zip(answers) {
                match a {
                    Ok((keys, m)) => {
                        answered += 1;
                        more |= m;
                        merged.extend(keys);
                    }
                    Err(e) => {
                        if !unanswered.contains(name) {
                            unanswered.push(name.clone());
                        }
                        errors.push(e);
                    }
                }
            }
            if answered == 0 {
                let kind = errors.first().map_or(ErrorKind::Unavailable, |e| e.kind);
                let why: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                return Err(DynamoError::new(
                    kind,
                    format!(
                        "listing keys of store {store}: no replica of partition {partition} answered: {}",
                        why.join("; ")
                    ),
                ));
            }
            let mut keys: Vec<Vec<u8>> = merged.into_iter().collect();
            if keys.len() > limit as usize {
                keys.truncate(limit as usize);
                more = true;
            }
            let next = if more {
                let last = keys.last().cloned().unwrap_or_else(|| after.clone());
                Some(key_cursor(partition, &last))
            } else if partition + 1 < q {
                Some(key_cursor(partition + 1, &[]))
            } else {
                None
            };
            if !keys.is_empty() || next.is_none() {
                return Ok(KeyPage {
                    keys,
                    next,
                    unanswered,
                });
            }
            // An empty partition: go on to the next one within this call.
            partition += 1;
            after.clear();
        }
        Ok(KeyPage {
            keys: Vec::new(),
            next: None,
            unanswered,
        })
    }
}

//! Causal contexts: exactly the set of write events (dots) their holder has seen.
//!
//! A [`Context`] is a version vector plus a *dot cloud*: the extra dots that cannot be
//! folded into the vector because an earlier event of the same actor is not covered.
//! This is the dotted-version-vector idea (Preguiça et al.) that Riak adopted to stop
//! lost updates and sibling explosion: a client that read only some of an actor's
//! events must not be credited with the ones in between.
//!
//! Invariant (normal form): no cloud dot is covered by the vector, and no cloud dot is
//! the next event of its actor's vector entry (it would have been folded). Two contexts
//! covering the same dots have the same representation, so `==` is set equality.
//!
//! Laws (property-tested in `tests/causality_laws.rs`): [`Context::merge`] is
//! commutative, associative and idempotent (it is set union); [`Context::descends`]
//! is set inclusion, a partial order; a dot issued after a context
//! ([`Context::next_dot`]) is not covered by it, and adding it gives a context strictly
//! after the old one.
//!
//! Request memory: besides dots, a context remembers the client request ids of the
//! versions it was built from (at most [`MAX_CONTEXT_REQUESTS`], the newest by
//! timestamp). Attempts of one request through different coordinators can each make a
//! version under its own dot; a context that saw one of them covers the request, so a
//! write made with it supersedes every attempt's version, also one it never saw (see
//! [`Context::covers_write`]). Request ids take no part in [`Context::descends`]: they
//! are not events, only names for one.
//!
//! Encoding: version byte [`CONTEXT_FORMAT`] (or [`CONTEXT_FORMAT_REQUESTS`] when it
//! remembers requests), then the vector, then the cloud, all varints, then (format 2)
//! the request ids, each 8 bytes big-endian and a varint timestamp. [`Context::to_token`] wraps that in URL-safe base64 together with a
//! fingerprint of the key it was issued for, so a context pasted onto the wrong key is
//! rejected instead of silently superseding unrelated versions.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use thiserror::Error;

use crate::codec::{put_varint, DecodeError, Reader};
use crate::dot::{Actor, Dot};
use crate::vclock::{Causality, VClock, MAX_DECODED_ENTRIES};

/// Format byte of the binary encoding of a context that remembers no request.
pub const CONTEXT_FORMAT: u8 = 1;
/// Format byte of a context that remembers request ids too. Decoders reject any
/// format byte but these two.
pub const CONTEXT_FORMAT_REQUESTS: u8 = 2;
/// Most request ids a context remembers: the newest by timestamp (ties: highest id).
/// A version made by an attempt of a request that no context of its key remembers any
/// more (eight later writes of the key carried it out of memory before that version
/// met one that superseded it) shows up as a sibling again.
pub const MAX_CONTEXT_REQUESTS: usize = 8;
/// Format byte of the printable token.
pub const TOKEN_FORMAT: u8 = 1;
/// Longest token accepted, so a hostile token cannot make us allocate much.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a context token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContextError {
    /// Not URL-safe base64.
    #[error("context token is not URL-safe base64: {0}")]
    NotBase64(String),
    /// Too long to be one of ours.
    #[error("context token is {len} characters; the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Written by an unknown (newer?) format.
    #[error("context token has format {found}; this build reads format {expected}")]
    UnknownFormat {
        /// The byte found.
        found: u8,
        /// The byte expected.
        expected: u8,
    },
    /// Issued for a different key.
    #[error("context token was issued for a different key (fingerprint {found:08x}, this key has {expected:08x}); pass the context returned for this key")]
    WrongKey {
        /// The token's fingerprint.
        found: u32,
        /// This key's fingerprint.
        expected: u32,
    },
    /// Structurally broken.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
}

/// The set of events a holder has seen: a version vector plus a normalised dot cloud.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    vv: VClock,
    cloud: BTreeMap<Dot, u64>,
    /// Request ids seen, with the newest timestamp of a version each wrote.
    requests: BTreeMap<u64, u64>,
}

impl Context {
    /// The empty context (has seen nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// A context covering exactly the events of `vv`.
    pub fn from_clock(vv: VClock) -> Self {
        Self {
            vv,
            cloud: BTreeMap::new(),
            requests: BTreeMap::new(),
        }
    }

    /// The version-vector part.
    pub fn clock(&self) -> &VClock {
        &self.vv
    }

    /// The extra dots, with their timestamps.
    pub fn cloud(&self) -> impl Iterator<Item = (&Dot, &u64)> {
        self.cloud.iter()
    }

    /// The request ids it remembers, with their timestamps.
    pub fn requests(&self) -> impl Iterator<Item = (&u64, &u64)> {
        self.requests.iter()
    }

    /// True if it covers no event and remembers no request.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty() && self.requests.is_empty()
    }

    /// Number of vector entries plus cloud dots (its size, for pruning).
    pub fn len(&self) -> usize {
        self.vv.len() + self.cloud.len()
    }

    /// Does it cover `dot`?
    pub fn covers(&self, dot: &Dot) -> bool {
        self.vv.covers(dot) || self.cloud.contains_key(dot)
    }

    /// Has it seen a version written by request `id`?
    pub fn covers_request(&self, id: u64) -> bool {
        self.requests.contains_key(&id)
    }

    /// Does a write made with this context supersede the version `dot` written by
    /// `request_id`: it saw that version, or another attempt of the same request.
    pub fn covers_write(&self, dot: &Dot, request_id: Option<u64>) -> bool {
        self.covers(dot) || request_id.is_some_and(|id| self.covers_request(id))
    }

    /// Remembers request `id` (whose version is stamped `timestamp_ms`), keeping only
    /// the newest [`MAX_CONTEXT_REQUESTS`].
    pub fn add_request(&mut self, id: u64, timestamp_ms: u64) {
        let t = self.requests.entry(id).or_insert(timestamp_ms);
        *t = (*t).max(timestamp_ms);
        self.cap_requests(None);
    }

    /// Remembers request `id`, the one whose version this context is the history of,
    /// so that it is never the one the cap forgets here: it is stamped above every
    /// request remembered already (a Lamport stamp, so a write's request outranks the
    /// ones it saw even when their coordinators' clocks ran ahead), and kept even if
    /// a stamp from a skewed or forged token ties it.
    pub fn add_own_request(&mut self, id: u64, timestamp_ms: u64) {
        let stamp = self.request_stamp_after(timestamp_ms);
        let t = self.requests.entry(id).or_insert(stamp);
        *t = (*t).max(stamp);
        self.cap_requests(Some(id));
    }

    /// The stamp a request made at `timestamp_ms` from this context gets: later than
    /// any request it remembers.
    fn request_stamp_after(&self, timestamp_ms: u64) -> u64 {
        let newest = self.requests.values().copied().max();
        newest.map_or(timestamp_ms, |n| timestamp_ms.max(n.saturating_add(1)))
    }

    /// Keeps the newest requests by (timestamp, id), and `keep` whatever its stamp:
    /// without `keep`, the top of a union is the same whatever order contexts were
    /// merged in, so merge stays a semilattice.
    fn cap_requests(&mut self, keep: Option<u64>) {
        while self.requests.len() > MAX_CONTEXT_REQUESTS {
            let oldest = self
                .requests
                .iter()
                .filter(|(id, _)| Some(**id) != keep)
                .map(|(id, ts)| (*ts, *id))
                .min()
                .map(|(_, id)| id);
            match oldest {
                Some(id) => self.requests.remove(&id),
                None => break,
            };
        }
    }

    /// Highest counter of `actor` it covers (0 if none).
    pub fn max_counter(&self, actor: &Actor) -> u64 {
        let cloud_max = self
            .cloud
            .range(Dot::new(*actor, 0)..=Dot::new(*actor, u64::MAX))
            .next_back()
            .map_or(0, |(d, _)| d.counter);
        self.vv.get(actor).max(cloud_max)
    }

    /// The newest timestamp among the events it names (0 if none): a last-writer-wins
    /// write made from this context must be stamped later than this.
    pub fn max_timestamp(&self) -> u64 {
        let vv = self.vv.entries().iter().map(|e| e.timestamp_ms).max();
        let cloud = self.cloud.values().copied().max();
        vv.unwrap_or(0).max(cloud.unwrap_or(0))
    }

    /// The dot an actor would issue next after everything this context covers.
    pub fn next_dot(&self, actor: Actor) -> Dot {
        Dot::new(actor, self.max_counter(&actor) + 1)
    }

    /// Adds one event.
    pub fn add(&mut self, dot: Dot, timestamp_ms: u64) {
        if self.vv.covers(&dot) {
            return;
        }
        let ts = self
            .cloud
            .get(&dot)
            .map_or(timestamp_ms, |t| (*t).max(timestamp_ms));
        self.cloud.insert(dot, ts);
        self.normalize_actor(dot.actor);
    }

    /// Raises the vector entry of `actor` to `counter`: claims every event of `actor`
    /// up to it.
    pub fn cover_through(&mut self, actor: Actor, counter: u64, timestamp_ms: u64) {
        self.vv.witness(actor, counter, timestamp_ms);
        self.normalize_actor(actor);
    }

    /// Union with `other`.
    pub fn merge(&mut self, other: &Context) {
        self.vv.merge(&other.vv);
        for (d, ts) in &other.cloud {
            if !self.vv.covers(d) {
                let t = self.cloud.entry(*d).or_insert(*ts);
                *t = (*t).max(*ts);
            }
        }
        let actors: Vec<Actor> = self
            .cloud
            .keys()
            .map(|d| d.actor)
            .chain(other.vv.entries().iter().map(|e| e.actor))
            .collect();
        for a in actors {
            self.normalize_actor(a);
        }
        for (id, ts) in &other.requests {
            let t = self.requests.entry(*id).or_insert(*ts);
            *t = (*t).max(*ts);
        }
        self.cap_requests(None);
    }

    /// Covers every event `other` covers.
    pub fn descends(&self, other: &Context) -> bool {
        other
            .vv
            .entries()
            .iter()
            .all(|e| self.vv.get(&e.actor) >= e.counter)
            && other.cloud.keys().all(|d| self.covers(d))
    }

    /// How `self` relates to `other` as sets of events.
    pub fn compare(&self, other: &Context) -> Causality {
        Causality::from_descents(self.descends(other), other.descends(self))
    }

    /// Shrinks to at most `threshold` vector entries plus cloud dots, dropping the
    /// oldest timestamps first. A pruned context claims less than before (never more).
    pub fn prune(&mut self, threshold: usize) -> usize {
        let mut dropped = 0;
        while self.len() > threshold {
            let oldest_vv = self
                .vv
                .entries()
                .iter()
                .map(|e| (e.timestamp_ms, 0u8, Dot::new(e.actor, e.counter)))
                .min();
            let oldest_dot = self.cloud.iter().map(|(d, t)| (*t, 1u8, *d)).min();
            match oldest_vv.into_iter().chain(oldest_dot).min() {
                Some((_, 0, d)) => {
                    self.vv.remove(&d.actor);
                    self.normalize_actor(d.actor);
                }
                Some((_, _, d)) => {
                    self.cloud.remove(&d);
                }
                None => break,
            }
            dropped += 1;
        }
        dropped
    }

    /// Restores the normal form for one actor: drop covered cloud dots, fold the
    /// contiguous run that follows the vector entry.
    fn normalize_actor(&mut self, actor: Actor) {
        let mut next = self.vv.get(&actor);
        let lo = Dot::new(actor, 0);
        let covered: Vec<Dot> = self
            .cloud
            .range(lo..=Dot::new(actor, next))
            .map(|(d, _)| *d)
            .collect();
        for d in covered {
            self.cloud.remove(&d);
        }
        while let Some(ts) = self.cloud.remove(&Dot::new(actor, next + 1)) {
            next += 1;
            self.vv.witness(actor, next, ts);
        }
    }

    /// The binary encoding (format byte first).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 20 * self.len());
        self.encode_into(&mut out);
        out
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        // Format 1 when no request is remembered: what older builds wrote and read.
        out.push(if self.requests.is_empty() {
            CONTEXT_FORMAT
        } else {
            CONTEXT_FORMAT_REQUESTS
        });
        self.vv.encode(out);
        put_varint(out, self.cloud.len() as u64);
        for (d, ts) in &self.cloud {
            d.encode(out);
            put_varint(out, *ts);
        }
        if !self.requests.is_empty() {
            put_varint(out, self.requests.len() as u64);
            for (id, ts) in &self.requests {
                out.extend_from_slice(&id.to_be_bytes());
                put_varint(out, *ts);
            }
        }
    }

    /// Decodes [`Context::encode`]'s output; the whole input must be consumed.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "context");
        let c = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(c)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let format = r.u8()?;
        if format != CONTEXT_FORMAT && format != CONTEXT_FORMAT_REQUESTS {
            return Err(r.error(format!(
                "format byte {format}, expected {CONTEXT_FORMAT} or {CONTEXT_FORMAT_REQUESTS}"
            )));
        }
        let vv = VClock::decode(r)?;
        let n = r.bounded(MAX_DECODED_ENTRIES, "cloud dot count")?;
        let mut ctx = Context::from_clock(vv);
        for _ in 0..n {
            let d = Dot::decode(r)?;
            let ts = r.varint()?;
            ctx.add(d, ts);
        }
        if format == CONTEXT_FORMAT_REQUESTS {
            let n = r.bounded(MAX_DECODED_ENTRIES, "request id count")?;
            for _ in 0..n {
                let b = r.take(8)?;
                let id = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                let ts = r.varint()?;
                ctx.add_request(id, ts);
            }
        }
        Ok(ctx)
    }

    /// The printable form handed to clients: URL-safe base64 of the token format
    /// byte, the key's 32-bit fingerprint, and the binary encoding.
    pub fn to_token(&self, key_fingerprint: u32) -> String {
        let mut out = vec![TOKEN_FORMAT];
        out.extend_from_slice(&key_fingerprint.to_be_bytes());
        self.encode_into(&mut out);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Parses a token, checking it was issued for the key with `key_fingerprint`.
    pub fn from_token(token: &str, key_fingerprint: u32) -> Result<Self, ContextError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(ContextError::TooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|e| ContextError::NotBase64(e.to_string()))?;
        let mut r = Reader::new(&bytes, "context token");
        let format = r.u8()?;
        if format != TOKEN_FORMAT {
            return Err(ContextError::UnknownFormat {
                found: format,
                expected: TOKEN_FORMAT,
            });
        }
        let fp = r.take(4)?;
        let found = u32::from_be_bytes([fp[0], fp[1], fp[2], fp[3]]);
        if found != key_fingerprint {
            return Err(ContextError::WrongKey {
                found,
                expected: key_fingerprint,
            });
        }
        let ctx = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(ctx)
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.vv)?;
        if !self.cloud.is_empty() {
            f.write_str(" + [")?;
            for (i, d) in self.cloud.keys().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{d}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(actor: u64, counter: u64) -> Dot {
        Dot::new(Actor::new(actor, 0), counter)
    }

    #[test]
    fn gaps_stay_in_the_cloud_and_fill_in_folds() {
        let mut c = Context::new();
        c.add(d(1, 1), 1);
        c.add(d(1, 3), 3);
        assert!(c.covers(&d(1, 3)));
        assert!(!c.covers(&d(1, 2)), "a gap must not be claimed");
        assert_eq!(c.clock().get(&Actor::new(1, 0)), 1);
        assert_eq!(c.cloud().count(), 1);
        c.add(d(1, 2), 2);
        assert_eq!(c.clock().get(&Actor::new(1, 0)), 3);
        assert_eq!(c.cloud().count(), 0);
        assert_eq!(c.max_counter(&Actor::new(1, 0)), 3);
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_key() {
        let mut c = Context::new();
        c.add(d(7, 1), 5);
        c.add(d(9, 4), 6);
        let t = c.to_token(0xdead_beef);
        assert_eq!(Context::from_token(&t, 0xdead_beef).unwrap(), c);
        assert!(matches!(
            Context::from_token(&t, 1),
            Err(ContextError::WrongKey { .. })
        ));
        assert!(matches!(
            Context::from_token("not base64!", 1),
            Err(ContextError::NotBase64(_))
        ));
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        bytes.pop();
        let truncated = URL_SAFE_NO_PAD.encode(bytes);
        assert!(matches!(
            Context::from_token(&truncated, 0xdead_beef),
            Err(ContextError::Malformed(_))
        ));
    }

    #[test]
    fn requests_are_remembered_capped_and_round_trip() {
        let mut c = Context::new();
        c.add(d(1, 1), 5);
        assert_eq!(c.encode()[0], CONTEXT_FORMAT, "no request: the old format");
        for id in 0..(MAX_CONTEXT_REQUESTS as u64 + 3) {
            c.add_request(1000 + id, 10 + id);
        }
        assert_eq!(c.requests().count(), MAX_CONTEXT_REQUESTS);
        assert!(!c.covers_request(1000), "the oldest go first");
        assert!(c.covers_request(1000 + MAX_CONTEXT_REQUESTS as u64 + 2));
        assert!(c.covers_write(&d(9, 9), Some(1005)));
        assert!(!c.covers_write(&d(9, 9), Some(1)));
        assert!(!c.covers_write(&d(9, 9), None));
        let bytes = c.encode();
        assert_eq!(bytes[0], CONTEXT_FORMAT_REQUESTS);
        assert_eq!(Context::decode(&bytes).unwrap(), c);
        let t = c.to_token(7);
        assert_eq!(Context::from_token(&t, 7).unwrap(), c);
        let mut only = Context::new();
        only.add_request(3, 1);
        assert!(!only.is_empty());
        let mut bad = bytes.clone();
        bad[0] = 3;
        assert!(Context::decode(&bad).is_err());
    }

    #[test]
    fn merging_requests_is_a_union_capped_the_same_in_any_order() {
        let mut a = Context::new();
        let mut b = Context::new();
        let mut c = Context::new();
        for i in 0..6u64 {
            a.add_request(i, 100 + i);
            b.add_request(10 + i, 100 + 2 * i);
            c.add_request(i, 200 - i);
        }
        let mut ab_c = a.clone();
        ab_c.merge(&b);
        ab_c.merge(&c);
        let mut bc = b.clone();
        bc.merge(&c);
        let mut a_bc = a.clone();
        a_bc.merge(&bc);
        let mut c_b_a = c.clone();
        c_b_a.merge(&b);
        c_b_a.merge(&a);
        assert_eq!(ab_c, a_bc);
        assert_eq!(ab_c, c_b_a);
        assert_eq!(ab_c.requests().count(), MAX_CONTEXT_REQUESTS);
        let mut again = ab_c.clone();
        again.merge(&ab_c);
        assert_eq!(again, ab_c);
    }

    #[test]
    fn prune_claims_less_never_more() {
        let mut c = Context::new();
        for i in 0..15u64 {
            c.add(d(i, 1), 100 + i);
        }
        let before = c.clone();
        assert_eq!(c.prune(10), 5);
        assert_eq!(c.len(), 10);
        assert!(before.descends(&c));
        assert!(!c.covers(&d(0, 1)), "oldest dropped first");
        assert!(c.covers(&d(14, 1)));
    }
}

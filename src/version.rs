//! Versions and sibling sets: how one replica keeps the versions of one key.
//!
//! A [`Version`] is a value (or a tombstone) named by its [`Dot`] and carrying the
//! causal context it was written from (`past`). A [`Siblings`] set keeps every version
//! that no other version it knows supersedes; version `v` is superseded by `u` exactly
//! when `u.past` covers `v.dot` (whoever wrote `u` had seen `v`).
//!
//! Invariants of [`Siblings`] under the `siblings` policy:
//! - dots are unique and no kept version's dot is covered by another kept version's
//!   past (an antichain);
//! - [`Siblings::merge`] is commutative, associative and idempotent (it is "union, then
//!   drop the superseded"), so replicas that receive the same versions in any order,
//!   duplicated or not, hold the same set;
//! - a write with context `C` drops exactly the versions `C` covers and keeps the rest,
//!   including a concurrent write from the same coordinator; "covers" includes the
//!   versions of any request `C` remembers (a retried request's other attempts);
//! - at most one version per client request id: attempts of one request that
//!   coordinators wrote under different dots collapse to the lowest dot.
//!
//! Under `lww` a set holds one version: the greatest by (timestamp, dot). That is a
//! total order, so merge is again a semilattice; it ignores causality, as the paper's
//! timestamp reconciliation does.

use crate::codec::{put_bytes, put_varint, DecodeError, Reader};
use crate::context::Context;
use crate::dot::Dot;

/// How a store reconciles concurrent versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// Keep concurrent versions as siblings and return them all (the default).
    #[default]
    Siblings,
    /// Keep only the version with the newest timestamp (ties: highest dot).
    Lww,
}

impl std::fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Siblings => "siblings",
            Self::Lww => "lww",
        })
    }
}

impl std::str::FromStr for ConflictPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "siblings" => Ok(Self::Siblings),
            "lww" => Ok(Self::Lww),
            other => Err(format!(
                "unknown conflict policy {other:?}; use \"siblings\" or \"lww\""
            )),
        }
    }
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The write that made it.
    pub dot: Dot,
    /// What its writer had seen: the versions it supersedes.
    pub past: Context,
    /// Wall-clock milliseconds at the coordinator (used by `lww` and for pruning).
    pub timestamp_ms: u64,
    /// The value, or `None` for a tombstone (a delete).
    pub value: Option<Vec<u8>>,
    /// The client's id for the request that wrote it, if it sent one: a retry of the
    /// same request finds this version instead of writing a second one.
    pub request_id: Option<u64>,
}

/// Kind-byte flag: the version is a tombstone.
const KIND_TOMBSTONE: u8 = 1;
/// Kind-byte flag: a request id follows the timestamp.
const KIND_REQUEST_ID: u8 = 2;

impl Version {
    /// True for a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Its past plus its own dot (and request): everything a reader of this version
    /// has seen.
    pub fn history(&self) -> Context {
        let mut h = self.past.clone();
        h.add(self.dot, self.timestamp_ms);
        if let Some(id) = self.request_id {
            h.add_own_request(id, self.timestamp_ms);
        }
        h
    }

    fn lww_rank(&self) -> (u64, Dot) {
        (self.timestamp_ms, self.dot)
    }

    /// Appends the binary encoding (kind flags, dot, timestamp, request id if any,
    /// past, value). A version without a request id encodes as before request ids
    /// existed.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut kind = if self.value.is_some() {
            0
        } else {
            KIND_TOMBSTONE
        };
        if self.request_id.is_some() {
            kind |= KIND_REQUEST_ID;
        }
        out.push(kind);
        self.dot.encode(out);
        put_varint(out, self.timestamp_ms);
        if let Some(id) = self.request_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        self.past.encode_into(out);
        if let Some(v) = &self.value {
            put_bytes(out, v);
        }
    }

    /// Reads one version; values longer than `max_value` are refused.
    pub fn decode_from(r: &mut Reader<'_>, max_value: u64) -> Result<Self, DecodeError> {
        let kind = r.u8()?;
        if kind & !(KIND_TOMBSTONE | KIND_REQUEST_ID) != 0 {
            return Err(r.error(format!("unknown version kind {kind}")));
        }
        let dot = Dot::decode(r)?;
        let timestamp_ms = r.varint()?;
        let request_id = if kind & KIND_REQUEST_ID != 0 {
            let b = r.take(8)?;
            let mut id = [0u8; 8];
            id.copy_from_slice(b);
            Some(u64::from_be_bytes(id))
        } else {
            None
        };
        let past = Context::decode_from(r)?;
        let value = if kind & KIND_TOMBSTONE == 0 {
            Some(r.bytes(max_value, "value length")?.to_vec())
        } else {
            None
        };
        Ok(Self {
            dot,
            past,
            timestamp_ms,
            value,
            request_id,
        })
    }
}

/// The versions of one key held by one replica. Kept sorted by dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Siblings {
    versions: Vec<Version>,
}

impl Siblings {
    /// No versions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from arbitrary versions (merging them under `policy`).
    pub fn from_versions(versions: Vec<Version>, policy: ConflictPolicy) -> Self {
        let mut s = Self::new();
        s.merge(versions, policy);
        s
    }

    /// The versions, sorted by dot.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// Consumes the set.
    pub fn into_versions(self) -> Vec<Version> {
        self.versions
    }

    /// Number of versions (tombstones included).
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// True if the key has no versions here.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// The bytes of all values together (what the record size limit counts).
    pub fn value_bytes(&self) -> usize {
        self.versions
            .iter()
            .map(|v| v.value.as_ref().map_or(0, Vec::len))
            .sum()
    }

    /// The version written by request `id`, if this set still holds it.
    pub fn written_by(&self, id: u64) -> Option<&Version> {
        self.versions.iter().find(|v| v.request_id == Some(id))
    }

    /// The versions here that other attempts of the requests that wrote `sent` made:
    /// same request id, another dot. What a replica answers a write with, so the
    /// coordinator's answer covers every attempt.
    pub fn other_attempts(&self, sent: &[(Dot, u64)]) -> Vec<Version> {
        if sent.is_empty() {
            return Vec::new();
        }
        self.versions
            .iter()
            .filter(|v| {
                v.request_id
                    .is_some_and(|id| sent.iter().any(|(d, s)| *s == id && *d != v.dot))
            })
            .cloned()
            .collect()
    }

    /// The (dot, request id) of each version that has a request id: what
    /// [`Siblings::other_attempts`] compares with.
    pub fn attempts_of(versions: &[Version]) -> Vec<(Dot, u64)> {
        versions
            .iter()
            .filter_map(|v| v.request_id.map(|id| (v.dot, id)))
            .collect()
    }

    /// True if every version is a tombstone (and there is at least one).
    pub fn all_tombstones(&self) -> bool {
        !self.versions.is_empty() && self.versions.iter().all(Version::is_tombstone)
    }

    /// A context covering exactly these versions and everything they supersede, and
    /// remembering the requests that wrote them (so it supersedes their other
    /// attempts' versions too).
    pub fn context(&self) -> Context {
        let mut c = Context::new();
        for v in &self.versions {
            c.merge(&v.history());
        }
        c
    }

    /// Merges `incoming` in. Returns true if the set changed.
    pub fn merge(
        &mut self,
        incoming: impl IntoIterator<Item = Version>,
        policy: ConflictPolicy,
    ) -> bool {
        let before = self.versions.clone();
        let mut all = std::mem::take(&mut self.versions);
        all.extend(incoming);
        match policy {
            ConflictPolicy::Lww => {
                // Ties on (timestamp, dot) mean the same write; pick by encoding so the
                // choice does not depend on arrival order.
                let best = all.into_iter().max_by(|a, b| {
                    a.lww_rank()
                        .cmp(&b.lww_rank())
                        .then_with(|| encoded(a).cmp(&encoded(b)))
                });
                self.versions = best.into_iter().collect();
            }
            ConflictPolicy::Siblings => {
                all.sort_by(|a, b| a.dot.cmp(&b.dot).then_with(|| encoded(a).cmp(&encoded(b))));
                // One version per dot (a dot names one write; duplicates are redeliveries).
                all.dedup_by(|later, earlier| later.dot == earlier.dot);
                let superseded: Vec<bool> = all
                    .iter()
                    .map(|v| all.iter().any(|u| supersedes(u, v)))
                    .collect();
                let alive: Vec<Version> = all
                    .into_iter()
                    .zip(superseded)
                    .filter_map(|(v, dead)| (!dead).then_some(v))
                    .collect();
                // Then one version per request among the survivors (a dead attempt
                // never takes a live one with it).
                let twin: Vec<bool> = alive
                    .iter()
                    .map(|v| alive.iter().any(|u| stands_for(u, v)))
                    .collect();
                self.versions = alive
                    .into_iter()
                    .zip(twin)
                    .filter_map(|(v, dead)| (!dead).then_some(v))
                    .collect();
            }
        }
        self.versions != before
    }

    /// The context to hand back after writing `written`: what the writer's context
    /// covered, the new dot and request, and the pasts of the surviving siblings
    /// (versions they supersede are dead everywhere those siblings exist, so claiming
    /// them changes nothing; it keeps interleaved writers' contexts compact).
    /// It never covers a surviving sibling the writer had not seen, and it always
    /// remembers the written request (added last, kept by the cap), so whatever is
    /// made with it supersedes every attempt of that request.
    pub fn context_after_write(&self, written: &Version, writer_context: &Context) -> Context {
        let mut c = writer_context.clone();
        c.add(written.dot, written.timestamp_ms);
        for v in &self.versions {
            if v.dot != written.dot {
                c.merge(&v.past);
            }
        }
        if let Some(id) = written.request_id {
            c.add_own_request(id, written.timestamp_ms);
        }
        c
    }
}

/// Does `u` make `v` dead in one sibling set (`siblings` policy)? `u`'s writer had
/// seen `v` (its past covers `v`'s dot), or had seen another attempt of the request
/// that wrote `v` (its past remembers that request; see `Context`'s request memory).
/// A request's attempts never supersede one another this way (see [`stands_for`]).
fn supersedes(u: &Version, v: &Version) -> bool {
    if u.dot == v.dot {
        return false;
    }
    if u.past.covers(&v.dot) {
        return true;
    }
    match v.request_id {
        Some(id) => u.request_id != Some(id) && u.past.covers_request(id),
        None => false,
    }
}

/// Among versions no other supersedes: are `u` and `v` attempts of one request (same
/// request id) and `u` the one that stands for it? The lowest dot does, so merges
/// never keep two versions of one request and every replica keeps the same one. A
/// context that covers the kept one's dot also remembers its request
/// ([`Siblings::context`]), so whatever supersedes it supersedes the others too.
fn stands_for(u: &Version, v: &Version) -> bool {
    u.dot < v.dot && v.request_id.is_some() && u.request_id == v.request_id
}

fn encoded(v: &Version) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode_into(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::MAX_CONTEXT_REQUESTS;
    use crate::dot::Actor;

    fn version(actor: u64, counter: u64, past: &Context, value: &str) -> Version {
        Version {
            dot: Dot::new(Actor::new(actor, 1), counter),
            past: past.clone(),
            timestamp_ms: counter,
            value: Some(value.as_bytes().to_vec()),
            request_id: None,
        }
    }

    #[test]
    fn a_write_drops_only_what_its_context_covers() {
        let mut s = Siblings::new();
        let v1 = version(1, 1, &Context::new(), "a");
        let v2 = version(1, 2, &Context::new(), "b");
        s.merge([v1.clone(), v2.clone()], ConflictPolicy::Siblings);
        assert_eq!(s.len(), 2);
        let v3 = version(1, 3, &v1.history(), "c");
        s.merge([v3.clone()], ConflictPolicy::Siblings);
        assert_eq!(s.versions(), &[v2, v3]);
    }

    fn attempt(actor: u64, counter: u64, past: &Context, id: u64) -> Version {
        Version {
            request_id: Some(id),
            ..version(actor, counter, past, "retried")
        }
    }

    #[test]
    fn two_attempts_of_one_request_keep_one_version_in_any_order() {
        let base = version(5, 1, &Context::new(), "base");
        let first = attempt(1, 4, &base.history(), 77);
        let retry = attempt(2, 1, &base.history(), 77);
        let other = version(3, 1, &Context::new(), "concurrent");
        let mut a = Siblings::new();
        a.merge([first.clone(), other.clone()], ConflictPolicy::Siblings);
        a.merge([retry.clone()], ConflictPolicy::Siblings);
        let mut b = Siblings::new();
        b.merge([retry.clone()], ConflictPolicy::Siblings);
        b.merge([other.clone(), first.clone()], ConflictPolicy::Siblings);
        assert_eq!(a, b);
        let kept = first.dot.min(retry.dot);
        assert_eq!(
            a.versions()
                .iter()
                .filter(|v| v.request_id == Some(77))
                .count(),
            1,
            "{a:?}"
        );
        assert!(a.versions().iter().any(|v| v.dot == kept));
        assert!(
            a.versions().iter().any(|v| v.dot == other.dot),
            "a concurrent write stays"
        );
    }

    #[test]
    fn a_write_from_one_attempt_supersedes_every_attempt() {
        let first = attempt(1, 1, &Context::new(), 42);
        let retry = attempt(2, 1, &Context::new(), 42);
        // The client saw only the retry's answer and deletes with it.
        let mut seen = Siblings::new();
        seen.merge([retry.clone()], ConflictPolicy::Siblings);
        let delete = Version {
            value: None,
            ..version(2, 2, &seen.context(), "")
        };
        // The first attempt's version, on a replica that never saw the retry, meets it.
        let mut s = Siblings::new();
        s.merge([first.clone()], ConflictPolicy::Siblings);
        s.merge([delete.clone()], ConflictPolicy::Siblings);
        assert_eq!(s.versions(), std::slice::from_ref(&delete));
        // And the other way round.
        let mut t = Siblings::new();
        t.merge([delete.clone()], ConflictPolicy::Siblings);
        t.merge([first, retry], ConflictPolicy::Siblings);
        assert_eq!(t.versions(), &[delete]);
    }

    #[test]
    fn a_write_remembers_its_request_even_after_requests_stamped_in_its_future() {
        // The writer's context remembers eight requests from a coordinator whose
        // clock ran far ahead (or a forged token): the write's own request must not be
        // the one the cap forgets, or another attempt of it would survive a delete.
        let mut seen = Context::new();
        for id in 100..100 + MAX_CONTEXT_REQUESTS as u64 {
            seen.add_request(id, u64::MAX - 1);
        }
        let written = attempt(2, 1, &seen, 42);
        let mut here = Siblings::new();
        here.merge([written.clone()], ConflictPolicy::Siblings);
        let answer = here.context_after_write(&written, &seen);
        assert!(answer.covers_request(42), "{answer:?}");
        assert!(written.history().covers_request(42));
        assert!(here.context().covers_request(42));
        // So a delete made with the answer supersedes an attempt it never saw.
        let first = attempt(1, 7, &Context::new(), 42);
        let delete = Version {
            value: None,
            ..version(2, 2, &answer, "")
        };
        let mut s = Siblings::new();
        s.merge([first, delete.clone()], ConflictPolicy::Siblings);
        assert_eq!(s.versions(), &[delete]);
    }

    #[test]
    fn a_request_id_never_drops_an_unrelated_write() {
        let mut past = Context::new();
        past.add_request(9, 1);
        let w = version(1, 1, &past, "remembers 9");
        let unrelated = attempt(2, 1, &Context::new(), 10);
        let s =
            Siblings::from_versions(vec![w.clone(), unrelated.clone()], ConflictPolicy::Siblings);
        assert_eq!(s.len(), 2);
        // A version whose own request its past names is kept (a request never drops itself).
        let mut own = Context::new();
        own.add_request(11, 1);
        let a = attempt(3, 1, &own, 11);
        let b = attempt(4, 1, &Context::new(), 11);
        let s = Siblings::from_versions(vec![a.clone(), b], ConflictPolicy::Siblings);
        assert_eq!(s.versions(), &[a]);
    }

    #[test]
    fn lww_keeps_the_newest_timestamp() {
        let mut s = Siblings::new();
        let mut old = version(2, 1, &Context::new(), "old");
        old.timestamp_ms = 50;
        let mut new = version(1, 1, &Context::new(), "new");
        new.timestamp_ms = 60;
        s.merge([new.clone(), old.clone()], ConflictPolicy::Lww);
        assert_eq!(s.versions(), &[new.clone()]);
        let mut t = Siblings::new();
        t.merge([old], ConflictPolicy::Lww);
        t.merge([new.clone()], ConflictPolicy::Lww);
        assert_eq!(t.versions(), &[new]);
    }

    #[test]
    fn versions_round_trip_and_tombstones_have_no_value() {
        let mut past = Context::new();
        past.add(Dot::new(Actor::new(9, 2), 4), 77);
        let cases = [Some(b"hello".to_vec()), None]
            .into_iter()
            .flat_map(|v| [(v.clone(), None), (v, Some(0xfeed_u64))]);
        for (value, request_id) in cases {
            let v = Version {
                dot: Dot::new(Actor::new(3, 1), 5),
                past: past.clone(),
                timestamp_ms: 1234,
                value,
                request_id,
            };
            let bytes = encoded(&v);
            let mut r = Reader::new(&bytes, "version");
            assert_eq!(Version::decode_from(&mut r, 1024).unwrap(), v);
            r.finish().unwrap();
        }
    }
}

//! Actors and dots: the names of write events.
//!
//! An [`Actor`] is whoever issues dots for a key. It is a node's *incarnation* (a random
//! id created together with the node's data, so a node that lost its data starts a new
//! incarnation and never reuses counters: Riak's kv679 lost writes) plus an *epoch*
//! that the node opens each time it starts coordinating a key it does not continuously
//! hold (a new key, a reaped key, a key that moved away and back). Within one
//! (actor, key) the counters are contiguous from 1, which keeps contexts compact.
//!
//! A [`Dot`] is one event: (actor, counter). Invariant: a dot names at most one version
//! of one key, ever.

use std::fmt;

use crate::codec::{put_varint, DecodeError, Reader};

/// The issuer of dots: a node incarnation and a per-key-life epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Actor {
    /// Random id created with the node's data; never reused.
    pub incarnation: u64,
    /// Opened when the incarnation starts a new run of counters for a key.
    pub epoch: u64,
}

impl Actor {
    /// An actor from its parts.
    pub fn new(incarnation: u64, epoch: u64) -> Self {
        Self { incarnation, epoch }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        put_varint(out, self.epoch);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let b = r.take(8)?;
        let mut inc = [0u8; 8];
        inc.copy_from_slice(b);
        Ok(Self {
            incarnation: u64::from_be_bytes(inc),
            epoch: r.varint()?,
        })
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{}", self.incarnation, self.epoch)
    }
}

/// One write event: the `counter`-th event of `actor` on a key. Counters start at 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Dot {
    /// Who issued it.
    pub actor: Actor,
    /// Which of that actor's events it is (1-based).
    pub counter: u64,
}

impl Dot {
    /// A dot from its parts.
    pub fn new(actor: Actor, counter: u64) -> Self {
        Self { actor, counter }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        self.actor.encode(out);
        put_varint(out, self.counter);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let actor = Actor::decode(r)?;
        let counter = r.varint()?;
        if counter == 0 {
            return Err(r.error("dot counter 0 (counters start at 1)"));
        }
        Ok(Self { actor, counter })
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.actor, self.counter)
    }
}

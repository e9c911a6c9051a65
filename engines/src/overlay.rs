//! Overlaying a sorted set of pending changes on an underlying scan (the buffered engine's
//! view: buffer first, then the durable engine).

use std::cmp::Ordering;
use std::iter::Peekable;

use crate::engine::{Direction, KvPair, ScanIter};
use crate::error::Result;

/// A pending change: `Some(value)` puts, `None` deletes.
pub(crate) type Change = (Vec<u8>, Option<Vec<u8>>);

/// Yields `base` with `overlay` applied on top: an overlay entry `Some(v)` replaces or adds
/// its key, `None` hides it. `overlay` must be sorted in `direction` order, as `base` is.
pub(crate) struct OverlayScan<'a> {
    base: Peekable<ScanIter<'a>>,
    overlay: Peekable<std::vec::IntoIter<Change>>,
    direction: Direction,
}

impl<'a> OverlayScan<'a> {
    pub(crate) fn new(base: ScanIter<'a>, overlay: Vec<Change>, direction: Direction) -> Self {
        OverlayScan {
            base: base.peekable(),
            overlay: overlay.into_iter().peekable(),
            direction,
        }
    }
}

/// Orders two keys as a scan in `direction` yields them.
fn order(direction: Direction, a: &[u8], b: &[u8]) -> Ordering {
    match direction {
        Direction::Forward => a.cmp(b),
        Direction::Reverse => b.cmp(a),
    }
}

impl Iterator for OverlayScan<'_> {
    type Item = Result<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_overlay = match (self.base.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.base.next(),
                (None, Some(_)) => true,
                (Some(_), None) => return self.base.next(),
                (Some(Ok((bk, _))), Some((ok, _))) => match order(self.direction, bk, ok) {
                    Ordering::Less => return self.base.next(),
                    Ordering::Equal => {
                        // The overlay is newer: drop the base's version of this key.
                        self.base.next();
                        true
                    }
                    Ordering::Greater => true,
                },
            };
            if take_overlay {
                // A pending delete (`None`) yields nothing: skip the key and look again.
                if let Some((k, Some(v))) = self.overlay.next() {
                    return Some(Ok((k, v)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(keys: &[&[u8]]) -> Vec<KvPair> {
        keys.iter().map(|k| (k.to_vec(), k.to_vec())).collect()
    }

    #[test]
    fn overlay_replaces_adds_and_hides() {
        let base: ScanIter<'static> = Box::new(pairs(&[b"a", b"b", b"d"]).into_iter().map(Ok));
        let overlay = vec![
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(b"C".to_vec())),
            (b"d".to_vec(), Some(b"D".to_vec())),
            (b"e".to_vec(), None),
        ];
        let got: Vec<KvPair> = OverlayScan::new(base, overlay, Direction::Forward)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), b"a".to_vec()),
                (b"c".to_vec(), b"C".to_vec()),
                (b"d".to_vec(), b"D".to_vec()),
            ]
        );
    }
}

//! Scan building blocks shared by the backends: paging through a range in chunks, and
//! overlaying a sorted set of pending changes on an underlying scan.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::iter::Peekable;
use std::ops::Bound;

use crate::engine::{Direction, KeyRange, KvPair, ScanIter};
use crate::error::Result;

/// Pages through `range` with a bounded query per page, so a backend holds no lock or
/// statement between pages. Invariant: each page starts strictly after (before, in reverse)
/// the last key yielded, so no key is yielded twice and order is kept.
pub(crate) struct ChunkedScan<F> {
    fetch: F,
    range: KeyRange,
    direction: Direction,
    page: VecDeque<KvPair>,
    page_size: usize,
    exhausted: bool,
}

impl<F> ChunkedScan<F>
where
    F: FnMut(&KeyRange, Direction, usize) -> Result<Vec<KvPair>>,
{
    /// `fetch(range, direction, limit)` returns up to `limit` pairs of `range`, in order.
    pub(crate) fn new(range: KeyRange, direction: Direction, page_size: usize, fetch: F) -> Self {
        let exhausted = range.is_empty();
        ChunkedScan {
            fetch,
            range,
            direction,
            page: VecDeque::new(),
            page_size: page_size.max(1),
            exhausted,
        }
    }
}

impl<F> Iterator for ChunkedScan<F>
where
    F: FnMut(&KeyRange, Direction, usize) -> Result<Vec<KvPair>>,
{
    type Item = Result<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.exhausted && self.range.is_empty() {
            // Backends may reject inverted ranges (BTreeMap::range panics on them).
            self.exhausted = true;
        }
        if self.page.is_empty() && !self.exhausted {
            match (self.fetch)(&self.range, self.direction, self.page_size) {
                Ok(rows) => {
                    if rows.len() < self.page_size {
                        self.exhausted = true;
                    }
                    if let Some((last, _)) = rows.last() {
                        let after = Bound::Excluded(last.clone());
                        match self.direction {
                            Direction::Forward => self.range.start = after,
                            Direction::Reverse => self.range.end = after,
                        }
                    }
                    self.page = rows.into();
                }
                Err(e) => {
                    self.exhausted = true;
                    return Some(Err(e));
                }
            }
        }
        self.page.pop_front().map(Ok)
    }
}

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
    fn chunked_scan_pages_without_repeats() {
        let data = pairs(&[b"a", b"b", b"c", b"d", b"e"]);
        for direction in [Direction::Forward, Direction::Reverse] {
            let src = data.clone();
            let scan = ChunkedScan::new(KeyRange::all(), direction, 2, move |r, d, n| {
                let mut rows: Vec<KvPair> =
                    src.iter().filter(|(k, _)| r.contains(k)).cloned().collect();
                if d == Direction::Reverse {
                    rows.reverse();
                }
                rows.truncate(n);
                Ok(rows)
            });
            let keys: Vec<Vec<u8>> = scan.map(|r| r.unwrap().0).collect();
            let mut want: Vec<Vec<u8>> = data.iter().map(|(k, _)| k.clone()).collect();
            if direction == Direction::Reverse {
                want.reverse();
            }
            assert_eq!(keys, want);
        }
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

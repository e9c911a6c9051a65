//! Paging through a range in chunks, for backends that cannot hold an iterator open
//! (a lock or a statement) across calls.

use std::collections::VecDeque;
use std::ops::Bound;

use crate::engine::{Direction, KeyRange, KvPair};
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
}

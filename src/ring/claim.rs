//! The claim algorithm: who owns which partition.
//!
//! Owners are member indices per partition. Three operations:
//! - [`fresh`] assigns Q partitions to S members round-robin-like, each getting ⌊Q/S⌋
//!   or ⌈Q/S⌉, skipping a member whenever it would own two partitions within `n`
//!   consecutive ones (the ring wraps, so the tail also looks at the head);
//! - [`join`] gives a new member exactly ⌊Q/(S+1)⌋ partitions, taken one at a time
//!   from members that are allowed to shrink (so every count ends within ⌊⌋/⌈⌉),
//!   choosing each time a partition far from the newcomer's others, so it never
//!   repeats within a window of `n` while such a choice exists, and then swapping
//!   which partition it took from a donor where that cleans a window;
//! - [`leave`] hands each of the leaving member's partitions to an allowed receiver
//!   (least loaded first) that does not already own a partition within `n - 1` of it;
//!   when balance leaves no such receiver, it then swaps the owners of pairs of
//!   partitions (at most one swap per partition the leaver owned) while that removes
//!   windows with a repeated owner. So a leave moves the leaver's partitions plus at
//!   most twice as many others.
//!
//! "Allowed" keeps the balance invariant exact: a member may go from the final floor
//! to the final ceiling (or the reverse) only while the remaining moves can still
//! bring every other member inside the bounds.

/// Number of cyclic windows of `n` consecutive partitions with a repeated owner.
pub(super) fn violations(owners: &[u32], n: usize) -> usize {
    let q = owners.len();
    let w = n.min(q);
    if w <= 1 {
        return 0;
    }
    (0..q)
        .filter(|&i| {
            let window: Vec<u32> = (0..w).map(|k| owners[(i + k) % q]).collect();
            (1..w).any(|a| window[..a].contains(&window[a]))
        })
        .count()
}

/// Cyclic distance between partitions `a` and `b` on a ring of `q`.
fn distance(a: usize, b: usize, q: usize) -> usize {
    let d = a.abs_diff(b);
    d.min(q - d)
}

/// Does `member` own a partition within `n - 1` steps of `p` (other than `p`)?
fn near(owners: &[u32], p: usize, member: u32, n: usize) -> bool {
    let q = owners.len();
    let reach = (n.saturating_sub(1)).min(q / 2);
    (1..=reach).any(|k| owners[(p + k) % q] == member || owners[(p + q - k) % q] == member)
}

/// Assigns `q` partitions to members `0..s`.
pub(super) fn fresh(q: usize, s: usize, n: usize) -> Vec<u32> {
    if s <= 1 {
        return vec![0; q];
    }
    let f = q / s;
    let r = q % s;
    let mut counts = vec![0usize; s];
    let mut at_ceil = 0usize;
    let mut last_used: Vec<Option<usize>> = vec![None; s];
    let mut owners: Vec<u32> = Vec::with_capacity(q);
    for p in 0..q {
        let deficit: usize = counts.iter().map(|&c| f.saturating_sub(c)).sum();
        let remaining_after = q - p - 1;
        let feasible = |m: usize| {
            counts[m] < f || (counts[m] == f && at_ceil < r && deficit <= remaining_after)
        };
        let clean = |m: usize| {
            let back = (n.saturating_sub(1)).min(p);
            let before = owners[p - back..p].contains(&(m as u32));
            // A window starting near the tail wraps onto the head.
            let head = (p + n).saturating_sub(q).min(p);
            let after = owners[..head].contains(&(m as u32));
            !before && !after
        };
        let lru = |m: usize| (last_used[m].map_or(0, |u| u + 1), m);
        let pick = (0..s)
            .filter(|&m| feasible(m) && clean(m))
            .min_by_key(|&m| lru(m))
            .or_else(|| (0..s).filter(|&m| feasible(m)).min_by_key(|&m| lru(m)))
            .unwrap_or_else(|| (0..s).min_by_key(|&m| counts[m]).unwrap_or(0));
        if counts[pick] == f {
            at_ceil += 1;
        }
        counts[pick] += 1;
        last_used[pick] = Some(p);
        owners.push(pick as u32);
    }
    owners
}

/// Gives the new member `new_idx` (members before it: `0..s_old`) ⌊Q/(S+1)⌋
/// partitions. Returns (partition, previous owner) for each move.
pub(super) fn join(owners: &mut [u32], s_old: usize, new_idx: u32, n: usize) -> Vec<(u32, u32)> {
    let q = owners.len();
    let s_new = s_old + 1;
    let f = q / s_new;
    let mut counts = vec![0usize; s_old];
    for &o in owners.iter() {
        counts[o as usize] += 1;
    }
    // Distance from each partition to the nearest partition of the newcomer.
    let mut dist = vec![usize::MAX; q];
    let mut moves = Vec::with_capacity(f);
    for steals_left in (1..=f).rev() {
        let must: usize = counts.iter().map(|&c| c.saturating_sub(f + 1)).sum();
        let donor_ok = |m: usize| counts[m] >= f + 2 || (counts[m] == f + 1 && must < steals_left);
        let best = (0..q)
            .filter(|&p| owners[p] != new_idx && donor_ok(owners[p] as usize))
            .max_by_key(|&p| {
                let clean = dist[p] >= n;
                let fixes = near(owners, p, owners[p], n);
                (clean, fixes, dist[p], std::cmp::Reverse(p))
            })
            .or_else(|| {
                // Balance cannot be kept exactly (the ring was unbalanced to begin
                // with): take from the most loaded member.
                (0..q)
                    .filter(|&p| owners[p] != new_idx)
                    .max_by_key(|&p| (counts[owners[p] as usize], std::cmp::Reverse(p)))
            });
        let Some(p) = best else { break };
        let from = owners[p];
        counts[from as usize] -= 1;
        owners[p] = new_idx;
        moves.push((p as u32, from));
        for (i, d) in dist.iter_mut().enumerate() {
            *d = (*d).min(distance(i, p, q));
        }
    }
    // Where balance forced an unclean pick, re-choose which partition to take from the
    // same donor: swapping a taken partition back for another of its donor's keeps
    // every count and keeps all moves going to the newcomer.
    let mut original: Vec<u32> = owners.to_vec();
    for &(p, from) in &moves {
        original[p as usize] = from;
    }
    repair_spread(owners, n, moves.len(), |o, (a, b)| {
        (o[a] == new_idx && o[b] == original[a]) || (o[b] == new_idx && o[a] == original[b])
    });
    let mut moves: Vec<(u32, u32)> = (0..q)
        .filter(|&p| owners[p] != original[p])
        .map(|p| (p as u32, original[p]))
        .collect();
    moves.sort_unstable();
    moves
}

/// Reassigns every partition of `leaving` (one of `0..s_old`) to the others, then
/// repairs the spread with at most one owner swap per reassigned partition (swaps keep
/// every count, so the balance holds). The caller diffs owners to learn what moved.
pub(super) fn leave(owners: &mut [u32], s_old: usize, leaving: u32, n: usize) {
    let orphans = reassign_orphans(owners, s_old, leaving, n);
    repair_spread(owners, n, orphans, |_, _| true);
}

/// Swaps owners of two partitions while that lowers the number of windows with a
/// repeated owner; at most `max_swaps` swaps, each allowed by `allowed(owners, (p, p2))`.
fn repair_spread(
    owners: &mut [u32],
    n: usize,
    max_swaps: usize,
    allowed: impl Fn(&[u32], (usize, usize)) -> bool,
) {
    let q = owners.len();
    let w = n.min(q);
    if w <= 1 {
        return;
    }
    // Whether the window of `w` partitions from `start` repeats an owner (no
    // allocation: this runs for every candidate swap).
    let bad_at = |owners: &[u32], start: usize| {
        (1..w).any(|a| {
            let x = owners[(start + a) % q];
            (0..a).any(|b| owners[(start + b) % q] == x)
        })
    };
    // The bad windows among those containing p or p2, each counted once.
    let bad_around = |owners: &[u32], p: usize, p2: usize| {
        let of_p = (0..w).map(|k| (p + q - k) % q);
        let of_p2 = (0..w)
            .map(|k| (p2 + q - k) % q)
            .filter(|&s| (p + q - s) % q >= w);
        of_p.chain(of_p2).filter(|&s| bad_at(owners, s)).count() as isize
    };
    let members = owners.iter().max().map_or(0, |&m| m as usize + 1);
    for _ in 0..max_swaps {
        // bad[pos * members + m]: the bad windows containing `pos` were `m` its owner.
        // When p and p2 are at least `w` apart no window holds both, and a swap's
        // effect is the sum of its effects at each end: read from this table.
        let mut bad = vec![0isize; q * members];
        for pos in 0..q {
            let own = owners[pos];
            for m in 0..members {
                owners[pos] = m as u32;
                bad[pos * members + m] = (0..w)
                    .filter(|&k| bad_at(owners, (pos + q - k) % q))
                    .count() as isize;
            }
            owners[pos] = own;
        }
        let at = |pos: usize, m: u32| bad[pos * members + m as usize];
        let culprits: Vec<usize> = (0..q).filter(|&p| near(owners, p, owners[p], n)).collect();
        let mut best: Option<(isize, usize, usize)> = None;
        for &p in &culprits {
            let a = owners[p];
            for p2 in 0..q {
                let b = owners[p2];
                if b == a || !allowed(owners, (p, p2)) {
                    continue;
                }
                let delta = if distance(p, p2, q) >= w {
                    (at(p, b) - at(p, a)) + (at(p2, a) - at(p2, b))
                } else {
                    let before = bad_around(owners, p, p2);
                    owners.swap(p, p2);
                    let after = bad_around(owners, p, p2);
                    owners.swap(p, p2);
                    after - before
                };
                if delta < 0 && best.is_none_or(|(d, _, _)| delta < d) {
                    best = Some((delta, p, p2));
                }
            }
        }
        match best {
            Some((_, p, p2)) => owners.swap(p, p2),
            None => break,
        }
    }
}

/// Gives each partition of `leaving` to an allowed, least-loaded member that keeps the
/// windows clean where it can. Returns how many partitions it reassigned.
fn reassign_orphans(owners: &mut [u32], s_old: usize, leaving: u32, n: usize) -> usize {
    let q = owners.len();
    let s_new = s_old - 1;
    let f = q / s_new;
    let mut counts = vec![0usize; s_old];
    for &o in owners.iter() {
        counts[o as usize] += 1;
    }
    let orphans: Vec<usize> = (0..q).filter(|&p| owners[p] == leaving).collect();
    for (i, &p) in orphans.iter().enumerate() {
        let left = orphans.len() - i;
        let others = || (0..s_old as u32).filter(|&m| m != leaving);
        let deficit: usize = others().map(|m| f.saturating_sub(counts[m as usize])).sum();
        let ok = |m: u32| {
            let c = counts[m as usize];
            c < f || (c == f && deficit < left)
        };
        let score = |m: u32| {
            (
                !near(owners, p, m, n),
                std::cmp::Reverse(counts[m as usize]),
                std::cmp::Reverse(m),
            )
        };
        let to = others()
            .filter(|&m| ok(m))
            .max_by_key(|&m| score(m))
            .or_else(|| others().min_by_key(|&m| counts[m as usize]))
            .unwrap_or(0);
        counts[to as usize] += 1;
        counts[leaving as usize] -= 1;
        owners[p] = to;
    }
    orphans.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_counts_cyclic_windows() {
        assert_eq!(violations(&[0, 1, 2, 0, 1, 2], 3), 0);
        // Bad windows: [1,2,1], [2,1,2], and the wrapped [2,0,0], [0,0,1].
        assert_eq!(violations(&[0, 1, 2, 1, 2, 0], 3), 4);
        assert_eq!(violations(&[0, 0, 0, 0], 1), 0);
    }

    #[test]
    fn fresh_handles_the_wrap() {
        // 256 = 51*5 + 1: the last partition must avoid the first two owners.
        let o = fresh(256, 5, 3);
        assert_eq!(violations(&o, 3), 0, "{o:?}");
        let o = fresh(256, 7, 3);
        assert_eq!(violations(&o, 3), 0);
    }
}

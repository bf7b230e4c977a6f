//! Parallel sums whose result does not depend on thread count or timing.
//!
//! rayon's `fold`/`reduce` combine partial results in whatever order work is
//! split and stolen, so a float sum changed in its last bits from run to run;
//! through a fine-tune or a CoRa rank search those bits grew into different
//! weights and ranks for the same seed. Here each term is computed in
//! parallel but the terms are added strictly in index order.
use rayon::prelude::*;

/// `acc` with `term(scratch, k)` added by `add` for `k` in `0..count`, in
/// index order. Terms are computed in waves of one per thread, so no more
/// than that are held at once; `scratch` (from `init`, one per rayon job) is
/// working memory a term may reuse, never state its value depends on.
pub fn ordered_fold<S, T, A>(
    count: usize,
    init: impl Fn() -> S + Sync + Send,
    term: impl Fn(&mut S, usize) -> T + Sync + Send,
    mut acc: A,
    mut add: impl FnMut(&mut A, T),
) -> A
where
    T: Send,
{
    let wave = rayon::current_num_threads().max(1);
    let mut start = 0;
    while start < count {
        let end = (start + wave).min(count);
        let terms: Vec<T> = (start..end)
            .into_par_iter()
            .map_init(&init, |s, k| term(s, k))
            .collect();
        for t in terms {
            add(&mut acc, t);
        }
        start = end;
    }
    acc
}

/// `Σ term(k)` over `k` in `0..count` for vectors of `len` f32s, added in
/// index order in f64.
pub fn ordered_sum(
    count: usize,
    len: usize,
    term: impl Fn(usize) -> Vec<f32> + Sync + Send,
) -> Vec<f64> {
    ordered_fold(
        count,
        || (),
        |_, k| term(k),
        vec![0f64; len],
        |acc, t| {
            assert_eq!(t.len(), len, "ordered_sum: term {}", t.len());
            acc.iter_mut().zip(t).for_each(|(a, v)| *a += f64::from(v));
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terms whose f64 sum depends on the order they are added in: huge
    /// values of alternating sign (net zero over 36 terms) between small
    /// ones, which they absorb or not depending on what was added before.
    fn term(k: usize) -> Vec<f32> {
        let big = if (k / 3).is_multiple_of(2) {
            1e18
        } else {
            -1e18
        };
        let mixed = if k.is_multiple_of(3) {
            big
        } else {
            1.0 + k as f32 * 1e-3
        };
        vec![mixed, 1.0 + k as f32 * 1e-3, (k as f32).sin() * 1e-7]
    }

    #[test]
    fn sums_in_index_order_on_any_pool() {
        let mut want = vec![0f64; 3];
        for k in 0..36 {
            for (w, v) in want.iter_mut().zip(term(k)) {
                *w += f64::from(v);
            }
        }
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            for _ in 0..5 {
                let got = pool.install(|| ordered_sum(36, 3, term));
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{threads} threads: {got:?} vs {want:?}");
            }
        }
        assert_eq!(ordered_sum(0, 2, term), vec![0.0, 0.0]);
    }
}

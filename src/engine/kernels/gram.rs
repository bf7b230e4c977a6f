//! `X Xᵀ` of a row-major `d × k` matrix (a conv layer's im2col columns over
//! a group of calibration images): GPTQ's Hessian, the bulk of a GPTQ run.
//!
//! Why not the GEMM crate: the product is symmetric, so half of it is
//! enough, and reading `X` as dot products of its rows (both operands
//! row-major, contiguous along `k`) needs no packing. With the crate, packing
//! took a third of the time and the 144-wide layers of ResNet-20's first
//! stage ran at 42 % of the FMA peak.
//!
//! Tiles of 4 × 4 rows, each pair's products summed in the 16 lanes of one
//! register over a block of `k`, then the 16 registers reduced together
//! (`reduce16`) and added to the lower triangle: the tile `(i0, j0)`,
//! `j0 ≤ i0`, lands as rows `i0 …`, columns `j0 …`, plus the diagonal
//! tiles' upper halves, which [`mirror_lower`] overwrites. `k` runs in
//! blocks whose rows stay in L2 while every tile reads them.
//!
//! AVX2 CPUs (and `--avx2`) run tiles of 4 × 2 rows (`body_avx2`). CPUs
//! with neither keep the GEMM crate (`quant::stats`): a portable loop would
//! be slower than its kernels. [`gram_lower_acc`] says whether it ran.

/// Bytes of rows (`d × block`) the tiles read before their sums are
/// reduced and added to `acc`: about L2, and blocks of at least 256 values
/// so the reductions stay a small share. (512 KB to unbounded measured the
/// same on ResNet-20's layers, within this machine's noise.)
const BLOCK_BYTES: usize = 1024 * 1024;

/// Whether [`gram_lower_acc`] runs here (AVX-512, or AVX2 + FMA).
pub fn available() -> bool {
    super::direct_conv::isa().is_some()
}

/// `acc[i·d + j] += Σ_t x[i·k + t]·x[j·k + t]` for every `j ≤ i` (and the
/// upper halves of the 4 × 4 diagonal tiles); returns false, with `acc`
/// untouched, where the kernel does not run ([`available`]).
pub fn gram_lower_acc(x: &[f32], d: usize, k: usize, acc: &mut [f32]) -> bool {
    assert!(x.len() >= d * k, "gram: x is shorter than d × k");
    assert!(acc.len() >= d * d, "gram: acc is shorter than d × d");
    if !available() {
        return false;
    }
    if d == 0 || k == 0 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the ISA is checked by `isa`; every row read is below `d` and
    // every column below `k` (asserted sizes), every `acc` index below
    // `d × d`.
    unsafe {
        use super::direct_conv::{isa, Isa};
        match isa() {
            Some(Isa::Avx512) => body_avx512(x.as_ptr(), d, k, acc.as_mut_ptr()),
            Some(Isa::Avx2) => body_avx2(x.as_ptr(), d, k, acc.as_mut_ptr()),
            None => return false,
        }
    }
    true
}

/// Copy the lower triangle onto the upper one.
pub fn mirror_lower(acc: &mut [f32], d: usize) {
    for i in 0..d {
        for j in 0..i {
            acc[j * d + i] = acc[i * d + j];
        }
    }
}

/// The loops both bodies share: `k` in blocks, then every tile of 4 rows
/// `i0 …` by `TJ` rows `j0 …` that holds part of the lower triangle
/// (`j0 < i0 + 4`), handed to `tile` as row pointers at the block's start,
/// `i0`, `j0` and the block's length. Rows past `d` (a partial last tile)
/// point at row d − 1; `tile` must not store their sums.
#[inline(always)]
fn for_each_tile<const TJ: usize>(
    x: *const f32,
    d: usize,
    k: usize,
    mut tile: impl FnMut([*const f32; 4], [*const f32; TJ], usize, usize, usize),
) {
    let row = |i: usize, k0: usize| x.wrapping_add(i.min(d - 1) * k + k0);
    let block = (BLOCK_BYTES / (4 * d) / 16 * 16).clamp(256, 4096);
    let mut k0 = 0;
    while k0 < k {
        let kn = block.min(k - k0);
        for i0 in (0..d).step_by(4) {
            let xi = std::array::from_fn(|r| row(i0 + r, k0));
            for j0 in (0..(i0 + 4).min(d)).step_by(TJ) {
                tile(xi, std::array::from_fn(|s| row(j0 + s, k0)), i0, j0, kn);
            }
        }
        k0 += kn;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn body_avx512(x: *const f32, d: usize, k: usize, acc: *mut f32) {
    use std::arch::x86_64::*;
    for_each_tile::<4>(x, d, k, |xi, xj, i0, j0, kn| {
        // Lane 4s + r: row i0 + r times row j0 + s (see `reduce16`).
        let sums = reduce16(tile(xi, xj, kn));
        if i0 + 4 <= d {
            // Row i0 + r, columns j0 … j0 + 3: lanes 4r … 4r + 3 after the
            // transpose (j0 ≤ i0, so those columns exist).
            let t = transpose4x4(sums);
            for r in 0..4 {
                let at = acc.add((i0 + r) * d + j0);
                let q = match r {
                    0 => _mm512_castps512_ps128(t),
                    1 => _mm512_extractf32x4_ps::<1>(t),
                    2 => _mm512_extractf32x4_ps::<2>(t),
                    _ => _mm512_extractf32x4_ps::<3>(t),
                };
                _mm_storeu_ps(at, _mm_add_ps(_mm_loadu_ps(at), q));
            }
        } else {
            let mut s = [0f32; 16];
            _mm512_storeu_ps(s.as_mut_ptr(), sums);
            for r in 0..(d - i0).min(4) {
                for c in 0..(d - j0).min(4) {
                    *acc.add((i0 + r) * d + j0 + c) += s[4 * c + r];
                }
            }
        }
    });
}

/// [`body_avx512`] for AVX2 + FMA: 16 registers hold tiles of 4 × 2 rows
/// (8 sums, 6 loads per 8 multiply-adds).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2(x: *const f32, d: usize, k: usize, acc: *mut f32) {
    use std::arch::x86_64::*;
    for_each_tile::<2>(x, d, k, |xi, xj, i0, j0, kn| {
        let mut sums = [0f32; 8];
        _mm256_storeu_ps(sums.as_mut_ptr(), tile_avx2(xi, xj, kn));
        for r in 0..(d - i0).min(4) {
            for c in 0..(d - j0).min(2) {
                *acc.add((i0 + r) * d + j0 + c) += sums[2 * r + c];
            }
        }
    });
}

/// Rows `xi[r]` times `xj[s]` over `kn` values: lane `2r + s` of the
/// result is their sum (the 8 registers folded by `hadd`s, then halves).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_avx2(
    xi: [*const f32; 4],
    xj: [*const f32; 2],
    kn: usize,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let mut a = [_mm256_setzero_ps(); 8];
    let step = |a: &mut [__m256; 8], vi: [__m256; 4], vj: [__m256; 2]| {
        for r in 0..4 {
            for s in 0..2 {
                a[2 * r + s] = _mm256_fmadd_ps(vi[r], vj[s], a[2 * r + s]);
            }
        }
    };
    let mut t = 0;
    while t + 8 <= kn {
        let vi = std::array::from_fn(|r| _mm256_loadu_ps(xi[r].add(t)));
        let vj = std::array::from_fn(|s| _mm256_loadu_ps(xj[s].add(t)));
        step(&mut a, vi, vj);
        t += 8;
    }
    if t < kn {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m = _mm256_cmpgt_epi32(_mm256_set1_epi32((kn - t) as i32), lanes);
        let vi = std::array::from_fn(|r| _mm256_maskload_ps(xi[r].add(t), m));
        let vj = std::array::from_fn(|s| _mm256_maskload_ps(xj[s].add(t), m));
        step(&mut a, vi, vj);
    }
    // hadd pairs of registers, then pairs of those: g0 holds registers 0–3
    // (low half from lanes 0–3 of each, high half from lanes 4–7), g1 4–7.
    let h: [__m256; 4] = std::array::from_fn(|p| _mm256_hadd_ps(a[2 * p], a[2 * p + 1]));
    let g0 = _mm256_hadd_ps(h[0], h[1]);
    let g1 = _mm256_hadd_ps(h[2], h[3]);
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(g0, g1),
        _mm256_permute2f128_ps::<0x31>(g0, g1),
    )
}

/// The 16 products of rows `xi[r]` and `xj[s]` over `kn` values, each
/// summed per lane in register `4r + s`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile(
    xi: [*const f32; 4],
    xj: [*const f32; 4],
    kn: usize,
) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let mut a = [_mm512_setzero_ps(); 16];
    let mut t = 0;
    let step = |a: &mut [__m512; 16], vi: [__m512; 4], vj: [__m512; 4]| {
        for r in 0..4 {
            for s in 0..4 {
                a[4 * r + s] = _mm512_fmadd_ps(vi[r], vj[s], a[4 * r + s]);
            }
        }
    };
    while t + 16 <= kn {
        let vi = std::array::from_fn(|r| _mm512_loadu_ps(xi[r].add(t)));
        let vj = std::array::from_fn(|s| _mm512_loadu_ps(xj[s].add(t)));
        step(&mut a, vi, vj);
        t += 16;
    }
    if t < kn {
        let m: __mmask16 = ((1u32 << (kn - t)) - 1) as u16;
        let vi = std::array::from_fn(|r| _mm512_maskz_loadu_ps(m, xi[r].add(t)));
        let vj = std::array::from_fn(|s| _mm512_maskz_loadu_ps(m, xj[s].add(t)));
        step(&mut a, vi, vj);
    }
    a
}

/// The lane sums of 16 registers in one: lane `4q + m` holds the sum of
/// register `4m + q`. Pairs are folded by halves, then quarters, then
/// within each quarter: 45 operations where 16 separate reductions take
/// about 130.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn reduce16(a: [std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // 16 → 8: b[t] lanes 0–7 fold a[2t], lanes 8–15 fold a[2t + 1].
    let b: [__m512; 8] = std::array::from_fn(|t| {
        let (x, y) = (a[2 * t], a[2 * t + 1]);
        let lo = _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y);
        let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y);
        _mm512_add_ps(lo, hi)
    });
    // 8 → 4: quarter q of c[t] folds a[4t + q].
    let c: [__m512; 4] = std::array::from_fn(|t| {
        let (x, y) = (b[2 * t], b[2 * t + 1]);
        let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y);
        let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y);
        _mm512_add_ps(lo, hi)
    });
    // 4 → 2: quarter q of e[t] = [a[8t + q] twice folded, a[8t + 4 + q] …]
    // interleaved: (a[8t+q].0, a[8t+4+q].0, a[8t+q].1, a[8t+4+q].1).
    let e: [__m512; 2] = std::array::from_fn(|t| {
        let (x, y) = (c[2 * t], c[2 * t + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
    });
    // 2 → 1: quarter q = sums of a[q], a[4 + q], a[8 + q], a[12 + q].
    let (x, y) = (_mm512_castps_pd(e[0]), _mm512_castps_pd(e[1]));
    _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
        _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
    )
}

/// The 4 × 4 transpose of `v` read as `[4][4]` (lane `4q + m` → `4m + q`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose4x4(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(idx, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against an f64 reference on odd sizes (partial tiles, a `k` tail,
    /// several `k` blocks), each body this CPU has: the lower triangle within
    /// f32 rounding of a `k`-long sum, and nothing written above the 4-row
    /// diagonal blocks.
    #[test]
    fn lower_triangle_matches_f64() {
        #[cfg(target_arch = "x86_64")]
        {
            type Body = unsafe fn(*const f32, usize, usize, *mut f32);
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            let bodies: [(bool, Body); 2] = [(avx512, body_avx512), (avx2, body_avx2)];
            for (_, body) in bodies.into_iter().filter(|(ok, _)| *ok) {
                // SAFETY: the body's features were detected just above.
                lower_triangle_case(|x, d, k, acc| unsafe {
                    body(x.as_ptr(), d, k, acc.as_mut_ptr())
                });
            }
        }
    }

    fn lower_triangle_case(run: impl Fn(&[f32], usize, usize, &mut [f32])) {
        let mut rng = crate::util::Rng::new(5);
        for (d, k) in [(1, 1), (3, 17), (4, 16), (7, 100), (13, 3000), (37, 9001)] {
            let x: Vec<f32> = (0..d * k).map(|_| rng.normal() as f32).collect();
            let mut acc = vec![0.5f32; d * d];
            run(&x, d, k, &mut acc);
            for i in 0..d {
                for j in 0..d {
                    let want: f64 = 0.5
                        + (0..k)
                            .map(|t| x[i * k + t] as f64 * x[j * k + t] as f64)
                            .sum::<f64>();
                    let got = acc[i * d + j] as f64;
                    let tol = 1e-5 * (k as f64).sqrt() * 4.0 + 1e-6;
                    if j <= i {
                        let err = (got - want).abs();
                        assert!(err <= tol, "{d}×{k} ({i},{j}): {got} vs {want}");
                    } else if j / 4 > i / 4 {
                        // Above every tile either body needs.
                        assert_eq!(got, 0.5, "{d}×{k} ({i},{j}) above the diagonal tiles");
                    }
                }
            }
            mirror_lower(&mut acc, d);
            assert!((0..d).all(|i| (0..d).all(|j| acc[i * d + j] == acc[j * d + i])));
        }
    }

    /// The lane bookkeeping: register 4m + q's sum lands in lane 4q + m.
    #[test]
    fn reduce16_places_each_sum() {
        if !available() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        unsafe {
            use std::arch::x86_64::*;
            let a: [__m512; 16] = std::array::from_fn(|t| {
                let v: [f32; 16] = std::array::from_fn(|l| (t * 100 + l) as f32);
                _mm512_loadu_ps(v.as_ptr())
            });
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), reduce16(a));
            for (lane, &got) in out.iter().enumerate() {
                let t = 4 * (lane % 4) + lane / 4;
                let want: f32 = (0..16).map(|l| (t * 100 + l) as f32).sum();
                assert_eq!(got, want, "lane {lane}");
            }
        }
    }
}

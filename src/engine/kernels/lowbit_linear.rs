//! Linear layers from 4-bit codes (weight-only): `y = x·Wᵀ + b` with
//! `W[o, i] = lo[o] + step[o]·code[o, i]`, the codes row by row, two per
//! byte, low nibble first (`CodeOrder::Rows`).
//!
//! A GEMV that decodes each row in registers, so the layer reads an eighth
//! of its f32 bytes: a VGG's classifier holds 93 % of its weights and, in
//! f32, streams 490 MB per image from memory. Since the affine part factors
//! out, `y[o] = lo[o]·Σx + step[o]·Σ x[i]·code[o, i]`, the inner loop
//! multiplies the codes as they are. Images go in groups of four, each
//! image with its own accumulators, so an image's logits do not depend on
//! the batch it is in (bit for bit, as for the convs).
//!
//! The SIMD loops read a 16-byte load as 32 codes whose low nibbles are the
//! even inputs and high nibbles the odd ones; each image's input is
//! de-interleaved to match once per call (`split_even_odd`).
use super::direct_conv::{isa, Isa};

/// Images per pass over the codes (accumulators held in registers).
pub const GEMV_MAX_IMAGES: usize = 4;

/// `out[k·o + r] = Σ_i x[k·d + i]·W[r, i] + bias[r]` for `k < n`, `r < o`.
#[allow(clippy::too_many_arguments)]
pub fn linear_w4(
    x: &[f32],
    n: usize,
    d: usize,
    codes: &[u8],
    step: &[f32],
    lo: &[f32],
    o: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: usize,
) {
    let rb = d.div_ceil(2);
    assert!(
        x.len() >= n * d
            && codes.len() >= o * rb
            && step.len() >= o
            && lo.len() >= o
            && out.len() >= n * o
            && bias.is_none_or(|b| b.len() >= o),
        "linear: 4-bit codes, input or output do not match the layer"
    );
    if n == 0 || o == 0 {
        return;
    }
    let isa = isa();
    let block = match isa {
        Some(Isa::Avx512) => 32,
        Some(Isa::Avx2) => 16,
        None => 0,
    };
    // Parts of whole rows; each part writes only its own outputs.
    let parts = if threads > 1 && o * d > 1 << 16 {
        (threads * 4).min(o)
    } else {
        1
    };
    let rows_per = o.div_ceil(parts);
    let out_ptr = SendPtr(out.as_mut_ptr());
    // Images in groups the registers hold; a group's inputs stay in cache
    // while every row's codes stream past them once.
    for k0 in (0..n).step_by(GEMV_MAX_IMAGES) {
        let group = GEMV_MAX_IMAGES.min(n - k0);
        let image = |k: usize| &x[(k0 + k) * d..(k0 + k + 1) * d];
        let xs: Vec<Vec<f32>> = (0..group)
            .map(|k| split_even_odd(image(k), block))
            .collect();
        let sums: Vec<f32> = (0..group).map(|k| image(k).iter().sum()).collect();
        let part = |p: usize| {
            let (r0, r1) = (p * rows_per, ((p + 1) * rows_per).min(o));
            let mut dots = [0f32; GEMV_MAX_IMAGES];
            for r in r0..r1 {
                let row = &codes[r * rb..(r + 1) * rb];
                let dots = &mut dots[..group];
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX-512F checked by `isa`; `row` holds ⌈d/2⌉
                    // bytes and each `xs[k]` d floats (asserted above).
                    Some(Isa::Avx512) => unsafe { dots_avx512(row, &xs, d, dots) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX2 + FMA checked by `isa`; bounds as above.
                    Some(Isa::Avx2) => unsafe { dots_avx2(row, &xs, d, dots) },
                    _ => dots_portable(row, &xs, d, 0, dots),
                }
                for (k, dot) in dots.iter().enumerate() {
                    let v = lo[r] * sums[k] + step[r] * dot + bias.map_or(0.0, |b| b[r]);
                    // SAFETY: `(k0 + k)·o + r < n·o ≤ out.len()` (asserted);
                    // parts own disjoint rows, so no two threads write one element.
                    unsafe { *out_ptr.get().add((k0 + k) * o + r) = v };
                }
            }
        };
        crate::engine::team::run(parts, threads, &part);
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint elements from the team's parts.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Within each whole `block` of inputs, the even ones then the odd ones
/// (the order in which a SIMD load of codes yields them); the tail after
/// the last whole block stays as it is.
fn split_even_odd(x: &[f32], block: usize) -> Vec<f32> {
    if block == 0 {
        return x.to_vec();
    }
    let mut out = x.to_vec();
    let half = block / 2;
    for (src, dst) in x.chunks_exact(block).zip(out.chunks_exact_mut(block)) {
        for j in 0..half {
            dst[j] = src[2 * j];
            dst[half + j] = src[2 * j + 1];
        }
    }
    out
}

/// `dots[k] = Σ_{i ≥ from} x_k[i]·code[i]` on inputs in their own order
/// (the portable path, and every SIMD path's tail after its whole blocks).
fn dots_portable(row: &[u8], xs: &[Vec<f32>], d: usize, from: usize, dots: &mut [f32]) {
    for (k, dot) in dots.iter_mut().enumerate() {
        let x = &xs[k];
        let mut acc = 0f32;
        for i in from..d {
            let code = (row[i / 2] >> (4 * (i % 2))) & 15;
            acc += x[i] * code as f32;
        }
        *dot = if from == 0 { acc } else { *dot + acc };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512(row: &[u8], xs: &[Vec<f32>], d: usize, dots: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = d / 32;
    let mask = _mm512_set1_epi32(15);
    // Two blocks a step on separate accumulators, so one image's FMAs do
    // not wait on each other's latency (4096 × 25 088 at batch 1, best of
    // 100: 7.55 → 7.11 ms on one core, 3.83 → 3.51 ms on two; f32 weights
    // take 23.5 ms, bound by memory).
    let mut acc = [[_mm512_setzero_ps(); 4]; GEMV_MAX_IMAGES];
    let codes = |b: usize| {
        // SAFETY (whole block b < blocks): bytes 16b..16b+16 ≤ ⌈d/2⌉.
        let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(row.as_ptr().add(16 * b) as *const __m128i));
        (
            _mm512_cvtepi32_ps(_mm512_and_si512(v, mask)),
            _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)),
        )
    };
    let mut b = 0;
    while b + 2 <= blocks {
        let (e0, o0) = codes(b);
        let (e1, o1) = codes(b + 1);
        for (k, a) in acc.iter_mut().enumerate().take(dots.len()) {
            // SAFETY: inputs 32b..32b+64 ≤ 32·blocks ≤ d.
            let x = xs[k].as_ptr().add(32 * b);
            a[0] = _mm512_fmadd_ps(e0, _mm512_loadu_ps(x), a[0]);
            a[1] = _mm512_fmadd_ps(o0, _mm512_loadu_ps(x.add(16)), a[1]);
            a[2] = _mm512_fmadd_ps(e1, _mm512_loadu_ps(x.add(32)), a[2]);
            a[3] = _mm512_fmadd_ps(o1, _mm512_loadu_ps(x.add(48)), a[3]);
        }
        b += 2;
    }
    if b < blocks {
        let (e0, o0) = codes(b);
        for (k, a) in acc.iter_mut().enumerate().take(dots.len()) {
            let x = xs[k].as_ptr().add(32 * b);
            a[0] = _mm512_fmadd_ps(e0, _mm512_loadu_ps(x), a[0]);
            a[1] = _mm512_fmadd_ps(o0, _mm512_loadu_ps(x.add(16)), a[1]);
        }
    }
    for (k, dot) in dots.iter_mut().enumerate() {
        let s = _mm512_add_ps(
            _mm512_add_ps(acc[k][0], acc[k][1]),
            _mm512_add_ps(acc[k][2], acc[k][3]),
        );
        *dot = _mm512_reduce_add_ps(s);
    }
    dots_portable(row, xs, d, 32 * blocks, dots);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(row: &[u8], xs: &[Vec<f32>], d: usize, dots: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = d / 16;
    let mask = _mm256_set1_epi32(15);
    let mut acc = [[_mm256_setzero_ps(); 2]; GEMV_MAX_IMAGES];
    for b in 0..blocks {
        // SAFETY (whole block): bytes 8b..8b+8 < ⌈d/2⌉, inputs 16b..16b+16 ≤ d.
        let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(row.as_ptr().add(8 * b) as *const __m128i));
        let even = _mm256_cvtepi32_ps(_mm256_and_si256(v, mask));
        let odd = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
        for (k, a) in acc.iter_mut().enumerate().take(dots.len()) {
            let x = xs[k].as_ptr().add(16 * b);
            a[0] = _mm256_fmadd_ps(even, _mm256_loadu_ps(x), a[0]);
            a[1] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(x.add(8)), a[1]);
        }
    }
    for (k, dot) in dots.iter_mut().enumerate() {
        let s = _mm256_add_ps(acc[k][0], acc[k][1]);
        let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        *dot = _mm_cvtss_f32(h);
    }
    dots_portable(row, xs, d, 16 * blocks, dots);
}

/// The portable GEMV on every image count, for tests of the SIMD paths.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn linear_w4_portable(
    x: &[f32],
    n: usize,
    d: usize,
    codes: &[u8],
    step: &[f32],
    lo: &[f32],
    o: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let rb = d.div_ceil(2);
    for k in 0..n {
        let xs = vec![x[k * d..(k + 1) * d].to_vec()];
        let sum: f32 = xs[0].iter().sum();
        for r in 0..o {
            let mut dot = [0f32];
            dots_portable(&codes[r * rb..(r + 1) * rb], &xs, d, 0, &mut dot);
            out[k * o + r] = lo[r] * sum + step[r] * dot[0] + bias.map_or(0.0, |b| b[r]);
        }
    }
}

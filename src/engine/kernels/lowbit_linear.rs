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
use super::packed3;

/// Images per pass over the codes (accumulators held in registers).
pub const GEMV_MAX_IMAGES: usize = 4;

/// A linear layer's codes, row by row.
#[derive(Clone, Copy, Debug)]
pub enum RowCodes<'a> {
    /// Two per byte, low nibble first: `⌈d/2⌉` bytes per row.
    Nibbles(&'a [u8]),
    /// Each row's nibble bytes 3-bit packed (`packed3`), rows apart by
    /// `packed_len(⌈d/2⌉)`.
    Packed3(&'a [u8]),
}

impl<'a> RowCodes<'a> {
    pub fn bytes(self) -> &'a [u8] {
        match self {
            RowCodes::Nibbles(b) | RowCodes::Packed3(b) => b,
        }
    }

    /// Bytes from one row to the next, for `d` inputs.
    pub fn row_stride(self, d: usize) -> usize {
        match self {
            RowCodes::Nibbles(_) => d.div_ceil(2),
            RowCodes::Packed3(_) => packed3::packed_len(d.div_ceil(2)),
        }
    }
}

/// `out[k·o + r] = Σ_i x[k·d + i]·W[r, i] + bias[r]` for `k < n`, `r < o`.
#[allow(clippy::too_many_arguments)]
pub fn linear_w4(
    x: &[f32],
    n: usize,
    d: usize,
    codes: RowCodes,
    step: &[f32],
    lo: &[f32],
    o: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: usize,
) {
    let rb = d.div_ceil(2);
    let stride = codes.row_stride(d);
    assert!(
        x.len() >= n * d
            && codes.bytes().len() >= o * stride
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
    // 3-bit rows read in registers (else unpacked to nibbles per row).
    let vbmi = matches!(codes, RowCodes::Packed3(_)) && isa == Some(Isa::Avx512) && packed3::vbmi();
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
        let finish = |r: usize, dots: &[f32]| {
            for (k, dot) in dots.iter().enumerate() {
                let v = lo[r] * sums[k] + step[r] * dot + bias.map_or(0.0, |b| b[r]);
                // SAFETY: `(k0 + k)·o + r < n·o ≤ out.len()` (asserted);
                // parts own disjoint rows, so no two threads write one element.
                unsafe { *out_ptr.get().add((k0 + k) * o + r) = v };
            }
        };
        let part = |p: usize| {
            let (r0, r1) = (p * rows_per, ((p + 1) * rows_per).min(o));
            let mut dots = [0f32; GEMV_MAX_IMAGES];
            // Without VBMI a 3-bit row is unpacked first, into a buffer
            // that stays in L1.
            let mut unpacked = match codes {
                RowCodes::Packed3(_) if !vbmi => vec![0u8; rb],
                _ => Vec::new(),
            };
            for r in r0..r1 {
                let dots = &mut dots[..group];
                let row = match codes {
                    RowCodes::Nibbles(c) => &c[r * rb..(r + 1) * rb],
                    #[cfg(target_arch = "x86_64")]
                    RowCodes::Packed3(c) if vbmi => {
                        let row = &c[r * stride..(r + 1) * stride];
                        // SAFETY: AVX-512 F/BW/VL/VBMI checked (`vbmi`); `row`
                        // holds `packed_len(⌈d/2⌉)` bytes, `xs[k]` d floats.
                        unsafe { dots_avx512_packed3(row, &xs, d, dots) };
                        finish(r, dots);
                        continue;
                    }
                    RowCodes::Packed3(c) => {
                        packed3::unpack3(&c[r * stride..(r + 1) * stride], &mut unpacked);
                        &unpacked[..]
                    }
                };
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
                finish(r, dots);
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
    dots_portable_from(&row[from / 2..], xs, d, from, dots)
}

/// `dots_portable` on the row's bytes from code `from` (even) on.
fn dots_portable_from(tail: &[u8], xs: &[Vec<f32>], d: usize, from: usize, dots: &mut [f32]) {
    for (k, dot) in dots.iter_mut().enumerate() {
        let x = &xs[k];
        let mut acc = 0f32;
        for (j, xi) in x[from..d].iter().enumerate() {
            let code = (tail[j / 2] >> (4 * (j % 2))) & 15;
            acc += xi * code as f32;
        }
        *dot = if from == 0 { acc } else { *dot + acc };
    }
}

/// The AVX-512 GEMV over whole 32-input blocks: two blocks a step on
/// separate accumulators, so one image's FMAs do not wait on each other's
/// latency (4096 × 25 088 at batch 1, best of 100: 7.55 → 7.11 ms on one
/// core, 3.83 → 3.51 ms on two; f32 weights take 23.5 ms, bound by
/// memory), then an odd last block, then each image's sum into `dots`.
/// `pair(b)` and `one(b)` make blocks b, b+1 (and b alone) as (even, odd)
/// input codes in f32; the nibble and 3-bit bodies differ only there. A
/// macro, so the intrinsics expand inside each body's `target_feature`
/// function.
#[cfg(target_arch = "x86_64")]
macro_rules! avx512_blocks {
    ($blocks:expr, $xs:expr, $dots:expr, $pair:expr, $one:expr) => {{
        let (blocks, xs, dots): (usize, &[Vec<f32>], &mut [f32]) = ($blocks, $xs, $dots);
        let (pair, one) = ($pair, $one);
        let mut acc = [[_mm512_setzero_ps(); 4]; GEMV_MAX_IMAGES];
        let mut b = 0;
        while b + 2 <= blocks {
            let [(e0, o0), (e1, o1)] = pair(b);
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
            let (e0, o0) = one(b);
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
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512(row: &[u8], xs: &[Vec<f32>], d: usize, dots: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = d / 32;
    let mask = _mm512_set1_epi32(15);
    let codes = |b: usize| {
        // SAFETY (whole block b < blocks): bytes 16b..16b+16 ≤ ⌈d/2⌉.
        let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(row.as_ptr().add(16 * b) as *const __m128i));
        (
            _mm512_cvtepi32_ps(_mm512_and_si512(v, mask)),
            _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)),
        )
    };
    avx512_blocks!(blocks, xs, dots, |b| [codes(b), codes(b + 1)], codes);
    dots_portable(row, xs, d, 32 * blocks, dots);
}

/// `dots_avx512` on a 3-bit packed row (`packed3`): each 24 bytes become
/// 64 codes in registers, two 6-bit fields (even input's code in the low 3
/// bits, odd input's in the high 3) a byte, with no unpacked copy written.
/// The image blocks, their order and the accumulators are those of
/// `dots_avx512`, so the sums are the same bit for bit.
///
/// # Safety
/// AVX-512 F/BW/VL/VBMI present; `row.len() ≥ packed_len(⌈d/2⌉)`; each
/// `xs[k]` holds d floats split as for `dots_avx512`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn dots_avx512_packed3(row: &[u8], xs: &[Vec<f32>], d: usize, dots: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = d / 32;
    // Each 64-bit lane takes one group's 6 bytes; `vpmultishiftqb` then cuts
    // its eight 6-bit fields out, one a byte (the top 2 bits masked).
    let spread = _mm256_set_epi64x(
        0x0000_1716_1514_1312,
        0x0000_1110_0F0E_0D0C,
        0x0000_0B0A_0908_0706,
        0x0000_0504_0302_0100,
    );
    let shifts = _mm256_set1_epi64x(0x2A24_1E18_120C_0600);
    let six = _mm256_set1_epi8(0x3F);
    let seven = _mm512_set1_epi32(7);
    // Blocks b and b+1 (the latter only if `two`): 12 packed bytes each.
    let fields = |b: usize, two: bool| {
        let mask: __mmask32 = if two { 0xFF_FFFF } else { 0xFFF };
        let v = _mm256_maskz_loadu_epi8(mask, row.as_ptr().add(12 * b) as *const i8);
        let v = _mm256_multishift_epi64_epi8(shifts, _mm256_permutexvar_epi8(spread, v));
        _mm256_and_si256(v, six)
    };
    let codes = |f: __m128i| {
        let v = _mm512_cvtepu8_epi32(f);
        (
            _mm512_cvtepi32_ps(_mm512_and_si512(v, seven)),
            _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 3)),
        )
    };
    let pair = |b: usize| {
        let f = fields(b, true);
        [
            codes(_mm256_castsi256_si128(f)),
            codes(_mm256_extracti128_si256(f, 1)),
        ]
    };
    let one = |b: usize| codes(_mm256_castsi256_si128(fields(b, false)));
    avx512_blocks!(blocks, xs, dots, pair, one);
    // The tail's codes (fewer than 32) start a group: 16·blocks nibble bytes
    // are 12·blocks packed ones.
    let rb = d.div_ceil(2);
    let mut tail = [0u8; 16];
    let tail = &mut tail[..rb - 16 * blocks];
    packed3::unpack3_portable(&row[12 * blocks..], tail);
    dots_portable_from(tail, xs, d, 32 * blocks, dots);
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

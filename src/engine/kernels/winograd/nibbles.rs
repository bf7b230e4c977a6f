//! 4-bit codes straight to Winograd weights, with no f32 copy of the layer
//! in between: what a 4-bit model does per call (its codes are what stays
//! in memory), so it must cost little next to the convolution itself.
//!
//! A code `q` of output channel `o` stands for `w = lo[o] + step[o]·q`, and
//! `U = G w Gᵀ` is linear, so with `G = D H`,
//! `H = [1 0 0; 1 1 1; 1 −1 1; 0 0 1]`, `D = diag(1, ½, ½, 1)` and
//! `e = G·(1, 1, 1) = (1, 3/2, 1/2, 1)`:
//!
//! `U[a][b] = step·d_a·d_b · (H q Hᵀ)[a][b] + lo·e_a·e_b`.
//!
//! `H q Hᵀ` takes only additions of small integers (|·| ≤ 9·15), exact in
//! f32, and each output is then one fused multiply-add: fewer operations
//! than decoding to f32 and transforming that (and fewer roundings).
use super::{LANES, OR};
use crate::engine::kernels::direct_conv::{Weights, OB};

/// Input channels staged before their weights are stored (see `body`).
const STAGE: usize = 8;
/// f32s per cache line.
const LINE: usize = 16;
/// `D` and `e` of the module doc: `U[a][b] = step·D[a]·D[b]·(H q Hᵀ)[a][b] + lo·E[a]·E[b]`.
const D: [f32; 4] = [1.0, 0.5, 0.5, 1.0];
const E: [f32; 4] = [1.0, 1.5, 0.5, 1.0];

/// Whether the buffers hold `blocks` 16-channel blocks of `c` input
/// channels (codes, scales, offsets) and their transform: checked before
/// the unsafe bodies index them by pointer.
fn sizes_ok(
    nibbles: &[u8],
    step: &[f32],
    lo: &[f32],
    blocks: usize,
    obs: usize,
    c: usize,
    u: &[f32],
) -> bool {
    nibbles.len() >= blocks * c * 9 * OB / 2
        && step.len() >= blocks * OB
        && lo.len() >= blocks * OB
        && u.len() >= 16 * obs * c * OR
}

/// `H x` for a column (or row) `x` of three.
#[inline(always)]
fn h(x0: f32, x1: f32, x2: f32) -> [f32; 4] {
    let t = x0 + x2;
    [x0, t + x1, t - x1, x2]
}

/// The 16 transformed weights of one input channel for the 16 output
/// channels (lanes) of a block, into `dst[ξ][lane]`. `bytes`: the channel's
/// 9 taps × 8 bytes (two codes per byte, low nibble first).
#[inline(always)]
fn channel(
    bytes: &[u8],
    scale: &[[f32; LANES]; 16],
    offset: &[[f32; LANES]; 16],
    dst: &mut [[f32; LANES]; 16],
) {
    let mut q = [[0f32; LANES]; 9];
    for (t, qt) in q.iter_mut().enumerate() {
        let b = &bytes[t * OB / 2..(t + 1) * OB / 2];
        for (j, v) in qt.iter_mut().enumerate() {
            *v = ((b[j / 2] >> (4 * (j % 2))) & 15) as f32;
        }
    }
    // Columns kx of H q (rows ky combined), then each row of that times Hᵀ.
    let mut hq = [[[0f32; LANES]; 3]; 4];
    for kx in 0..3 {
        for j in 0..LANES {
            let col = h(q[kx][j], q[3 + kx][j], q[6 + kx][j]);
            for a in 0..4 {
                hq[a][kx][j] = col[a];
            }
        }
    }
    for (a, r) in hq.iter().enumerate() {
        for j in 0..LANES {
            let row = h(r[0][j], r[1][j], r[2][j]);
            for b in 0..4 {
                let xi = 4 * a + b;
                dst[xi][j] = row[b].mul_add(scale[xi][j], offset[xi][j]);
            }
        }
    }
}

/// The whole layer: `blocks` 16-channel blocks of codes into `u`
/// (`[16 ξ][obs][C][8]`, as `transform_weights`).
#[inline(always)]
fn body(
    nibbles: &[u8],
    step: &[f32],
    lo: &[f32],
    blocks: usize,
    obs: usize,
    c: usize,
    u: &mut [f32],
) {
    let mut stage = [[[0f32; LANES]; 16]; STAGE];
    for b in 0..blocks {
        let (st, l) = (&step[b * OB..][..OB], &lo[b * OB..][..OB]);
        let mut scale = [[0f32; LANES]; 16];
        let mut offset = [[0f32; LANES]; 16];
        for xi in 0..16 {
            let (a, bb) = (xi / 4, xi % 4);
            for j in 0..LANES {
                scale[xi][j] = st[j] * (D[a] * D[bb]);
                offset[xi][j] = l[j] * (E[a] * E[bb]);
            }
        }
        let codes = &nibbles[b * c * 9 * OB / 2..(b + 1) * c * 9 * OB / 2];
        // Eight input channels are staged, then each (ξ, channel block) run
        // of them is stored in one go: storing each value where it belongs
        // as it is computed touches 32 lines 16 KB apart per channel (one
        // L1 set) and runs at a cache miss per store.
        let mut ic0 = 0;
        while ic0 < c {
            let n = (c - ic0).min(STAGE);
            for (k, s) in stage.iter_mut().enumerate().take(n) {
                let at = (ic0 + k) * 9 * OB / 2;
                channel(&codes[at..at + 9 * OB / 2], &scale, &offset, s);
            }
            for xi in 0..16 {
                // Channels 0–7 of a block go to channel block 2b, 8–15 to 2b + 1.
                for half in 0..2 {
                    let ob = 2 * b + half;
                    if ob >= obs {
                        break;
                    }
                    let at = ((xi * obs + ob) * c + ic0) * OR;
                    let dst = &mut u[at..at + n * OR];
                    for (k, s) in stage.iter().enumerate().take(n) {
                        dst[k * OR..(k + 1) * OR]
                            .copy_from_slice(&s[xi][half * OR..(half + 1) * OR]);
                    }
                }
            }
            ic0 += n;
        }
    }
}

/// `body` by hand for AVX-512 (the compiler's vectorisation of `channel`
/// ran at 7.5 cycles per filter; this does the same operations in the same
/// order, so the results are equal bit for bit).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn body_avx512(
    nibbles: &[u8],
    step: &[f32],
    lo: &[f32],
    blocks: usize,
    obs: usize,
    c: usize,
    u: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(sizes_ok(nibbles, step, lo, blocks, obs, c, u));
    let mask = _mm512_set1_epi32(15);
    // Lane i of `first` takes element i/2 of the low nibbles (even i) or of
    // the high ones (odd i): the 16 channels of the first tap of 16 bytes.
    let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let up = u.as_mut_ptr();
    let mut stage = [[_mm512_setzero_ps(); 16]; STAGE];
    for b in 0..blocks {
        let vs = _mm512_loadu_ps(step.as_ptr().add(b * OB));
        let vl = _mm512_loadu_ps(lo.as_ptr().add(b * OB));
        let scale: [__m512; 16] =
            std::array::from_fn(|xi| _mm512_mul_ps(vs, _mm512_set1_ps(D[xi / 4] * D[xi % 4])));
        let offset: [__m512; 16] =
            std::array::from_fn(|xi| _mm512_mul_ps(vl, _mm512_set1_ps(E[xi / 4] * E[xi % 4])));
        let codes = nibbles.as_ptr().add(b * c * 9 * OB / 2);
        let mut ic0 = 0;
        while ic0 < c {
            let n = (c - ic0).min(STAGE);
            for (k, st) in stage.iter_mut().enumerate().take(n) {
                let p = codes.add((ic0 + k) * 9 * OB / 2);
                // Taps 2i and 2i + 1 from 16 bytes; tap 8 from the last 8.
                let mut q = [_mm512_setzero_ps(); 9];
                for i in 0..5 {
                    let raw = if i < 4 {
                        _mm_loadu_si128(p.add(16 * i) as *const __m128i)
                    } else {
                        _mm_loadl_epi64(p.add(64) as *const __m128i)
                    };
                    let bytes = _mm512_cvtepu8_epi32(raw);
                    let (l, h) = (_mm512_and_si512(bytes, mask), _mm512_srli_epi32::<4>(bytes));
                    q[2 * i] = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(l, first, h));
                    if i < 4 {
                        q[2 * i + 1] = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(l, second, h));
                    }
                }
                // H q by columns kx (taps kx, 3 + kx, 6 + kx), then by rows.
                let mut hq = [[_mm512_setzero_ps(); 3]; 4];
                for kx in 0..3 {
                    let (x0, x1, x2) = (q[kx], q[3 + kx], q[6 + kx]);
                    let t = _mm512_add_ps(x0, x2);
                    hq[0][kx] = x0;
                    hq[1][kx] = _mm512_add_ps(t, x1);
                    hq[2][kx] = _mm512_sub_ps(t, x1);
                    hq[3][kx] = x2;
                }
                for (a, r) in hq.iter().enumerate() {
                    let t = _mm512_add_ps(r[0], r[2]);
                    let row = [r[0], _mm512_add_ps(t, r[1]), _mm512_sub_ps(t, r[1]), r[2]];
                    for (bb, &v) in row.iter().enumerate() {
                        let xi = 4 * a + bb;
                        st[xi] = _mm512_fmadd_ps(v, scale[xi], offset[xi]);
                    }
                }
            }
            for xi in 0..16 {
                // Channels 0–7 of the block go to channel block 2b, 8–15 to 2b + 1.
                let lo_at = up.add(((xi * obs + 2 * b) * c + ic0) * OR);
                for (k, st) in stage.iter().enumerate().take(n) {
                    _mm256_storeu_ps(lo_at.add(k * OR), _mm512_castps512_ps256(st[xi]));
                }
                if 2 * b + 1 < obs {
                    let hi_at = up.add(((xi * obs + 2 * b + 1) * c + ic0) * OR);
                    for (k, st) in stage.iter().enumerate().take(n) {
                        let v = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(st[xi]));
                        _mm256_storeu_ps(hi_at.add(k * OR), _mm256_castpd_ps(v));
                    }
                }
            }
            ic0 += n;
        }
    }
}

/// `body` by hand for AVX2 + FMA: each 16-channel block as two halves of
/// 8 lanes, one per GEMM channel block. Same operations in the same order
/// as `body`, so equal bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2(
    nibbles: &[u8],
    step: &[f32],
    lo: &[f32],
    blocks: usize,
    obs: usize,
    c: usize,
    u: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(sizes_ok(nibbles, step, lo, blocks, obs, c, u));
    let nib_mask = _mm_set1_epi8(15);
    let up = u.as_mut_ptr();
    let mut stage = [[[_mm256_setzero_ps(); 16]; 2]; STAGE];
    for b in 0..blocks {
        let halves = (obs - 2 * b).min(2);
        let mut scale = [[_mm256_setzero_ps(); 16]; 2];
        let mut offset = [[_mm256_setzero_ps(); 16]; 2];
        for h in 0..2 {
            let vs = _mm256_loadu_ps(step.as_ptr().add(b * OB + h * OR));
            let vl = _mm256_loadu_ps(lo.as_ptr().add(b * OB + h * OR));
            for xi in 0..16 {
                let (da, ea) = (D[xi / 4] * D[xi % 4], E[xi / 4] * E[xi % 4]);
                scale[h][xi] = _mm256_mul_ps(vs, _mm256_set1_ps(da));
                offset[h][xi] = _mm256_mul_ps(vl, _mm256_set1_ps(ea));
            }
        }
        let codes = nibbles.as_ptr().add(b * c * 9 * OB / 2);
        let mut ic0 = 0;
        while ic0 < c {
            let n = (c - ic0).min(STAGE);
            for (k, st) in stage.iter_mut().enumerate().take(n) {
                let p = codes.add((ic0 + k) * 9 * OB / 2);
                // A tap's 8 bytes → its 16 codes in channel order (low
                // nibble first), as two vectors of 8.
                let mut q = [[_mm256_setzero_ps(); 9]; 2];
                for t in 0..9 {
                    let x = _mm_loadl_epi64(p.add(t * OB / 2) as *const __m128i);
                    let l = _mm_and_si128(x, nib_mask);
                    let hn = _mm_and_si128(_mm_srli_epi16::<4>(x), nib_mask);
                    let codes16 = _mm_unpacklo_epi8(l, hn);
                    q[0][t] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes16));
                    q[1][t] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(
                        codes16, codes16,
                    )));
                }
                for h in 0..halves {
                    let q = &q[h];
                    let mut hq = [[_mm256_setzero_ps(); 3]; 4];
                    for kx in 0..3 {
                        let (x0, x1, x2) = (q[kx], q[3 + kx], q[6 + kx]);
                        let t = _mm256_add_ps(x0, x2);
                        hq[0][kx] = x0;
                        hq[1][kx] = _mm256_add_ps(t, x1);
                        hq[2][kx] = _mm256_sub_ps(t, x1);
                        hq[3][kx] = x2;
                    }
                    for (a, r) in hq.iter().enumerate() {
                        let t = _mm256_add_ps(r[0], r[2]);
                        let row = [r[0], _mm256_add_ps(t, r[1]), _mm256_sub_ps(t, r[1]), r[2]];
                        for (bb, &v) in row.iter().enumerate() {
                            let xi = 4 * a + bb;
                            st[h][xi] = _mm256_fmadd_ps(v, scale[h][xi], offset[h][xi]);
                        }
                    }
                }
            }
            for h in 0..halves {
                for xi in 0..16 {
                    let at = up.add(((xi * obs + 2 * b + h) * c + ic0) * OR);
                    for (k, st) in stage.iter().enumerate().take(n) {
                        _mm256_storeu_ps(at.add(k * OR), st[h][xi]);
                    }
                }
            }
            ic0 += n;
        }
    }
}

/// [`super::transform_weights`] of `o` output channels of 4-bit codes
/// (`Weights::Nibbles`, in `direct_conv::pack_weights` order) into a reused
/// buffer; returns the part of `buf` that holds them. Equal to transforming
/// the decoded weights up to rounding (a few ulp). `Weights::F32` (packed
/// f32) goes through the scalar transform.
pub fn transform_nibbles_into<'b>(
    w: Weights,
    o: usize,
    c: usize,
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    let blocks = o.div_ceil(OB);
    let obs = o.div_ceil(OR);
    let (nibbles, step, lo) = match w {
        Weights::Nibbles { nibbles, step, lo } => (nibbles, step, lo),
        Weights::F32(packed) => {
            assert!(
                packed.len() >= blocks * c * 9 * OB,
                "winograd: packed weights size"
            );
            *buf = super::transform_weights(o, c, |oc, ic, k| {
                packed[((oc / OB) * c * 9 + ic * 9 + k) * OB + oc % OB]
            });
            return buf;
        }
    };
    // Every element is written (padding channels have zero codes and
    // scales). Grown, never shrunk: layers of different sizes share the
    // buffer, and growing back after a shrink wrote zeros again (2 % of a
    // 4-bit ResNet-20 pass).
    let len = 16 * obs * c * OR;
    if buf.len() < len + LINE - 1 {
        buf.resize(len + LINE - 1, 0.0);
    }
    // From a 64-byte boundary: the bodies' 32-byte stores then never
    // straddle two cache lines. The binary's allocator (mimalloc) happens to
    // return such blocks; the system one starts them 16 bytes past a line,
    // and there every other store straddled: 14.4 vs 10.0 µs for a 64×64
    // layer (divan, which runs on the system allocator).
    let at = buf.as_ptr().align_offset(LINE * 4).min(LINE - 1);
    let u = &mut buf[at..at + len];
    assert!(
        sizes_ok(nibbles, step, lo, blocks, obs, c, u),
        "winograd: 4-bit weights size"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use crate::engine::kernels::direct_conv::Isa;
        match super::isa() {
            // SAFETY: the features are checked by `isa`; sizes asserted above.
            Some(Isa::Avx512) => unsafe { body_avx512(nibbles, step, lo, blocks, obs, c, u) },
            Some(Isa::Avx2) => unsafe { body_avx2(nibbles, step, lo, blocks, obs, c, u) },
            None => body(nibbles, step, lo, blocks, obs, c, u),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    body(nibbles, step, lo, blocks, obs, c, u);
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable body (CPUs without AVX2) equals the one this CPU runs,
    /// bit for bit; `tests/ops.rs` checks that one against an f64 reference.
    #[test]
    fn portable_body_equals_the_dispatched_one() {
        let (o, c) = (40usize, 5usize);
        let blocks = o.div_ceil(OB);
        let mut rng = crate::util::Rng::new(3);
        let nibbles: Vec<u8> = (0..blocks * c * 9 * OB / 2)
            .map(|_| rng.below(256) as u8)
            .collect();
        let step: Vec<f32> = (0..blocks * OB).map(|_| rng.unit() as f32).collect();
        let lo: Vec<f32> = (0..blocks * OB).map(|_| rng.normal() as f32).collect();
        let w = Weights::Nibbles {
            nibbles: &nibbles,
            step: &step,
            lo: &lo,
        };
        let mut buf = vec![];
        let fast = transform_nibbles_into(w, o, c, &mut buf).to_vec();
        let mut portable = vec![0f32; fast.len()];
        body(
            &nibbles,
            &step,
            &lo,
            blocks,
            o.div_ceil(OR),
            c,
            &mut portable,
        );
        assert!(fast
            .iter()
            .zip(&portable)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

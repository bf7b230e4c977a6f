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
//!
//! The codes are stored in the order the transform reads them
//! ([`pack_nibbles`]), not in the direct kernel's: per 8-channel output
//! block, per pair of input channels, 72 bytes whose 16 lanes are
//! (output channel j % 8, input channel 2p + j / 8). Bytes 16i + j hold
//! taps 2i (low nibble) and 2i + 1 (high) of lane j; bytes 64 + j hold
//! tap 8 of lanes j (low) and j + 8 (high). One vector of 16 lanes is then
//! one transformed value for 8 output × 2 input channels: 16 contiguous
//! floats of `U` (`[16 ξ][⌈O/8⌉][C][8]`), one aligned store, with no
//! lane shuffles in between. (In the direct kernel's order, 16 output
//! channels of one input channel, each value had to be split into two
//! halves for `U`'s 8-channel blocks, and a staging buffer kept the stores
//! from thrashing one L1 set: 10.1 µs for a 64×64 layer against 4.4 µs
//! this way in the 32 KB chunks a single image runs, AVX-512, fastest of
//! 100 in `benches/engine.rs`.)
use super::{LANES, OR};

/// Bytes per (8 output channels × 2 input channels) group.
pub const PAIR_BYTES: usize = 72;
/// f32s per cache line.
const LINE: usize = 16;
/// `D` and `e` of the module doc: `U[a][b] = step·D[a]·D[b]·(H q Hᵀ)[a][b] + lo·E[a]·E[b]`.
const D: [f32; 4] = [1.0, 0.5, 0.5, 1.0];
const E: [f32; 4] = [1.0, 1.5, 0.5, 1.0];

/// A 3×3 layer's 4-bit codes in the transform's order ([`pack_nibbles`]):
/// the value of code `q` in output channel `o` is `lo[o] + step[o]·q`.
#[derive(Clone, Copy)]
pub struct Nibbles<'a> {
    pub codes: &'a [u8],
    /// Per output channel, padded to whole 8-channel blocks.
    pub step: &'a [f32],
    pub lo: &'a [f32],
}

impl<'a> Nibbles<'a> {
    /// Bytes of codes for `o` output and `c` input channels.
    pub fn codes_len(o: usize, c: usize) -> usize {
        o.div_ceil(OR) * c.div_ceil(2) * PAIR_BYTES
    }
    /// Whether these hold a whole `o` × `c` layer.
    pub fn fits(&self, o: usize, c: usize) -> bool {
        let padded = o.div_ceil(OR) * OR;
        self.codes.len() >= Self::codes_len(o, c)
            && self.step.len() >= padded
            && self.lo.len() >= padded
    }
    /// The codes from 8-channel output block `ob` on.
    pub fn from_block(self, ob: usize, c: usize) -> Nibbles<'a> {
        Nibbles {
            codes: &self.codes[ob * c.div_ceil(2) * PAIR_BYTES..],
            step: &self.step[ob * OR..],
            lo: &self.lo[ob * OR..],
        }
    }
}

/// Codes `[o][c][9]` (row-major, each 0–15) in the transform's order;
/// channels past `o` and `c` are zero codes.
pub fn pack_nibbles(codes: &[u8], o: usize, c: usize) -> Vec<u8> {
    assert_eq!(codes.len(), o * c * 9, "winograd: codes size");
    let (obs, cp) = (o.div_ceil(OR), c.div_ceil(2));
    let mut out = vec![0u8; obs * cp * PAIR_BYTES];
    let code = |oc: usize, ic: usize, t: usize| {
        if oc < o && ic < c {
            codes[(oc * c + ic) * 9 + t] & 15
        } else {
            0
        }
    };
    for ob in 0..obs {
        for p in 0..cp {
            let group = &mut out[(ob * cp + p) * PAIR_BYTES..][..PAIR_BYTES];
            let lane = |j: usize| (ob * OR + j % OR, 2 * p + j / OR);
            for j in 0..LANES {
                let (oc, ic) = lane(j);
                for i in 0..4 {
                    group[16 * i + j] = code(oc, ic, 2 * i) | code(oc, ic, 2 * i + 1) << 4;
                }
            }
            for j in 0..8 {
                let ((o0, i0), (o1, i1)) = (lane(j), lane(j + 8));
                group[64 + j] = code(o0, i0, 8) | code(o1, i1, 8) << 4;
            }
        }
    }
    out
}

/// Whether the buffers hold `nob` 8-channel blocks of `c` input channels
/// and their transform: checked before the unsafe bodies index them.
fn sizes_ok(w: &Nibbles, nob: usize, c: usize, u: &[f32]) -> bool {
    w.fits(nob * OR, c) && u.len() >= 16 * nob * c * OR
}

/// `H x` for a column (or row) `x` of three.
#[inline(always)]
fn h(x0: f32, x1: f32, x2: f32) -> [f32; 4] {
    let t = x0 + x2;
    [x0, t + x1, t - x1, x2]
}

/// The 9 codes of lane `j` of a 72-byte group.
#[inline(always)]
fn lane_codes(group: &[u8], j: usize) -> [f32; 9] {
    std::array::from_fn(|t| {
        let b = if t < 8 {
            group[16 * (t / 2) + j] >> (4 * (t % 2))
        } else {
            group[64 + j % 8] >> (4 * (j / 8))
        };
        (b & 15) as f32
    })
}

/// The whole transform, one lane at a time: for CPUs without AVX2, and the
/// reference the vector bodies equal bit for bit (same operations, same
/// order).
fn body(w: Nibbles, nob: usize, c: usize, u: &mut [f32]) {
    assert!(sizes_ok(&w, nob, c, u), "winograd: 4-bit weights size");
    let cp = c.div_ceil(2);
    for ob in 0..nob {
        for p in 0..cp {
            let group = &w.codes[(ob * cp + p) * PAIR_BYTES..][..PAIR_BYTES];
            for j in 0..LANES {
                let ic = 2 * p + j / OR;
                if ic >= c {
                    continue;
                }
                let (st, l) = (w.step[ob * OR + j % OR], w.lo[ob * OR + j % OR]);
                let q = lane_codes(group, j);
                // Columns kx of H q (rows ky combined), then each row times Hᵀ.
                let cols: [[f32; 4]; 3] = std::array::from_fn(|kx| h(q[kx], q[3 + kx], q[6 + kx]));
                for a in 0..4 {
                    let row = h(cols[0][a], cols[1][a], cols[2][a]);
                    for (b, v) in row.into_iter().enumerate() {
                        let scale = st * (D[a] * D[b]);
                        let offset = l * (E[a] * E[b]);
                        let xi = 4 * a + b;
                        u[((xi * nob + ob) * c + ic) * OR + j % OR] = v.mul_add(scale, offset);
                    }
                }
            }
        }
    }
}

/// `body` by hand for AVX-512: one vector per group and transformed value.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn body_avx512(w: Nibbles, nob: usize, c: usize, u: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(sizes_ok(&w, nob, c, u), "winograd: 4-bit weights size");
    let cp = c.div_ceil(2);
    // Code q's value, looked up by `vpermps` (which reads the low 4 bits of
    // each index): one instruction where masking and converting took two.
    let values = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let up = u.as_mut_ptr();
    for ob in 0..nob {
        // Lanes 0–7 and 8–15 are the same 8 output channels.
        let vs = _mm512_castps256_ps512(_mm256_loadu_ps(w.step.as_ptr().add(ob * OR)));
        let vs = _mm512_shuffle_f32x4::<0b01_00_01_00>(vs, vs);
        let vl = _mm512_castps256_ps512(_mm256_loadu_ps(w.lo.as_ptr().add(ob * OR)));
        let vl = _mm512_shuffle_f32x4::<0b01_00_01_00>(vl, vl);
        let scale: [__m512; 16] =
            std::array::from_fn(|xi| _mm512_mul_ps(vs, _mm512_set1_ps(D[xi / 4] * D[xi % 4])));
        let offset: [__m512; 16] =
            std::array::from_fn(|xi| _mm512_mul_ps(vl, _mm512_set1_ps(E[xi / 4] * E[xi % 4])));
        let codes = w.codes.as_ptr().add(ob * cp * PAIR_BYTES);
        for p in 0..cp {
            let g = codes.add(p * PAIR_BYTES);
            let mut q = [_mm512_setzero_ps(); 9];
            for i in 0..4 {
                let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(g.add(16 * i) as *const __m128i));
                q[2 * i] = _mm512_permutexvar_ps(bytes, values);
                // The high nibble still converted: looking it up as well
                // measured the same (the lookups share one port).
                q[2 * i + 1] = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(bytes));
            }
            // Tap 8: lanes 0–7 in the low nibbles, 8–15 in the high ones
            // (the lookup ignores the bits above each nibble).
            let x = _mm_loadl_epi64(g.add(64) as *const __m128i);
            let lanes = _mm_unpacklo_epi64(x, _mm_srli_epi16::<4>(x));
            q[8] = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(lanes), values);
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
            // An odd last channel has no second half to store.
            let keep: __mmask16 = if 2 * p + 1 < c { 0xffff } else { 0x00ff };
            for (a, r) in hq.iter().enumerate() {
                let t = _mm512_add_ps(r[0], r[2]);
                let row = [r[0], _mm512_add_ps(t, r[1]), _mm512_sub_ps(t, r[1]), r[2]];
                for (bb, &v) in row.iter().enumerate() {
                    let xi = 4 * a + bb;
                    let at = up.add(((xi * nob + ob) * c + 2 * p) * OR);
                    let val = _mm512_fmadd_ps(v, scale[xi], offset[xi]);
                    _mm512_mask_storeu_ps(at, keep, val);
                }
            }
        }
    }
}

/// `body` by hand for AVX2 + FMA: each group as two halves of 8 lanes,
/// one per input channel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2<const STAGED: bool>(w: Nibbles, nob: usize, c: usize, u: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(sizes_ok(&w, nob, c, u), "winograd: 4-bit weights size");
    let cp = c.div_ceil(2);
    let mask = _mm256_set1_epi32(15);
    let up = u.as_mut_ptr();
    for ob in 0..nob {
        let vs = _mm256_loadu_ps(w.step.as_ptr().add(ob * OR));
        let vl = _mm256_loadu_ps(w.lo.as_ptr().add(ob * OR));
        let scale: [__m256; 16] =
            std::array::from_fn(|xi| _mm256_mul_ps(vs, _mm256_set1_ps(D[xi / 4] * D[xi % 4])));
        let offset: [__m256; 16] =
            std::array::from_fn(|xi| _mm256_mul_ps(vl, _mm256_set1_ps(E[xi / 4] * E[xi % 4])));
        let codes = w.codes.as_ptr().add(ob * cp * PAIR_BYTES);
        for p in 0..cp {
            let g = codes.add(p * PAIR_BYTES);
            let tap8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(g.add(64) as *const __m128i));
            // STAGED: both input channels' values first, then each ξ's two
            // halves stored back to back. They share a cache line, and when
            // the ξ streams lie a multiple of 4 KB apart (one L1 set) the
            // line left L1 between the two halves, doubling the misses.
            // Otherwise storing each half as it comes is faster (no spills).
            let mut vals = [[_mm256_setzero_ps(); 16]; 2];
            let halves = if 2 * p + 1 < c { 2 } else { 1 };
            for (half, val) in vals.iter_mut().enumerate().take(halves) {
                let mut q = [_mm256_setzero_ps(); 9];
                for i in 0..4 {
                    let at = g.add(16 * i + 8 * half) as *const __m128i;
                    let bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(at));
                    q[2 * i] = _mm256_cvtepi32_ps(_mm256_and_si256(bytes, mask));
                    q[2 * i + 1] = _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(bytes));
                }
                q[8] = _mm256_cvtepi32_ps(if half == 0 {
                    _mm256_and_si256(tap8, mask)
                } else {
                    _mm256_srli_epi32::<4>(tap8)
                });
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
                        let v = _mm256_fmadd_ps(v, scale[xi], offset[xi]);
                        if STAGED {
                            val[xi] = v;
                        } else {
                            let at = up.add(((xi * nob + ob) * c + 2 * p + half) * OR);
                            _mm256_storeu_ps(at, v);
                        }
                    }
                }
            }
            if STAGED {
                for xi in 0..16 {
                    let at = up.add(((xi * nob + ob) * c + 2 * p) * OR);
                    for (half, val) in vals.iter().enumerate().take(halves) {
                        _mm256_storeu_ps(at.add(half * OR), val[xi]);
                    }
                }
            }
        }
    }
}

/// [`super::transform_weights`] of `o` output channels of 4-bit codes into
/// a reused buffer; returns the part of `buf` that holds them
/// (`[16 ξ][⌈o/8⌉][c][8]`). Equal to transforming the decoded weights up to
/// rounding (a few ulp).
pub fn transform_nibbles_into<'b>(
    w: Nibbles,
    o: usize,
    c: usize,
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    let nob = o.div_ceil(OR);
    // Every element is written (padding channels have zero codes and
    // scales). Grown, never shrunk: layers of different sizes share the
    // buffer, and growing back after a shrink wrote zeros again (2 % of a
    // 4-bit ResNet-20 pass).
    let len = 16 * nob * c * OR;
    if buf.len() < len + LINE - 1 {
        buf.resize(len + LINE - 1, 0.0);
    }
    // From a 64-byte boundary, so that a group's 16 floats are one line
    // (for even `c`) whichever allocator the binary or bench runs on.
    let at = buf.as_ptr().align_offset(LINE * 4).min(LINE - 1);
    let u = &mut buf[at..at + len];
    assert!(sizes_ok(&w, nob, c, u), "winograd: 4-bit weights size");
    #[cfg(target_arch = "x86_64")]
    {
        use crate::engine::kernels::direct_conv::Isa;
        match super::isa() {
            // SAFETY: the features are checked by `isa`; sizes asserted above.
            Some(Isa::Avx512) => unsafe { body_avx512(w, nob, c, u) },
            // ξ streams a multiple of 4 KB apart share one L1 set.
            Some(Isa::Avx2) if (nob * c * OR * 4).is_multiple_of(4096) => unsafe {
                body_avx2::<true>(w, nob, c, u)
            },
            Some(Isa::Avx2) => unsafe { body_avx2::<false>(w, nob, c, u) },
            None => body(w, nob, c, u),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    body(w, nob, c, u);
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable body (CPUs without AVX2) equals the one this CPU runs,
    /// bit for bit, with odd input channels and a partial output block;
    /// `tests/ops.rs` checks the result against an f64 reference.
    #[test]
    fn portable_body_equals_the_dispatched_one() {
        let (o, c) = (20usize, 5usize);
        let mut rng = crate::util::Rng::new(3);
        let codes: Vec<u8> = (0..o * c * 9).map(|_| rng.below(16) as u8).collect();
        let packed = pack_nibbles(&codes, o, c);
        let padded = o.div_ceil(OR) * OR;
        let step: Vec<f32> = (0..padded).map(|_| rng.unit() as f32).collect();
        let lo: Vec<f32> = (0..padded).map(|_| rng.normal() as f32).collect();
        let w = Nibbles {
            codes: &packed,
            step: &step,
            lo: &lo,
        };
        let mut buf = vec![];
        let fast = transform_nibbles_into(w, o, c, &mut buf).to_vec();
        let mut portable = vec![0f32; fast.len()];
        body(w, o.div_ceil(OR), c, &mut portable);
        assert!(fast
            .iter()
            .zip(&portable)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// Every code lands in its own lane and tap: unpacking `pack_nibbles`'
    /// groups gives back the codes, padding lanes zero.
    #[test]
    fn packed_codes_unpack_to_their_lanes() {
        let (o, c) = (11usize, 3usize);
        let codes: Vec<u8> = (0..o * c * 9).map(|i| (i * 7 % 16) as u8).collect();
        let packed = pack_nibbles(&codes, o, c);
        assert_eq!(packed.len(), Nibbles::codes_len(o, c));
        let cp = c.div_ceil(2);
        for ob in 0..o.div_ceil(OR) {
            for p in 0..cp {
                let group = &packed[(ob * cp + p) * PAIR_BYTES..][..PAIR_BYTES];
                for j in 0..LANES {
                    let (oc, ic) = (ob * OR + j % OR, 2 * p + j / OR);
                    let got = lane_codes(group, j);
                    for (t, &g) in got.iter().enumerate() {
                        let want = if oc < o && ic < c {
                            codes[(oc * c + ic) * 9 + t]
                        } else {
                            0
                        };
                        assert_eq!(g, want as f32, "(o, c, tap) = ({oc}, {ic}, {t})");
                    }
                }
            }
        }
    }
}

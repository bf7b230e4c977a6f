//! The register tiles of the direct convolution, one function per ISA and
//! tiling (see the parent module for the schemes), and the vectorised
//! 4-bit weight decode. Callers check every bound these rely on.
use super::{HB, LANES, OB};

/// Decode output-channel block `ob` of 4-bit weights into `dst`, tap `t`'s
/// 16 channels at `dst[t·stride..]` (`stride` = OB: the block's `d·OB`
/// floats in order), 32 values per step: 16 bytes widened to 32-bit lanes,
/// low and high nibbles interleaved back into order, then `lo + step·code`
/// with the block's 16 channel scales.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn decode_block_avx512(
    nibbles: &[u8],
    step: &[f32],
    lo: &[f32],
    ob: usize,
    d: usize,
    dst: &mut [f32],
    stride: usize,
) {
    use std::arch::x86_64::*;
    let n = d * OB;
    let bytes = &nibbles[ob * n / 2..(ob + 1) * n / 2];
    assert!(stride >= OB && dst.len() >= (d - 1) * stride + OB);
    let (st, l) = (&step[ob * OB..][..OB], &lo[ob * OB..][..OB]);
    // 16 consecutive values are one tap's 16 channels.
    let (vs, vl) = (_mm512_loadu_ps(st.as_ptr()), _mm512_loadu_ps(l.as_ptr()));
    let mask = _mm512_set1_epi32(15);
    // Lane i of `first` takes element i/2 of lo (even i) or of hi (odd i).
    let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let full = bytes.len() / 16 * 16;
    for k in (0..full).step_by(16) {
        let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(bytes.as_ptr().add(k) as *const _));
        let lo_n = _mm512_cvtepi32_ps(_mm512_and_si512(b, mask));
        let hi_n = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(b));
        let v0 = _mm512_permutex2var_ps(lo_n, first, hi_n);
        let v1 = _mm512_permutex2var_ps(lo_n, second, hi_n);
        // Bytes k.. hold taps k/8 and k/8 + 1.
        let at = dst.as_mut_ptr().add(k / 8 * stride);
        _mm512_storeu_ps(at, _mm512_fmadd_ps(v0, vs, vl));
        _mm512_storeu_ps(at.add(stride), _mm512_fmadd_ps(v1, vs, vl));
    }
    for k in full..bytes.len() {
        let (j, b) = ((2 * k) % OB, bytes[k]);
        let at = 2 * k / OB * stride + j;
        dst[at] = l[j] + st[j] * (b & 15) as f32;
        dst[at + 1] = l[j + 1] + st[j + 1] * (b >> 4) as f32;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_avx512<const V: usize>(
    xpad: &[f32],
    offsets: &[usize],
    wblock: &[f32],
    half: usize,
    p0: usize,
    dst: &mut [f32],
    positions: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); V]; HB];
    let x = xpad.as_ptr();
    let wp = wblock.as_ptr().add(half * HB);
    for (t, &off) in offsets.iter().enumerate() {
        // SAFETY: see the caller; `t·OB + half·8 + j < d·OB = wblock.len()`.
        let xv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(x.add(off + p0 + v * LANES)));
        let wt = wp.add(t * OB);
        for (j, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*wt.add(j));
            for v in 0..V {
                a[v] = _mm512_fmadd_ps(wv, xv[v], a[v]);
            }
        }
    }
    let d = dst.as_mut_ptr();
    for (j, a) in acc.iter().enumerate() {
        for (v, av) in a.iter().enumerate() {
            _mm512_storeu_ps(d.add(j * positions + p0 + v * LANES), *av);
        }
    }
}

/// What an exact tile needs besides its position.
pub(super) struct ExactTile<'a> {
    /// Row pitch of the (phase) input planes.
    pub(super) wq: usize,
    pub(super) plane: usize,
    pub(super) wo: usize,
    /// Output channels of this block that exist (the rest are padding).
    pub(super) valid: usize,
    pub(super) bias: &'a [f32; OB],
    pub(super) relu: bool,
}

/// 16 channels × 16 positions (`R` rows × `16/R` columns from (oy, ox)):
/// `acc[p] += x[p]·w[0..16]` over every tap, transpose so each vector is one
/// channel, then bias, residual and ReLU on the way out.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_exact<const R: usize>(
    xpad: &[f32],
    offsets: &[usize],
    wblock: &[f32],
    t: &ExactTile,
    oy: usize,
    ox: usize,
    out: *mut f32,
    residual: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    let cols = OB / R;
    let mut acc = [_mm512_setzero_ps(); OB];
    let x = xpad.as_ptr().add(oy * t.wq + ox);
    let wp = wblock.as_ptr();
    for (k, &off) in offsets.iter().enumerate() {
        let wv = _mm512_loadu_ps(wp.add(k * OB));
        let base = x.add(off);
        for r in 0..R {
            let row = base.add(r * t.wq);
            for c in 0..cols {
                let p = r * cols + c;
                acc[p] = _mm512_fmadd_ps(_mm512_set1_ps(*row.add(c)), wv, acc[p]);
            }
        }
    }
    transpose16(&mut acc);
    let zero = _mm512_setzero_ps();
    for (j, &a) in acc.iter().enumerate().take(t.valid) {
        let v = _mm512_add_ps(a, _mm512_set1_ps(t.bias[j]));
        for r in 0..R {
            // Lanes r·cols .. (r+1)·cols hold row oy + r; a masked access at
            // `start − r·cols` puts lane r·cols at `start` (masked-off lanes
            // are never touched, so the shifted base is never dereferenced).
            let start = j * t.plane + (oy + r) * t.wo + ox;
            let mask: __mmask16 = (((1u32 << cols) - 1) << (r * cols)) as __mmask16;
            let mut y = v;
            if let Some(res) = residual {
                let rp = res.as_ptr().add(start).wrapping_sub(r * cols);
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, rp));
            }
            if t.relu {
                y = _mm512_max_ps(y, zero);
            }
            _mm512_mask_storeu_ps(out.add(start).wrapping_sub(r * cols), mask, y);
        }
    }
}

/// In-register transpose: afterwards `a[j]` lane `i` = old `a[i]` lane `j`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16(a: &mut [std::arch::x86_64::__m512; 16]) {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved per 128-bit lane...
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
    }
    // ...then quads: u[4g + m], 128-bit lane k = rows 4g..4g+4 at column 4k + m.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        let pd = _mm512_castps_pd;
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t0), pd(t2)));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t0), pd(t2)));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t1), pd(t3)));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t1), pd(t3)));
    }
    // Gather the four 128-bit lanes k of u[m], u[4+m], u[8+m], u[12+m].
    for m in 0..4 {
        let v = _mm512_shuffle_f32x4::<0x88>(u[m], u[4 + m]);
        let w = _mm512_shuffle_f32x4::<0xdd>(u[m], u[4 + m]);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + m], u[12 + m]);
        let w2 = _mm512_shuffle_f32x4::<0xdd>(u[8 + m], u[12 + m]);
        a[m] = _mm512_shuffle_f32x4::<0x88>(v, v2);
        a[8 + m] = _mm512_shuffle_f32x4::<0xdd>(v, v2);
        a[4 + m] = _mm512_shuffle_f32x4::<0x88>(w, w2);
        a[12 + m] = _mm512_shuffle_f32x4::<0xdd>(w, w2);
    }
}

/// AVX2 + FMA tile: 4 output channels (quarter `quarter` of half `half`) ×
/// 16 positions (two 8-lane vectors): 8 accumulators + 2 loads + 1
/// broadcast fit the 16 ymm registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_avx2(
    xpad: &[f32],
    offsets: &[usize],
    wblock: &[f32],
    half: usize,
    quarter: usize,
    p0: usize,
    dst: &mut [f32],
    positions: usize,
) {
    use std::arch::x86_64::*;
    const Q: usize = 4;
    let mut acc = [[_mm256_setzero_ps(); 2]; Q];
    let x = xpad.as_ptr();
    let wp = wblock.as_ptr().add(half * HB + quarter * Q);
    for (t, &off) in offsets.iter().enumerate() {
        // SAFETY: as for `tile_avx512` (16 positions from p0 < positions).
        let x0 = _mm256_loadu_ps(x.add(off + p0));
        let x1 = _mm256_loadu_ps(x.add(off + p0 + 8));
        let wt = wp.add(t * OB);
        for (j, a) in acc.iter_mut().enumerate() {
            let wv = _mm256_set1_ps(*wt.add(j));
            a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
            a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
        }
    }
    let d = dst.as_mut_ptr().add(quarter * Q * positions);
    for (j, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(d.add(j * positions + p0), a[0]);
        _mm256_storeu_ps(d.add(j * positions + p0 + 8), a[1]);
    }
}

/// One row of row-order 4-bit codes to f32 (`decode_rows_into`), 32 values
/// per step as `decode_block_avx512`, with the row's one scale and offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn decode_row_avx512(row: &[u8], step: f32, lo: f32, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = dst.len();
    assert!(row.len() >= d.div_ceil(2));
    let (vs, vl) = (_mm512_set1_ps(step), _mm512_set1_ps(lo));
    let mask = _mm512_set1_epi32(15);
    let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let full = d / 32 * 32;
    for k in (0..full).step_by(32) {
        let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(row.as_ptr().add(k / 2) as *const _));
        let lo_n = _mm512_cvtepi32_ps(_mm512_and_si512(b, mask));
        let hi_n = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(b));
        let v0 = _mm512_permutex2var_ps(lo_n, first, hi_n);
        let v1 = _mm512_permutex2var_ps(lo_n, second, hi_n);
        _mm512_storeu_ps(dst.as_mut_ptr().add(k), _mm512_fmadd_ps(v0, vs, vl));
        _mm512_storeu_ps(dst.as_mut_ptr().add(k + 16), _mm512_fmadd_ps(v1, vs, vl));
    }
    for k in full..d {
        let b = row[k / 2] >> (4 * (k % 2));
        dst[k] = lo + step * (b & 15) as f32;
    }
}

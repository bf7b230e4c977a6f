//! The AVX2 + FMA body of the Winograd kernel: the same planes, buffers and
//! transforms as the AVX-512 body (see the parent module), on 8-lane
//! vectors. A vector is 8 tiles of one tile row (rows of 8k tiles) or two
//! rows (4 tiles per row), so every load and store is a whole vector.
//! Callers check every bound these rely on.
use super::{Part, Rows, SliceWeights, SlicedPart, WinoGeom, OR, SLICE, TB};
use crate::engine::kernels::direct_conv::Epilogue;
use std::arch::x86_64::*;

const L8: usize = 8;
/// How a vector of 8 tiles is loaded and stored: one tile row (rows of 8k
/// tiles), two rows of 4, or gathered / stored lane by lane (any other
/// geometry, edge tiles masked).
pub(super) const ROW: u8 = 0;
pub(super) const FOUR: u8 = 1;
pub(super) const ANY: u8 = 2;

/// `super::build_planes_of` on AVX2: 16 source columns per step.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn build_planes_of(
    g: &WinoGeom,
    img: &[f32],
    planes: *mut f32,
    len: usize,
    rows: std::ops::Range<usize>,
) {
    let (hp, p, pad) = (g.hp(), g.pitch(), g.pad);
    let ph = hp * p;
    let row_split = g.row_split();
    let [(even_ph, even_at, _), (odd_ph, odd_at, _)] = row_split;
    assert!(len >= g.planes_len() && img.len() >= g.c * g.h * g.w);
    let (rows, in_rows) = g.input_rows(rows);
    // Lane mask of the first n lanes (maskload/maskstore read the sign bit).
    let first = |n: usize| {
        let n = n.min(L8) as i32;
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    };
    let zero = _mm256_setzero_ps();
    let clear = |row: *mut f32, a: usize, b: usize| {
        let mut k = a;
        while k < b {
            _mm256_maskstore_ps(row.add(k), first(b - k), zero);
            k += L8;
        }
    };
    // Within each 128-bit half: evens first, then odds.
    let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for ch in 0..g.c {
        let cp = planes.add(ch * 2 * ph);
        for phase in 0..2 {
            for r in (rows.start..in_rows.start).chain(in_rows.end..rows.end) {
                clear(cp.add(phase * ph + r * p), 0, p);
            }
        }
        for r in in_rows.clone() {
            let y = r - pad;
            let src = img.as_ptr().add((ch * g.h + y) * g.w);
            let e = cp.add(even_ph * ph + r * p);
            let o = cp.add(odd_ph * ph + r * p);
            super::clear_row_ends(g, row_split, p, (e, o), clear);
            let (e, o) = (e.add(even_at), o.add(odd_at));
            let mut k = 0;
            while k < g.w {
                let left = (g.w - k).min(2 * L8);
                // Whole vectors load and store plainly; only a row's tail is masked.
                let (a, b) = if left == 2 * L8 {
                    (
                        _mm256_loadu_ps(src.add(k)),
                        _mm256_loadu_ps(src.add(k + L8)),
                    )
                } else {
                    (
                        _mm256_maskload_ps(src.add(k), first(left)),
                        _mm256_maskload_ps(src.add(k + L8), first(left.saturating_sub(L8))),
                    )
                };
                let (a, b) = (
                    _mm256_permutevar8x32_ps(a, split),
                    _mm256_permutevar8x32_ps(b, split),
                );
                // a = [a0 a2 a4 a6 | a1 a3 a5 a7]: evens of a then of b.
                let ev = _mm256_permute2f128_ps::<0x20>(a, b);
                let od = _mm256_permute2f128_ps::<0x31>(a, b);
                if left == 2 * L8 {
                    _mm256_storeu_ps(e.add(k / 2), ev);
                    _mm256_storeu_ps(o.add(k / 2), od);
                } else {
                    _mm256_maskstore_ps(e.add(k / 2), first(left.div_ceil(2)), ev);
                    _mm256_maskstore_ps(o.add(k / 2), first(left / 2), od);
                }
                k += 2 * L8;
            }
        }
    }
}

/// Rows of 8k tiles (Wide and Eight) load whole vectors from one row.
pub(super) fn row_kind(g: &WinoGeom) -> u8 {
    match g.rows() {
        Some(Rows::Wide | Rows::Eight) => ROW,
        Some(Rows::Four) => FOUR,
        _ => ANY,
    }
}

/// `super::run_part` on AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run_part(p: &Part, scratch: &mut [f32]) {
    let (g, planes, u, out, epi) = (p.g, p.planes, p.u, p.out, p.epi);
    let kind = row_kind(g);
    let (vbuf, mbuf) = scratch.split_at_mut(16 * g.c * TB);
    for blk in p.blocks.clone() {
        let (t0, nt) = g.block_tiles(blk);
        let vb0 = match p.v {
            Some(v) => v[(blk - p.blocks.start) * 16 * g.c * TB..][..16 * g.c * TB].as_ptr(),
            None => {
                inputs_of_block(g, planes, t0, nt, vbuf);
                vbuf.as_ptr()
            }
        };
        for ob in p.obs.clone() {
            for xi in 0..16 {
                let ub = u.block(xi, ob, g.c);
                let mb = mbuf.as_mut_ptr().add(xi * OR * TB);
                let vb = vb0.add(xi * g.c * TB);
                gemm(vb, ub, g.c, nt, mb, false);
            }
            match kind {
                ROW => output_transform::<ROW>(g, mbuf, ob, t0, nt, out, epi),
                FOUR => output_transform::<FOUR>(g, mbuf, ob, t0, nt, out, epi),
                _ => output_transform::<ANY>(g, mbuf, ob, t0, nt, out, epi),
            }
        }
    }
}

/// [`SlicedPart`] (see [`super::conv_image_4bit`]).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run_sliced(p: &SlicedPart, scratch: &mut [f32], u_of: SliceWeights) {
    let (g, out, epi) = (p.g, p.out, p.epi);
    let kind = row_kind(g);
    let (vbuf, mbuf) = scratch.split_at_mut(16 * g.c * TB);
    let (t0, nt) = g.block_tiles(p.blk);
    inputs_of_block(g, p.planes, t0, nt, vbuf);
    let vb0 = vbuf.as_ptr();
    for ob in p.obs.clone() {
        let mut c0 = 0;
        while c0 < g.c {
            let c1 = (c0 + SLICE).min(g.c);
            let us = u_of(ob, c0..c1);
            // Later slices add to the earlier ones' products: the same
            // multiply-adds in the same order as one pass over `c`.
            for xi in 0..16 {
                let mb = mbuf.as_mut_ptr().add(xi * OR * TB);
                let vb = vb0.add((xi * g.c + c0) * TB);
                gemm(vb, us.add(xi * (c1 - c0) * OR), c1 - c0, nt, mb, c0 > 0);
            }
            c0 = c1;
        }
        match kind {
            ROW => output_transform::<ROW>(g, mbuf, ob, t0, nt, out, epi),
            FOUR => output_transform::<FOUR>(g, mbuf, ob, t0, nt, out, epi),
            _ => output_transform::<ANY>(g, mbuf, ob, t0, nt, out, epi),
        }
    }
}

/// `V` of tiles `t0 .. t0 + nt` into `vbuf`, for the geometry's row kind.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn inputs_of_block(
    g: &WinoGeom,
    planes: &[f32],
    t0: usize,
    nt: usize,
    vbuf: &mut [f32],
) {
    match row_kind(g) {
        ROW => input_transform::<ROW>(g, planes, t0, nt, vbuf),
        FOUR => input_transform::<FOUR>(g, planes, t0, nt, vbuf),
        _ => input_transform::<ANY>(g, planes, t0, nt, vbuf),
    }
}

/// Tap (i, j) of 8 tiles from `t` on, as 32-bit words of the phase planes
/// at `cp` (one channel's, or one channel pair's for the integer body,
/// which shares this): the f32 body reinterprets them as floats.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn load_taps<const KIND: u8>(
    cp: *const i32,
    g: &WinoGeom,
    t: usize,
    i: usize,
    j: usize,
    idx: __m256i,
) -> __m256i {
    let (p, tw) = (g.pitch(), g.tiles().1);
    let base = cp.add((j % 2) * g.hp() * p + j / 2);
    if KIND == ANY {
        return _mm256_i32gather_epi32::<4>(base.add(i * p), idx);
    }
    let (ty, tx) = (t / tw, t % tw);
    let at = |ty: usize| base.add((2 * ty + i) * p);
    if KIND == FOUR {
        let lo = _mm256_castsi128_si256(_mm_loadu_si128(at(ty).cast()));
        _mm256_inserti128_si256::<1>(lo, _mm_loadu_si128(at(ty + 1).cast()))
    } else {
        _mm256_loadu_si256(at(ty).add(tx).cast())
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn input_transform<const KIND: u8>(
    g: &WinoGeom,
    planes: &[f32],
    t0: usize,
    nt: usize,
    vbuf: &mut [f32],
) {
    let cl = g.channel_len();
    let v = vbuf.as_mut_ptr();
    for ch in 0..g.c {
        let cp = planes.as_ptr().add(ch * cl);
        for grp in 0..nt / L8 {
            let t = t0 + grp * L8;
            let idx = if KIND == ANY {
                let o: [i32; L8] = std::array::from_fn(|l| g.tile_origin(t + l));
                _mm256_loadu_si256(o.as_ptr() as *const _)
            } else {
                _mm256_setzero_si256()
            };
            let d: [[__m256; 4]; 4] = std::array::from_fn(|i| {
                std::array::from_fn(|j| {
                    _mm256_castsi256_ps(load_taps::<KIND>(cp.cast(), g, t, i, j, idx))
                })
            });
            input_tile!(d, _mm256_add_ps, _mm256_sub_ps, |xi, x| {
                _mm256_storeu_ps(v.add((xi * g.c + ch) * TB + grp * L8), x)
            });
        }
    }
}

/// `M[r][tiles] = Σ_c U[c][r] · V[c][tiles]` for one ξ: 4 channels × 16
/// tiles per register tile (8 accumulators of the 16 ymm registers); with
/// `add`, onto the `M` there (a later slice of channels).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn gemm(v: *const f32, u: *const f32, c: usize, nt: usize, m: *mut f32, add: bool) {
    for half in 0..OR / 4 {
        for pair in 0..nt / (2 * L8) {
            let col = pair * 2 * L8;
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            if add {
                for (r, a) in acc.iter_mut().enumerate() {
                    let row = m.add((half * 4 + r) * TB + col);
                    *a = [_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(L8))];
                }
            }
            for ch in 0..c {
                let x0 = _mm256_loadu_ps(v.add(ch * TB + col));
                let x1 = _mm256_loadu_ps(v.add(ch * TB + col + L8));
                let w = u.add(ch * OR + half * 4);
                for (r, a) in acc.iter_mut().enumerate() {
                    let wv = _mm256_broadcast_ss(&*w.add(r));
                    a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
                    a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let row = m.add((half * 4 + r) * TB + col);
                _mm256_storeu_ps(row, a[0]);
                _mm256_storeu_ps(row.add(L8), a[1]);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn output_transform<const KIND: u8>(
    g: &WinoGeom,
    mbuf: &[f32],
    ob: usize,
    t0: usize,
    nt: usize,
    out: *mut f32,
    epi: &Epilogue,
) {
    let (ho, wo) = g.out();
    let plane = ho * wo;
    let valid = (g.o - ob * OR).min(OR);
    let m = mbuf.as_ptr();
    for r in 0..valid {
        let oc = ob * OR + r;
        let bias = epi.bias.map_or(0.0, |b| b[oc]);
        let dst = out.add(oc * plane);
        let res = epi.residual.map(|x| x.as_ptr().add(oc * plane));
        for grp in 0..nt / L8 {
            let mv: [__m256; 16] =
                std::array::from_fn(|xi| _mm256_loadu_ps(m.add((xi * OR + r) * TB + grp * L8)));
            let y = output_tile!(mv, _mm256_add_ps, _mm256_sub_ps);
            for (dy, y) in y.into_iter().enumerate() {
                store_row::<KIND>(g, t0 + grp * L8, dy, y, bias, dst, res, epi.relu);
            }
        }
    }
}

/// Row `dy` of the 2×2 outputs of 8 tiles from tile `t` on (columns 0 and
/// 1 in `y0`, `y1`) into the output plane `dst` (`[Ho, Wo]`) as
/// `relu?((y + bias) + residual)`, skipping what lies outside the output.
/// Shared with the integer body (`int16`), which passes its dequantized
/// sums: the direct int8 kernel's epilogue in the same order.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_row<const KIND: u8>(
    g: &WinoGeom,
    t: usize,
    dy: usize,
    [y0, y1]: [__m256; 2],
    bias: f32,
    dst: *mut f32,
    res: Option<*const f32>,
    relu: bool,
) {
    let wo = g.out().1;
    if KIND == ANY {
        // Lane by lane, skipping what lies outside the output.
        let (mut a, mut b) = ([0f32; L8], [0f32; L8]);
        _mm256_storeu_ps(a.as_mut_ptr(), y0);
        _mm256_storeu_ps(b.as_mut_ptr(), y1);
        for l in 0..L8 {
            let Some((oy, ox)) = g.tile_output(t + l, dy) else {
                continue;
            };
            for (dx, v) in [a[l], b[l]].into_iter().enumerate() {
                if ox + dx >= wo {
                    continue;
                }
                let at = oy * wo + ox + dx;
                let mut y = v + bias;
                if let Some(rp) = res {
                    y += *rp.add(at);
                }
                if relu {
                    y = y.max(0.0);
                }
                *dst.add(at) = y;
            }
        }
        return;
    }
    let tw = g.tiles().1;
    let (ty, tx) = (t / tw, t % tw);
    // Tiles 0–3 and 4–7, each run left to right.
    let (lo, hi) = (_mm256_unpacklo_ps(y0, y1), _mm256_unpackhi_ps(y0, y1));
    let z = [
        _mm256_permute2f128_ps::<0x20>(lo, hi),
        _mm256_permute2f128_ps::<0x31>(lo, hi),
    ];
    for (half, &zv) in z.iter().enumerate() {
        let at = if KIND == FOUR {
            (2 * (ty + half) + dy) * wo
        } else {
            (2 * ty + dy) * wo + 2 * tx + L8 * half
        };
        let mut y = _mm256_add_ps(zv, _mm256_set1_ps(bias));
        if let Some(rp) = res {
            y = _mm256_add_ps(y, _mm256_loadu_ps(rp.add(at)));
        }
        if relu {
            y = _mm256_max_ps(y, _mm256_setzero_ps());
        }
        _mm256_storeu_ps(dst.add(at), y);
    }
}

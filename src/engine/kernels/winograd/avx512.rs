//! The AVX-512 body of the Winograd kernel (see the parent module for the
//! scheme): phase planes, the input transform, the GEMM register tiles and
//! the output transform with the fused epilogue. Callers check every bound
//! these rely on.
use super::{Part, Rows, SliceWeights, SlicedPart, WinoGeom, LANES, OR, SLICE, TB};
use crate::engine::kernels::direct_conv::Epilogue;

/// The zero-padded input split by column parity: channel c, phase φ, padded
/// row r, index k holds padded column `2k + φ`. Every element is written
/// once, with vector stores (slice fills became libc `memset` calls per row,
/// and a 32-wide split ran scalar on 16-wide rows: 20 % of a pass).
/// The planes' padded rows `rows` only (`planes` points at the
/// buffer; `len` is its length).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn build_planes_of(
    g: &WinoGeom,
    img: &[f32],
    planes: *mut f32,
    len: usize,
    rows: std::ops::Range<usize>,
) {
    use std::arch::x86_64::*;
    let (hp, p, pad) = (g.hp(), g.pitch(), g.pad);
    let ph = hp * p;
    let row_split = g.row_split();
    let [(even_ph, even_at, ne), (odd_ph, odd_at, _)] = row_split;
    assert!(len >= g.planes_len() && img.len() >= g.c * g.h * g.w);
    let (rows, in_rows) = g.input_rows(rows);
    let zero = _mm512_setzero_ps();
    // Zero `[a, b)` of a row.
    let clear = |row: *mut f32, a: usize, b: usize| {
        let mut k = a;
        while k < b {
            let m = ((1u32 << (b - k).min(LANES)) - 1) as __mmask16;
            _mm512_mask_storeu_ps(row.add(k), m, zero);
            k += LANES;
        }
    };
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // 32 source columns per step, the last step masked: (first column,
    // load masks of its two halves, store masks of the even and odd parts).
    let steps: Vec<(usize, __mmask16, __mmask16, __mmask16, __mmask16)> = (0..g.w)
        .step_by(2 * LANES)
        .map(|k| {
            let left = (g.w - k).min(2 * LANES);
            let m = |n: usize| ((1u32 << n) - 1) as __mmask16;
            (
                k,
                m(left.min(LANES)),
                m(left.saturating_sub(LANES)),
                m(left.div_ceil(2)),
                m(left / 2),
            )
        })
        .collect();
    let base = planes;
    // The usual case (pad 1, even width up to 32: every CIFAR ResNet layer):
    // one step per row, its masks held in registers rather than reloaded
    // from `steps` for every row. (Folding this into the general row loop,
    // with the single step hoisted, measured as slow as before: ResNet-56
    // batch 1, 1.394 vs 1.358 ms.)
    let one_step = pad == 1 && g.w.is_multiple_of(2) && steps.len() == 1;
    for ch in 0..g.c {
        let cp = base.add(ch * 2 * ph);
        for phase in 0..2 {
            for r in (rows.start..in_rows.start).chain(in_rows.end..rows.end) {
                clear(cp.add(phase * ph + r * p), 0, p);
            }
        }
        if one_step {
            let (_, ma, mb, me, mo) = steps[0];
            let src0 = img.as_ptr().add(ch * g.h * g.w);
            for r in in_rows.clone() {
                let src = src0.add((r - 1) * g.w);
                let e = cp.add(even_ph * ph + r * p);
                let o = cp.add(odd_ph * ph + r * p);
                *o = 0.0;
                *e.add(ne) = 0.0;
                let a = _mm512_maskz_loadu_ps(ma, src);
                let b = _mm512_maskz_loadu_ps(mb, src.add(LANES));
                _mm512_mask_storeu_ps(e.add(even_at), me, _mm512_permutex2var_ps(a, ie, b));
                _mm512_mask_storeu_ps(o.add(odd_at), mo, _mm512_permutex2var_ps(a, io, b));
            }
            continue;
        }
        for r in in_rows.clone() {
            let y = r - pad;
            let src = img.as_ptr().add((ch * g.h + y) * g.w);
            let e = cp.add(even_ph * ph + r * p);
            let o = cp.add(odd_ph * ph + r * p);
            super::clear_row_ends(g, row_split, p, (e, o), clear);
            let (e, o) = (e.add(even_at), o.add(odd_at));
            for &(k, ma, mb, me, mo) in &steps {
                let a = _mm512_maskz_loadu_ps(ma, src.add(k));
                let b = _mm512_maskz_loadu_ps(mb, src.add(k + LANES));
                _mm512_mask_storeu_ps(e.add(k / 2), me, _mm512_permutex2var_ps(a, ie, b));
                _mm512_mask_storeu_ps(o.add(k / 2), mo, _mm512_permutex2var_ps(a, io, b));
            }
        }
    }
}

/// Tile blocks `blocks` × output-channel blocks `obs` of one image.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run_part(p: &Part, scratch: &mut [f32]) {
    match p.g.rows() {
        Some(Rows::Wide) => part_rows::<0>(p, scratch),
        Some(Rows::Eight) => part_rows::<1>(p, scratch),
        Some(Rows::Four) => part_rows::<2>(p, scratch),
        Some(Rows::Any) => part_rows::<3>(p, scratch),
        None => unreachable!("checked by supported()"),
    }
}

/// `KIND`: 0 = `Rows::Wide`, 1 = `Eight`, 2 = `Four` (a const, so the
/// vector loads and stores compile without a branch).
#[target_feature(enable = "avx512f")]
unsafe fn part_rows<const KIND: usize>(p: &Part, scratch: &mut [f32]) {
    let (g, planes, u, out, epi, obs) = (p.g, p.planes, p.u, p.out, p.epi, &p.obs);
    let (vbuf, mbuf) = scratch.split_at_mut(16 * g.c * TB);
    for blk in p.blocks.clone() {
        let (t0, nt) = g.block_tiles(blk);
        let vb0 = match p.v {
            Some(v) => v[(blk - p.blocks.start) * 16 * g.c * TB..][..16 * g.c * TB].as_ptr(),
            None => {
                input_transform::<KIND>(g, planes, t0, nt, vbuf);
                vbuf.as_ptr()
            }
        };
        let mut ob = obs.start;
        while ob < obs.end {
            // One vector of tiles (8×8 maps): two channel blocks at once, so
            // the register tile still has 16 accumulators; the second
            // block's results go to the unused second vector of M.
            let pair = nt == LANES && ob + 1 < obs.end;
            for xi in 0..16 {
                let ub = u.block(xi, ob, g.c);
                let mb = mbuf.as_mut_ptr().add(xi * OR * TB);
                let vb = vb0.add(xi * g.c * TB);
                if nt == TB {
                    gemm_tile::<2>(vb, ub, g.c, mb, false);
                } else if pair {
                    gemm_pair(vb, ub, ub.add(g.c * OR), g.c, mb, false);
                } else {
                    gemm_tile::<1>(vb, ub, g.c, mb, false);
                }
            }
            output_transform::<KIND>(g, mbuf, 0, ob, t0, nt, out, epi);
            if pair {
                output_transform::<KIND>(g, mbuf, LANES, ob + 1, t0, nt, out, epi);
                ob += 1;
            }
            ob += 1;
        }
    }
}

/// [`SlicedPart`] (see [`super::conv_image_4bit`]).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run_sliced(p: &SlicedPart, scratch: &mut [f32], u_of: SliceWeights) {
    match p.g.rows() {
        Some(Rows::Wide) => sliced_rows::<0>(p, scratch, u_of),
        Some(Rows::Eight) => sliced_rows::<1>(p, scratch, u_of),
        Some(Rows::Four) => sliced_rows::<2>(p, scratch, u_of),
        Some(Rows::Any) => sliced_rows::<3>(p, scratch, u_of),
        None => unreachable!("checked by supported()"),
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn sliced_rows<const KIND: usize>(p: &SlicedPart, scratch: &mut [f32], u_of: SliceWeights) {
    let (g, out, epi, obs) = (p.g, p.out, p.epi, &p.obs);
    let (vbuf, mbuf) = scratch.split_at_mut(16 * g.c * TB);
    let (t0, nt) = g.block_tiles(p.blk);
    input_transform::<KIND>(g, p.planes, t0, nt, vbuf);
    let vb0 = vbuf.as_ptr();
    let mut ob = obs.start;
    while ob < obs.end {
        // One vector of tiles: two channel blocks at once, as in `part_rows`.
        let pair = nt == LANES && ob + 1 < obs.end;
        let mut c0 = 0;
        while c0 < g.c {
            let c1 = (c0 + SLICE).min(g.c);
            let cq = c1 - c0;
            let us = u_of(ob, c0..c1);
            let us1 = if pair { u_of(ob + 1, c0..c1) } else { us };
            // Products of later slices add to the earlier ones' in M: the
            // same multiply-adds in the same order as one pass over `c`.
            let add = c0 > 0;
            for xi in 0..16 {
                let mb = mbuf.as_mut_ptr().add(xi * OR * TB);
                let vb = vb0.add((xi * g.c + c0) * TB);
                let ub = us.add(xi * cq * OR);
                if nt == TB {
                    gemm_tile::<2>(vb, ub, cq, mb, add);
                } else if pair {
                    gemm_pair(vb, ub, us1.add(xi * cq * OR), cq, mb, add);
                } else {
                    gemm_tile::<1>(vb, ub, cq, mb, add);
                }
            }
            c0 = c1;
        }
        output_transform::<KIND>(g, mbuf, 0, ob, t0, nt, out, epi);
        if pair {
            output_transform::<KIND>(g, mbuf, LANES, ob + 1, t0, nt, out, epi);
            ob += 1;
        }
        ob += 1;
    }
}

/// `V` of tiles `t0 .. t0 + nt` into `vbuf`, for the geometry's row kind.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn inputs_of_block(
    g: &WinoGeom,
    planes: &[f32],
    t0: usize,
    nt: usize,
    vbuf: &mut [f32],
) {
    match g.rows() {
        Some(Rows::Wide) => input_transform::<0>(g, planes, t0, nt, vbuf),
        Some(Rows::Eight) => input_transform::<1>(g, planes, t0, nt, vbuf),
        Some(Rows::Four) => input_transform::<2>(g, planes, t0, nt, vbuf),
        Some(Rows::Any) => input_transform::<3>(g, planes, t0, nt, vbuf),
        None => unreachable!("checked by supported()"),
    }
}

/// Load tap (i, j) of 16 tiles from `t` on, channel planes at `cp`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_taps<const KIND: usize>(
    cp: *const f32,
    g: &WinoGeom,
    t: usize,
    i: usize,
    j: usize,
    idx: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let (p, tw) = (g.pitch(), g.tiles().1);
    let base = cp.add((j % 2) * g.hp() * p + j / 2);
    if KIND == 3 {
        // `idx`: each lane's tile origin `2·ty·p + tx` in the planes.
        return _mm512_i32gather_ps::<4>(idx, base.add(i * p) as *const _);
    }
    let (ty, tx) = (t / tw, t % tw);
    let at = |ty: usize| base.add((2 * ty + i) * p);
    match KIND {
        0 => _mm512_loadu_ps(at(ty).add(tx)),
        1 => {
            // (f64x4 insert: AVX-512F; the f32x8 one needs AVX-512DQ.)
            let lo = _mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(at(ty))));
            let hi = _mm256_castps_pd(_mm256_loadu_ps(at(ty + 1)));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, hi))
        }
        2 => {
            let v = _mm512_castps128_ps512(_mm_loadu_ps(at(ty)));
            let v = _mm512_insertf32x4::<1>(v, _mm_loadu_ps(at(ty + 1)));
            let v = _mm512_insertf32x4::<2>(v, _mm_loadu_ps(at(ty + 2)));
            _mm512_insertf32x4::<3>(v, _mm_loadu_ps(at(ty + 3)))
        }
        _ => unreachable!("KIND 3 returned above"),
    }
}

/// Lane offsets `2·ty·p + tx` of tiles `t .. t + 16` in the phase planes
/// (lanes past the last tile repeat it), for gathered loads.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_origins(g: &WinoGeom, t: usize) -> std::arch::x86_64::__m512i {
    let o: [i32; LANES] = std::array::from_fn(|l| g.tile_origin(t + l));
    std::arch::x86_64::_mm512_loadu_si512(o.as_ptr() as *const _)
}

/// `V = Bᵀ d B` for tiles `t0 .. t0 + nt` of every channel, stored
/// `vbuf[ξ][c][tile − t0]`.
#[target_feature(enable = "avx512f")]
unsafe fn input_transform<const KIND: usize>(
    g: &WinoGeom,
    planes: &[f32],
    t0: usize,
    nt: usize,
    vbuf: &mut [f32],
) {
    use std::arch::x86_64::*;
    let cl = g.channel_len();
    let v = vbuf.as_mut_ptr();
    for ch in 0..g.c {
        let cp = planes.as_ptr().add(ch * cl);
        for grp in 0..nt / LANES {
            let t = t0 + grp * LANES;
            let idx = if KIND == 3 {
                tile_origins(g, t)
            } else {
                _mm512_setzero_si512()
            };
            let d: [[__m512; 4]; 4] = std::array::from_fn(|i| {
                std::array::from_fn(|j| load_taps::<KIND>(cp, g, t, i, j, idx))
            });
            input_tile!(d, _mm512_add_ps, _mm512_sub_ps, |xi, x| {
                _mm512_storeu_ps(v.add((xi * g.c + ch) * TB + grp * LANES), x)
            });
        }
    }
}

/// `M[r][tiles] = Σ_c U[c][r] · V[c][tiles]` for 8 output channels and
/// `NV` vectors of tiles, one ξ; with `add`, onto the `M` there (a later
/// slice of channels).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn gemm_tile<const NV: usize>(
    v: *const f32,
    u: *const f32,
    c: usize,
    m: *mut f32,
    add: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NV]; OR];
    if add {
        for (r, a) in acc.iter_mut().enumerate() {
            for (k, x) in a.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(m.add(r * TB + k * LANES));
            }
        }
    }
    for ch in 0..c {
        let x: [__m512; NV] = std::array::from_fn(|k| _mm512_loadu_ps(v.add(ch * TB + k * LANES)));
        let w = u.add(ch * OR);
        for (r, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*w.add(r));
            for k in 0..NV {
                a[k] = _mm512_fmadd_ps(wv, x[k], a[k]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (k, &x) in a.iter().enumerate() {
            _mm512_storeu_ps(m.add(r * TB + k * LANES), x);
        }
    }
}

/// `gemm_tile::<1>` for two channel blocks (`u0`, `u1`): block `u1`'s rows
/// are stored one vector to the right of block `u0`'s.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn gemm_pair(
    v: *const f32,
    u0: *const f32,
    u1: *const f32,
    c: usize,
    m: *mut f32,
    add: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; OR];
    if add {
        for (r, a) in acc.iter_mut().enumerate() {
            for (k, x) in a.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(m.add(r * TB + k * LANES));
            }
        }
    }
    for ch in 0..c {
        let x = _mm512_loadu_ps(v.add(ch * TB));
        let (w0, w1) = (u0.add(ch * OR), u1.add(ch * OR));
        for (r, a) in acc.iter_mut().enumerate() {
            a[0] = _mm512_fmadd_ps(_mm512_set1_ps(*w0.add(r)), x, a[0]);
            a[1] = _mm512_fmadd_ps(_mm512_set1_ps(*w1.add(r)), x, a[1]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (k, &x) in a.iter().enumerate() {
            _mm512_storeu_ps(m.add(r * TB + k * LANES), x);
        }
    }
}

/// Row `dy` of tiles `t .. t + 16` (`y[dx]`: column dx of each tile) to
/// the output plane at `dst`, with bias, residual and ReLU: scattered, and
/// masked where a tile does not exist or its row or column falls outside
/// an odd-sized output.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn scatter_outputs(
    g: &WinoGeom,
    t: usize,
    dy: usize,
    y: [std::arch::x86_64::__m512; 2],
    bias: std::arch::x86_64::__m512,
    dst: *mut f32,
    res: Option<*const f32>,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let wo = g.out().1;
    let mut at = [0i32; LANES];
    let mut masks = [0u16; 2];
    for (l, a) in at.iter_mut().enumerate() {
        if let Some((oy, ox)) = g.tile_output(t + l, dy) {
            *a = (oy * wo + ox) as i32;
            masks[0] |= 1 << l;
            if ox + 1 < wo {
                masks[1] |= 1 << l;
            }
        }
    }
    let idx = _mm512_loadu_si512(at.as_ptr() as *const _);
    for (dx, (&v, &m)) in y.iter().zip(&masks).enumerate() {
        let mut v = _mm512_add_ps(v, bias);
        if let Some(rp) = res {
            // Zero where masked off (those lanes are not stored anyway).
            let zero = _mm512_setzero_ps();
            let r = _mm512_mask_i32gather_ps::<4>(zero, m, idx, rp.add(dx) as *const _);
            v = _mm512_add_ps(v, r);
        }
        if relu {
            v = _mm512_max_ps(v, _mm512_setzero_ps());
        }
        _mm512_mask_i32scatter_ps::<4>(dst.add(dx) as *mut _, m, idx, v);
    }
}

/// `Y = Aᵀ M A` (M's tiles from column `m_off` on) for output-channel block `ob` and tiles `t0 .. t0 + nt`,
/// then bias, residual and ReLU on the way to `out` (`[O][Ho][Wo]`).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform<const KIND: usize>(
    g: &WinoGeom,
    mbuf: &[f32],
    m_off: usize,
    ob: usize,
    t0: usize,
    nt: usize,
    out: *mut f32,
    epi: &Epilogue,
) {
    use std::arch::x86_64::*;
    let (ho, wo) = g.out();
    let tw = g.tiles().1;
    let plane = ho * wo;
    let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let zero = _mm512_setzero_ps();
    let valid = (g.o - ob * OR).min(OR);
    let m = mbuf.as_ptr().add(m_off);
    for r in 0..valid {
        let oc = ob * OR + r;
        let bias = _mm512_set1_ps(epi.bias.map_or(0.0, |b| b[oc]));
        let dst = out.add(oc * plane);
        let res = epi.residual.map(|x| x.as_ptr().add(oc * plane));
        for grp in 0..nt / LANES {
            let mv: [__m512; 16] =
                std::array::from_fn(|xi| _mm512_loadu_ps(m.add((xi * OR + r) * TB + grp * LANES)));
            let y = output_tile!(mv, _mm512_add_ps, _mm512_sub_ps);
            let t = t0 + grp * LANES;
            let (ty, tx) = (t / tw, t % tw);
            if KIND == 3 {
                for (dy, y0y1) in y.into_iter().enumerate() {
                    scatter_outputs(g, t, dy, y0y1, bias, dst, res, epi.relu);
                }
                continue;
            }
            for (dy, [y0, y1]) in y.into_iter().enumerate() {
                // Outputs of tiles 0–7 and 8–15, each run left to right.
                let z = [
                    _mm512_permutex2var_ps(y0, lo_idx, y1),
                    _mm512_permutex2var_ps(y0, hi_idx, y1),
                ];
                for (half, &zv) in z.iter().enumerate() {
                    // (lanes mask, offset in the plane of lane 0 of the run)
                    let runs: [(u16, usize); 2] = match KIND {
                        0 => [(0xffff, (2 * ty + dy) * wo + 2 * tx + 16 * half), (0, 0)],
                        1 => [(0xffff, (2 * (ty + half) + dy) * wo), (0, 0)],
                        _ => [
                            (0x00ff, (2 * (ty + 2 * half) + dy) * wo),
                            // Lane 8 is the second row's first column.
                            (0xff00, (2 * (ty + 2 * half + 1) + dy) * wo),
                        ],
                    };
                    for (mask, at) in runs {
                        if mask == 0 {
                            continue;
                        }
                        // A masked access at `at − 8` puts lane 8 at `at`;
                        // masked-off lanes are never touched.
                        let shift = if mask == 0xff00 { 8 } else { 0 };
                        let mut y = _mm512_add_ps(zv, bias);
                        if let Some(rp) = res {
                            let p = rp.add(at).wrapping_sub(shift);
                            y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, p));
                        }
                        if epi.relu {
                            y = _mm512_max_ps(y, zero);
                        }
                        _mm512_mask_storeu_ps(dst.add(at).wrapping_sub(shift), mask, y);
                    }
                }
            }
        }
    }
}

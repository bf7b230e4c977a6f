//! Winograd F(2×2, 3×3) on the int8 codes of a W8A8 3×3 stride-1
//! convolution, for AVX2-only CPUs. There the direct int8 kernel needs
//! three instructions per 32 multiply-adds (`vpmaddubsw`, `vpmaddwd`,
//! `vpaddd`) for 7-bit weights, four for full 8-bit ones (two `vpmaddwd`
//! on values widened to 16 bits, two adds), and ran at most 1.2× faster
//! than f32 Winograd, which does 2.25× fewer multiply-adds. Here each
//! `vpmaddwd` + `vpaddd` pair does 16 of Winograd's multiply-adds.
//!
//! Same tiles, phase planes, blocks and transforms as the f32 kernel (the
//! parent module), on integers:
//! - the input's codes `q = clamp(round(x/s), −127, 127)` (the direct
//!   kernel's, computed the same way), so `V = Bᵀ q B` has |V| ≤ 4·127;
//! - `4U = (2G) w (2G)ᵀ`, an integer with |4U| ≤ 9·128.
//!
//! Both fit i16, so `vpmaddwd` multiplies two input channels per 32-bit
//! lane exactly (each plane word holds the codes of a channel pair), and
//! the products are summed in i32. The output transform adds and subtracts
//! them; in two's complement the sums may wrap on the way and still end at
//! `4·Σ w·q`, exact while that fits i32 ([`MAX_C`]). Shifted right by 2 it
//! is the direct kernel's accumulator, and the same float epilogue
//! (`(acc·mult + bias) + residual`, ReLU) makes the outputs equal bit for
//! bit (`tests/int8.rs`).
use super::{at_least, partition, rows_of, run_parts, WinoGeom, OR, TB};
use crate::engine::kernels::int8_conv::Epilogue;

/// Most input channels for which `4·Σ w·q` cannot overflow i32:
/// 4·9·128·127·C < 2³¹ up to C = 3669.
pub const MAX_C: usize = 3600;

/// Whether this CPU runs the kernel (AVX2, detected at run time).
pub fn is_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the kernel handles this geometry (the f32 kernel's, and at
/// most [`MAX_C`] input channels).
pub fn fits(g: &WinoGeom) -> bool {
    g.supported() && g.c <= MAX_C
}

/// `4U = (2G) w (2G)ᵀ` of int8 codes `code(o, c, k)` (tap `k = 3·ky + kx`),
/// laid out `[16 ξ][⌈O/8⌉][⌈C/2⌉][8]` in words that each hold the i16
/// values of input channels `2p` (low half) and `2p + 1` (high half), the
/// pair `vpmaddwd` multiplies with a plane word. Missing channels are 0.
pub fn transform_weights(
    o: usize,
    c: usize,
    code: impl Fn(usize, usize, usize) -> i32,
) -> Vec<i32> {
    let (obs, c2) = (o.div_ceil(OR), c.div_ceil(2));
    let mut u = vec![0i32; 16 * obs * c2 * OR];
    for oc in 0..o {
        for ic in 0..c {
            let g = |ky: usize, kx: usize| code(oc, ic, 3 * ky + kx);
            // (2G g)[a][kx], then ((2G g)(2G)ᵀ)[a][b].
            let gg: [[i32; 3]; 4] = std::array::from_fn(|a| {
                std::array::from_fn(|kx| match a {
                    0 => 2 * g(0, kx),
                    1 => g(0, kx) + g(1, kx) + g(2, kx),
                    2 => g(0, kx) - g(1, kx) + g(2, kx),
                    _ => 2 * g(2, kx),
                })
            });
            for (a, r) in gg.iter().enumerate() {
                let row = [2 * r[0], r[0] + r[1] + r[2], r[0] - r[1] + r[2], 2 * r[2]];
                for (b, &v) in row.iter().enumerate() {
                    let xi = 4 * a + b;
                    let at = ((xi * obs + oc / OR) * c2 + ic / 2) * OR + oc % OR;
                    let half = (v as i16 as u16 as u32) << (16 * (ic % 2));
                    u[at] = (u[at] as u32 | half) as i32;
                }
            }
        }
    }
    u
}

thread_local! {
    static PLANES: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Plane words for `g` (a word per channel pair and padded position).
fn planes_len(g: &WinoGeom) -> usize {
    g.c.div_ceil(2) * g.channel_len()
}

/// `V` and `M` of one block.
fn scratch_len(g: &WinoGeom) -> usize {
    16 * g.c.div_ceil(2) * TB + 16 * OR * TB
}

/// One image `[C, H, W]` (f32) → `out` `[O, Ho, Wo]`, with `u` from
/// [`transform_weights`] and the direct int8 kernel's epilogue (`comp` is
/// not read: the codes here carry no +128 offset). `threads > 1` splits it
/// over the spinning team like the f32 `conv_image_split` (tile blocks,
/// then output-channel blocks), each part quantizing the plane rows it
/// reads. Panics if the geometry does not fit or the CPU lacks AVX2
/// (callers check [`fits`] and [`is_available`]).
pub fn conv_image(
    g: &WinoGeom,
    img: &[f32],
    act_scale: f32,
    u: &[i32],
    out: &mut [f32],
    epi: Epilogue,
    threads: usize,
) {
    let (ho, wo) = g.out();
    assert!(fits(g), "winograd int16: unsupported geometry {g:?}");
    assert!(is_available(), "winograd int16: no AVX2 on this CPU");
    assert_eq!(img.len(), g.c * g.h * g.w, "winograd int16: input size");
    assert_eq!(out.len(), g.o * ho * wo, "winograd int16: output size");
    assert_eq!(
        u.len(),
        16 * g.out_blocks() * g.c.div_ceil(2) * OR,
        "winograd int16: weights size"
    );
    assert!(epi.mult.len() >= g.o, "winograd int16: scales size");
    assert!(
        epi.bias.is_none_or(|b| b.len() >= g.o),
        "winograd int16: bias size"
    );
    assert!(
        epi.residual.is_none_or(|r| r.len() >= g.o * ho * wo),
        "winograd int16: residual size"
    );
    // As the direct kernel quantizes (`int8_conv::quantize_image`).
    let inv = 1.0 / act_scale;
    let parts = if threads > 1 {
        partition(g, threads)
    } else {
        (1, 1)
    };
    run_parts(g, parts, threads, out, &|blocks, obs, dst| {
        let rows = rows_of(g, &blocks);
        PLANES.with(|pc| {
            SCRATCH.with(|sc| {
                let (mut planes, mut s) = (pc.borrow_mut(), sc.borrow_mut());
                at_least(&mut planes, planes_len(g));
                at_least(&mut s, scratch_len(g));
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and every size asserted above; planes and
                // scratch are this thread's and as long as the geometry
                // asks; `team::run` calls each part once, the parts'
                // (block, channel) output ranges are disjoint, and `out`
                // stays borrowed until every part has finished.
                unsafe {
                    let len = planes.len();
                    avx2::build_planes_of(g, img, inv, planes.as_mut_ptr(), len, rows);
                    avx2::run_part(g, &planes, u, dst, &epi, blocks, obs, &mut s);
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (&mut s, &mut planes, dst, obs, blocks, rows, inv);
            })
        });
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2 body: the f32 AVX2 body's loops (`../avx2.rs`) on words of
    //! two i16 codes.
    use super::super::avx2::{load_taps, row_kind, store_row, ANY, FOUR, ROW};
    use super::{Epilogue, WinoGeom, OR, TB};
    use std::arch::x86_64::*;

    const L8: usize = 8;

    /// Lane mask of the first `n` lanes (maskload/maskstore read the sign bit).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn first(n: usize) -> __m256i {
        let n = n.min(L8) as i32;
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// Codes of 16 columns from `src` (the first `left`; the rest 0):
    /// `clamp(round(x·inv), −127, 127)`, rounding ties to even as
    /// `int8_conv::quantize_words` does, split into (even, odd) columns.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn codes16(src: *const f32, left: usize, inv: f32) -> (__m256i, __m256i) {
        let (a, b) = if left >= 2 * L8 {
            (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(L8)))
        } else {
            (
                _mm256_maskload_ps(src, first(left)),
                _mm256_maskload_ps(src.add(L8), first(left.saturating_sub(L8))),
            )
        };
        let q = |v: __m256| {
            let v = _mm256_mul_ps(v, _mm256_set1_ps(inv));
            let v = _mm256_min_ps(
                _mm256_max_ps(v, _mm256_set1_ps(-127.0)),
                _mm256_set1_ps(127.0),
            );
            _mm256_cvtps_epi32(v)
        };
        // Within each 128-bit half: evens first, then odds.
        let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let (a, b) = (
            _mm256_permutevar8x32_epi32(q(a), split),
            _mm256_permutevar8x32_epi32(q(b), split),
        );
        (
            _mm256_permute2x128_si256::<0x20>(a, b),
            _mm256_permute2x128_si256::<0x31>(a, b),
        )
    }

    /// The plane rows `rows` of every channel pair: codes of channel `2p`
    /// in the low half of each word, `2p + 1` in the high half, padding 0.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn build_planes_of(
        g: &WinoGeom,
        img: &[f32],
        inv: f32,
        planes: *mut i32,
        len: usize,
        rows: std::ops::Range<usize>,
    ) {
        let (hp, p, pad) = (g.hp(), g.pitch(), g.pad);
        let ph = hp * p;
        let row_split = g.row_split();
        let [(even_ph, even_at, _), (odd_ph, odd_at, _)] = row_split;
        assert!(len >= super::planes_len(g) && img.len() >= g.c * g.h * g.w);
        let (rows, in_rows) = g.input_rows(rows);
        let zero = _mm256_setzero_si256();
        let clear = |row: *mut i32, a: usize, b: usize| {
            let mut k = a;
            while k < b {
                _mm256_maskstore_epi32(row.add(k), first(b - k), zero);
                k += L8;
            }
        };
        let low = _mm256_set1_epi32(0xFFFF);
        for cp in 0..g.c.div_ceil(2) {
            let base = planes.add(cp * 2 * ph);
            for phase in 0..2 {
                for r in (rows.start..in_rows.start).chain(in_rows.end..rows.end) {
                    clear(base.add(phase * ph + r * p), 0, p);
                }
            }
            let (c0, c1) = (2 * cp, 2 * cp + 1);
            for r in in_rows.clone() {
                let y = r - pad;
                let s0 = img.as_ptr().add((c0 * g.h + y) * g.w);
                let s1 = (c1 < g.c).then(|| img.as_ptr().add((c1 * g.h + y) * g.w));
                let e = base.add(even_ph * ph + r * p);
                let o = base.add(odd_ph * ph + r * p);
                // Zero words are zero floats: the f32 planes' helper applies.
                super::super::clear_row_ends(g, row_split, p, (e.cast(), o.cast()), |row, a, b| {
                    clear(row.cast(), a, b)
                });
                let (e, o) = (e.add(even_at), o.add(odd_at));
                let mut k = 0;
                while k < g.w {
                    let left = (g.w - k).min(2 * L8);
                    let (ev0, od0) = codes16(s0.add(k), left, inv);
                    let (ev1, od1) = match s1 {
                        Some(s) => codes16(s.add(k), left, inv),
                        None => (zero, zero),
                    };
                    let pair = |a: __m256i, b: __m256i| {
                        _mm256_or_si256(_mm256_and_si256(a, low), _mm256_slli_epi32::<16>(b))
                    };
                    let (ev, od) = (pair(ev0, ev1), pair(od0, od1));
                    if left == 2 * L8 {
                        _mm256_storeu_si256(e.add(k / 2).cast(), ev);
                        _mm256_storeu_si256(o.add(k / 2).cast(), od);
                    } else {
                        _mm256_maskstore_epi32(e.add(k / 2), first(left.div_ceil(2)), ev);
                        _mm256_maskstore_epi32(o.add(k / 2), first(left / 2), od);
                    }
                    k += 2 * L8;
                }
            }
        }
    }

    /// Tile blocks `blocks` × output-channel blocks `obs` into `out`.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn run_part(
        g: &WinoGeom,
        planes: &[i32],
        u: &[i32],
        out: *mut f32,
        epi: &Epilogue,
        blocks: std::ops::Range<usize>,
        obs: std::ops::Range<usize>,
        scratch: &mut [i32],
    ) {
        let c2 = g.c.div_ceil(2);
        let nob = g.out_blocks();
        let kind = row_kind(g);
        let (vbuf, mbuf) = scratch.split_at_mut(16 * c2 * TB);
        for blk in blocks {
            let (t0, nt) = g.block_tiles(blk);
            match kind {
                ROW => input_transform::<ROW>(g, planes, t0, nt, vbuf),
                FOUR => input_transform::<FOUR>(g, planes, t0, nt, vbuf),
                _ => input_transform::<ANY>(g, planes, t0, nt, vbuf),
            }
            for ob in obs.clone() {
                for xi in 0..16 {
                    let ub = u.as_ptr().add((xi * nob + ob) * c2 * OR);
                    let mb = mbuf.as_mut_ptr().add(xi * OR * TB);
                    gemm(vbuf.as_ptr().add(xi * c2 * TB), ub, c2, nt, mb);
                }
                match kind {
                    ROW => output_transform::<ROW>(g, mbuf, ob, t0, nt, out, epi),
                    FOUR => output_transform::<FOUR>(g, mbuf, ob, t0, nt, out, epi),
                    _ => output_transform::<ANY>(g, mbuf, ob, t0, nt, out, epi),
                }
            }
        }
    }

    /// `V = Bᵀ q B` of tiles `t0 .. t0 + nt`, two channels per word, into
    /// `vbuf` (`[16 ξ][⌈C/2⌉][TB]`). |V| ≤ 4·127: no i16 overflow.
    #[target_feature(enable = "avx2")]
    unsafe fn input_transform<const KIND: u8>(
        g: &WinoGeom,
        planes: &[i32],
        t0: usize,
        nt: usize,
        vbuf: &mut [i32],
    ) {
        let (cl, c2) = (g.channel_len(), g.c.div_ceil(2));
        let v = vbuf.as_mut_ptr();
        for cp in 0..c2 {
            let base = planes.as_ptr().add(cp * cl);
            for grp in 0..nt / L8 {
                let t = t0 + grp * L8;
                let idx = if KIND == ANY {
                    let o: [i32; L8] = std::array::from_fn(|l| g.tile_origin(t + l));
                    _mm256_loadu_si256(o.as_ptr().cast())
                } else {
                    _mm256_setzero_si256()
                };
                let d: [[__m256i; 4]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| load_taps::<KIND>(base, g, t, i, j, idx))
                });
                input_tile!(d, _mm256_add_epi16, _mm256_sub_epi16, |xi, x| {
                    _mm256_storeu_si256(v.add((xi * c2 + cp) * TB + grp * L8).cast(), x)
                });
            }
        }
    }

    /// `M[r][tiles] = Σ_p U[p][r] · V[p][tiles]` for one ξ, two channels
    /// per `vpmaddwd`: 4 channels × 16 tiles per register tile.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn gemm(v: *const i32, u: *const i32, c2: usize, nt: usize, m: *mut i32) {
        for half in 0..OR / 4 {
            for pair in 0..nt / (2 * L8) {
                let col = pair * 2 * L8;
                let mut acc = [[_mm256_setzero_si256(); 2]; 4];
                for cp in 0..c2 {
                    let x0 = _mm256_loadu_si256(v.add(cp * TB + col).cast());
                    let x1 = _mm256_loadu_si256(v.add(cp * TB + col + L8).cast());
                    let w = u.add(cp * OR + half * 4);
                    for (r, a) in acc.iter_mut().enumerate() {
                        let wv = _mm256_set1_epi32(*w.add(r));
                        a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(x0, wv));
                        a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(x1, wv));
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let row = m.add((half * 4 + r) * TB + col);
                    _mm256_storeu_si256(row.cast(), a[0]);
                    _mm256_storeu_si256(row.add(L8).cast(), a[1]);
                }
            }
        }
    }

    /// `Aᵀ M A` (wrapping i32: exact at the end, see the module), shifted
    /// right by 2, scaled, then stored by the f32 body's `store_row`, which
    /// adds the bias and residual and applies the ReLU: the direct int8
    /// kernel's epilogue, in the same order.
    #[target_feature(enable = "avx2")]
    unsafe fn output_transform<const KIND: u8>(
        g: &WinoGeom,
        mbuf: &[i32],
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
            let mult = _mm256_set1_ps(epi.mult[oc]);
            let bias = epi.bias.map_or(0.0, |b| b[oc]);
            let dst = out.add(oc * plane);
            let res = epi.residual.map(|x| x.as_ptr().add(oc * plane));
            let scaled = |y| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32::<2>(y)), mult);
            for grp in 0..nt / L8 {
                let mv: [__m256i; 16] = std::array::from_fn(|xi| {
                    _mm256_loadu_si256(m.add((xi * OR + r) * TB + grp * L8).cast())
                });
                let y = output_tile!(mv, _mm256_add_epi32, _mm256_sub_epi32);
                for (dy, [y0, y1]) in y.into_iter().enumerate() {
                    let y = [scaled(y0), scaled(y1)];
                    store_row::<KIND>(g, t0 + grp * L8, dy, y, bias, dst, res, epi.relu);
                }
            }
        }
    }
}

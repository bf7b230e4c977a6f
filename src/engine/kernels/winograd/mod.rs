//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions (AVX-512; the
//! AVX2 + FMA body is in `avx2.rs`).
//!
//! Each 2×2 block of outputs ("tile") is `Aᵀ [Σ_c U_c ⊙ V_c] A`, with
//! `U = G g Gᵀ` (the 3×3 filter, 4×4 after transform, computed once per
//! model) and `V = Bᵀ d B` (the tile's 4×4 input patch). That is 16
//! multiply-adds per input channel for 4 outputs, against 36 for the direct
//! convolution: 2.25× fewer. The sum over channels is 16 independent GEMMs
//! (one per element ξ of the 4×4), run here as register tiles of 8 output
//! channels × 16 or 32 tiles, vectorised across tiles.
//!
//! Vectors of 16 tiles are contiguous loads because the padded input is
//! stored split by column parity ("phase planes", as for stride-2 direct
//! convs): tap column j of tiles tx…tx+15 is `phase[j % 2][row][tx + j/2 …]`.
//! Maps whose tile rows are 16k, 8 or 4 tiles wide (CIFAR ResNets' 32, 16
//! and 8 wide maps) load and store whole vectors; any other size (odd,
//! 7/14/28/56 wide …) gathers its loads and scatters its stores, with the
//! tiles past the edge masked.
//!
//! Transforms (Lavin & Gray 2016), `g` rows = ky, columns = kx:
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`,
//! `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`, `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
use super::direct_conv::Epilogue;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Transformed weights covering output-channel blocks `base .. base + nob`
/// (`[16 ξ][nob][C][8]`): the whole layer, or the blocks one part of a
/// split call transformed for itself.
#[derive(Clone, Copy)]
pub(crate) struct UView<'a> {
    pub(crate) u: &'a [f32],
    pub(crate) nob: usize,
    pub(crate) base: usize,
}

impl UView<'_> {
    /// Start of ξ's weights for output-channel block `ob`.
    #[inline]
    pub(crate) fn block(&self, xi: usize, ob: usize, c: usize) -> *const f32 {
        debug_assert!(ob >= self.base && ob < self.base + self.nob);
        self.u[(xi * self.nob + ob - self.base) * c * OR..].as_ptr()
    }
}

/// Output channels per GEMM register tile (and per block of `U`).
pub const OR: usize = 8;
const LANES: usize = 16;
/// Tiles per block: the GEMM's register tile is `OR` × up to two vectors.
pub(crate) const TB: usize = 2 * LANES;

/// One 3×3 stride-1 convolution of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinoGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub pad: usize,
}

/// How a row of tiles maps onto 16-lane vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Tile rows of 16k tiles: a vector is 16 tiles of one row.
    Wide,
    /// 8 tiles per row: a vector is two rows.
    Eight,
    /// 4 tiles per row: a vector is four rows.
    Four,
    /// Anything else (odd sizes, other widths): gathered loads, scattered
    /// stores, edge tiles masked.
    Any,
}

impl WinoGeom {
    pub fn out(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad).saturating_sub(2),
            (self.w + 2 * self.pad).saturating_sub(2),
        )
    }
    /// Tile rows and tiles per row.
    pub(crate) fn tiles(&self) -> (usize, usize) {
        let (ho, wo) = self.out();
        (ho.div_ceil(2), wo.div_ceil(2))
    }
    pub(crate) fn rows(&self) -> Option<Rows> {
        let (ho, wo) = self.out();
        let (th, tw) = self.tiles();
        if ho == 0 || wo == 0 {
            return None;
        }
        // The vector paths need even output sizes and whole vectors of tiles.
        let whole = ho % 2 == 0 && wo % 2 == 0 && (th * tw) % LANES == 0;
        Some(match tw {
            t if whole && t % LANES == 0 => Rows::Wide,
            8 if whole => Rows::Eight,
            4 if whole => Rows::Four,
            _ => Rows::Any,
        })
    }
    /// Whether this kernel handles the geometry: any 3×3 stride-1 conv with
    /// padding up to 2.
    pub fn supported(&self) -> bool {
        self.c > 0 && self.o > 0 && self.pad <= 2 && self.rows().is_some()
    }
    /// Rows of a phase plane (padded input rows the tiles read).
    pub(crate) fn hp(&self) -> usize {
        2 * self.tiles().0 + 2
    }
    /// Row pitch of a phase plane: `tw + 1` columns of one parity.
    pub(crate) fn pitch(&self) -> usize {
        self.tiles().1 + 1
    }
    /// One channel's two phase planes.
    pub(crate) fn channel_len(&self) -> usize {
        2 * self.hp() * self.pitch()
    }
    pub fn planes_len(&self) -> usize {
        self.c * self.channel_len()
    }
    /// Scratch one part needs besides the planes: V and M of one block.
    pub fn block_scratch_len(&self) -> usize {
        16 * self.c * TB + 16 * OR * TB
    }
    pub fn blocks(&self) -> usize {
        let (th, tw) = self.tiles();
        (th * tw).div_ceil(TB)
    }
    pub fn out_blocks(&self) -> usize {
        self.o.div_ceil(OR)
    }
}

/// `U = G g Gᵀ` for every (output, input) channel pair, laid out
/// `[16 ξ][⌈O/8⌉][C][8]` (zero-padded channels) so the GEMM broadcasts
/// consecutive values. `w(o, c, k)` is tap `k = 3·ky + kx` of the filter.
pub fn transform_weights(o: usize, c: usize, w: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let obs = o.div_ceil(OR);
    let mut u = vec![0f32; 16 * obs * c * OR];
    for oc in 0..o {
        for ic in 0..c {
            let g = |ky: usize, kx: usize| w(oc, ic, 3 * ky + kx);
            // (G g)[a][kx], then ((G g) Gᵀ)[a][b].
            let gg: [[f32; 3]; 4] = std::array::from_fn(|a| {
                std::array::from_fn(|kx| match a {
                    0 => g(0, kx),
                    1 => 0.5 * (g(0, kx) + g(1, kx) + g(2, kx)),
                    2 => 0.5 * (g(0, kx) - g(1, kx) + g(2, kx)),
                    _ => g(2, kx),
                })
            });
            for (a, r) in gg.iter().enumerate() {
                let row = [
                    r[0],
                    0.5 * (r[0] + r[1] + r[2]),
                    0.5 * (r[0] - r[1] + r[2]),
                    r[2],
                ];
                for (b, &v) in row.iter().enumerate() {
                    let xi = 4 * a + b;
                    u[((xi * obs + oc / OR) * c + ic) * OR + oc % OR] = v;
                }
            }
        }
    }
    u
}

/// [`transform_weights`] from weights in the direct kernel's packed layout
/// (`direct_conv::pack_weights`: `[⌈O/16⌉][C·9][16]`), 16 output channels
/// per vector: 4-bit models decode a layer and transform it per call (the
/// 4-bit codes are what stays in memory), so this must be cheap.
pub fn transform_packed(packed: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![];
    transform_packed_into(packed, o, c, &mut u);
    u
}

/// `transform_packed` into a reused buffer.
pub fn transform_packed_into(packed: &[f32], o: usize, c: usize, u: &mut Vec<f32>) {
    const OB: usize = super::direct_conv::OB;
    let blocks = o.div_ceil(OB);
    assert!(
        packed.len() >= blocks * c * 9 * OB,
        "winograd: packed weights size"
    );
    let obs = o.div_ceil(OR);
    u.resize(16 * obs * c * OR, 0.0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // Writes every element (padding channels decode to zero): no
        // zeroing pass. SAFETY: AVX-512 checked; sizes asserted.
        unsafe { transform_packed_avx512(packed, blocks, obs, c, u) };
        return;
    }
    *u = transform_weights(o, c, |oc, ic, k| {
        packed[((oc / OB) * c * 9 + ic * 9 + k) * OB + oc % OB]
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_packed_avx512(
    packed: &[f32],
    blocks: usize,
    obs: usize,
    c: usize,
    u: &mut [f32],
) {
    use std::arch::x86_64::*;
    const OB: usize = super::direct_conv::OB;
    assert!(u.len() >= 16 * obs * c * OR && packed.len() >= blocks * c * 9 * OB);
    let half = _mm512_set1_ps(0.5);
    let up = u.as_mut_ptr();
    // Straight-line code, no closures: closures do not inherit the
    // function's target features, and the first version (array::from_fn)
    // compiled to calls and stack spills (40 µs for a 64×64 layer).
    macro_rules! third {
        // ½(x + y + z) and ½(x − y + z), in `transform_weights`' order.
        (+ $x:expr, $y:expr, $z:expr) => {
            _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps($x, $y), $z))
        };
        (- $x:expr, $y:expr, $z:expr) => {
            _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps($x, $y), $z))
        };
    }
    // Eight input channels at a time are staged, then each (ξ, block) run
    // of them is written in one go: storing every value where it belongs
    // as soon as it was computed touched 32 lines 16 KB apart per channel
    // (one L1 set) and ran at a cache miss per store.
    const STAGE: usize = 8;
    let mut stage = [[_mm512_setzero_ps(); 16]; STAGE];
    for b in 0..blocks {
        let mut ic0 = 0;
        while ic0 < c {
            let n = (c - ic0).min(STAGE);
            for (k, st) in stage.iter_mut().enumerate().take(n) {
                let src = packed.as_ptr().add((b * c * 9 + (ic0 + k) * 9) * OB);
                let g0 = _mm512_loadu_ps(src);
                let g1 = _mm512_loadu_ps(src.add(OB));
                let g2 = _mm512_loadu_ps(src.add(2 * OB));
                let g3 = _mm512_loadu_ps(src.add(3 * OB));
                let g4 = _mm512_loadu_ps(src.add(4 * OB));
                let g5 = _mm512_loadu_ps(src.add(5 * OB));
                let g6 = _mm512_loadu_ps(src.add(6 * OB));
                let g7 = _mm512_loadu_ps(src.add(7 * OB));
                let g8 = _mm512_loadu_ps(src.add(8 * OB));
                // Rows of G g (columns kx = 0, 1, 2), then each row times Gᵀ.
                let rows = [
                    [g0, g1, g2],
                    [
                        third!(+ g0, g3, g6),
                        third!(+ g1, g4, g7),
                        third!(+ g2, g5, g8),
                    ],
                    [
                        third!(-g0, g3, g6),
                        third!(-g1, g4, g7),
                        third!(-g2, g5, g8),
                    ],
                    [g6, g7, g8],
                ];
                for (a, r) in rows.iter().enumerate() {
                    st[4 * a] = r[0];
                    st[4 * a + 1] = third!(+ r[0], r[1], r[2]);
                    st[4 * a + 2] = third!(-r[0], r[1], r[2]);
                    st[4 * a + 3] = r[2];
                }
            }
            for xi in 0..16 {
                // Channels 0–7 of each vector go to block 2b, 8–15 to 2b + 1.
                let lo = up.add(((xi * obs + 2 * b) * c + ic0) * OR);
                for (k, st) in stage.iter().enumerate().take(n) {
                    _mm256_storeu_ps(lo.add(k * OR), _mm512_castps512_ps256(st[xi]));
                }
                if 2 * b + 1 < obs {
                    let hi = up.add(((xi * obs + 2 * b + 1) * c + ic0) * OR);
                    for (k, st) in stage.iter().enumerate().take(n) {
                        let v = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(st[xi]));
                        _mm256_storeu_ps(hi.add(k * OR), _mm256_castpd_ps(v));
                    }
                }
            }
            ic0 += n;
        }
    }
}

fn check(g: &WinoGeom, img: &[f32], u_len: usize, out: &[f32], epi: &Epilogue) {
    let (ho, wo) = g.out();
    assert!(g.supported(), "winograd: unsupported geometry {g:?}");
    assert!(
        is_available(),
        "winograd: neither AVX-512 nor AVX2 + FMA on this CPU"
    );
    assert_eq!(img.len(), g.c * g.h * g.w, "winograd: input size");
    assert_eq!(
        u_len,
        16 * g.out_blocks() * g.c * OR,
        "winograd: weights size"
    );
    assert_eq!(out.len(), g.o * ho * wo, "winograd: output size");
    if let Some(b) = epi.bias {
        assert!(b.len() >= g.o, "winograd: bias size");
    }
    if let Some(r) = epi.residual {
        assert!(r.len() >= g.o * ho * wo, "winograd: residual size");
    }
}

/// Whether this CPU runs the kernel (AVX-512F, or AVX2 + FMA; detected at
/// run time).
pub fn is_available() -> bool {
    isa().is_some()
}

/// The body that runs: AVX-512 where present (unless the AVX2 kernels are
/// forced, `direct_conv::force_avx2`), else AVX2 + FMA.
pub fn isa() -> Option<super::direct_conv::Isa> {
    use super::direct_conv::Isa;
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if std::arch::is_x86_feature_detected!("avx512f") && !super::direct_conv::avx2_forced() {
            return Some(Isa::Avx512);
        }
        if avx2 {
            return Some(Isa::Avx2);
        }
    }
    None
}

/// `build_planes_of` on this CPU's body.
#[cfg(target_arch = "x86_64")]
unsafe fn planes_on_isa(
    g: &WinoGeom,
    img: &[f32],
    planes: *mut f32,
    len: usize,
    rows: std::ops::Range<usize>,
) {
    if isa() == Some(super::direct_conv::Isa::Avx512) {
        build_planes_of(g, img, planes, len, rows)
    } else {
        avx2::build_planes_of(g, img, planes, len, rows)
    }
}

/// `run_part` on this CPU's body.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn part_on_isa(
    g: &WinoGeom,
    planes: &[f32],
    u: UView,
    out: *mut f32,
    epi: &Epilogue,
    blocks: std::ops::Range<usize>,
    obs: std::ops::Range<usize>,
    scratch: &mut [f32],
) {
    if isa() == Some(super::direct_conv::Isa::Avx512) {
        run_part(g, planes, u, out, epi, blocks, obs, scratch)
    } else {
        avx2::run_part(g, planes, u, out, epi, blocks, obs, scratch)
    }
}

/// The weights of a split call.
#[derive(Clone, Copy)]
pub enum SplitWeights<'a> {
    /// From [`transform_weights`] (f32 models: done once per model).
    Transformed(&'a [f32]),
    /// 4-bit codes (`direct_conv::Weights::Nibbles`): each part decodes and
    /// transforms the channel blocks it computes.
    Nibbles(super::direct_conv::Weights<'a>),
}

thread_local! {
    /// A split call's per-part decoded and transformed 4-bit weights.
    static PART_WEIGHTS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static PLANES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One image: `out[o][y][x] = epilogue(conv(img, w))`, with `u` from
/// [`transform_weights`]. Panics if the geometry is unsupported or the CPU
/// lacks AVX-512 (callers check [`WinoGeom::supported`] and [`is_available`]).
pub fn conv_image(g: &WinoGeom, img: &[f32], u: &[f32], out: &mut [f32], epi: Epilogue) {
    check(g, img, u.len(), out, &epi);
    SCRATCH.with(|cell| {
        let mut s = cell.borrow_mut();
        let need = g.planes_len() + g.block_scratch_len();
        if s.len() < need {
            s.resize(need, 0.0);
        }
        let (planes, rest) = s.split_at_mut(g.planes_len());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 and every size checked by `check`; the planes and
        // block buffers have the lengths the geometry asks for.
        unsafe {
            let len = planes.len();
            planes_on_isa(g, img, planes.as_mut_ptr(), len, 0..g.hp());
            part_on_isa(
                g,
                planes,
                UView {
                    u,
                    nob: g.out_blocks(),
                    base: 0,
                },
                out.as_mut_ptr(),
                &epi,
                0..g.blocks(),
                0..g.out_blocks(),
                rest,
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (planes, rest);
    });
}

struct SharedOut(*mut f32);
// SAFETY: parts write disjoint (tile block × channel block) regions.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// One image split over `threads` (the spinning team, for batch-1
/// latency) in one team call: each part builds the plane rows its tiles
/// read into its own buffer, then computes disjoint (tile blocks ×
/// output-channel blocks). Results equal [`conv_image`]'s bit for bit:
/// every output is computed the same way by one part. (Building the planes
/// in a separate team call first cost a second synchronisation per layer,
/// which ate the gain of the second thread.)
pub fn conv_image_split(
    g: &WinoGeom,
    img: &[f32],
    w: SplitWeights,
    out: &mut [f32],
    epi: Epilogue,
    threads: usize,
) {
    match w {
        SplitWeights::Transformed(u) => check(g, img, u.len(), out, &epi),
        SplitWeights::Nibbles(n) => {
            // The same checks, with the 4-bit codes' size instead of U's.
            let d = 9 * g.c;
            let padded = g.o.div_ceil(super::direct_conv::OB) * super::direct_conv::OB;
            if let super::direct_conv::Weights::Nibbles { nibbles, step, lo } = n {
                assert!(
                    nibbles.len() >= padded * d / 2 && step.len() >= padded && lo.len() >= padded,
                    "winograd: 4-bit weights size"
                );
            }
            check(g, img, 16 * g.out_blocks() * g.c * OR, out, &epi);
        }
    }
    // Tile blocks first; output-channel blocks when there are fewer tile
    // blocks than threads (8×8 maps have one).
    let (nb, nob) = (g.blocks(), g.out_blocks());
    let (b_parts, ob_parts) = if nb >= threads {
        (threads, 1)
    } else {
        (nb, threads.div_ceil(nb).clamp(1, nob))
    };
    let (th, tw) = g.tiles();
    let tiles = th * tw;
    let shared = SharedOut(out.as_mut_ptr());
    let part = |k: usize| {
        #[allow(clippy::redundant_locals)]
        let shared = &shared;
        let (bp, q) = (k / ob_parts, k % ob_parts);
        let blocks = bp * nb / b_parts..(bp + 1) * nb / b_parts;
        let obs = q * nob / ob_parts..(q + 1) * nob / ob_parts;
        if obs.is_empty() || blocks.is_empty() {
            return;
        }
        // Padded rows the blocks' tiles read: 2·ty .. 2·ty + 4.
        let first = blocks.start * TB / tw;
        let last = ((blocks.end * TB).min(tiles) - 1) / tw;
        let rows = 2 * first..2 * last + 4;
        PLANES.with(|pc| {
            SCRATCH.with(|sc| {
                let (mut planes, mut s) = (pc.borrow_mut(), sc.borrow_mut());
                if planes.len() < g.planes_len() {
                    planes.resize(g.planes_len(), 0.0);
                }
                if s.len() < g.block_scratch_len() {
                    s.resize(g.block_scratch_len(), 0.0);
                }
                let mut own = PART_WEIGHTS.with(|c| std::mem::take(&mut *c.borrow_mut()));
                let u = match w {
                    SplitWeights::Transformed(u) => UView { u, nob, base: 0 },
                    SplitWeights::Nibbles(n) => {
                        // Only this part's 16-channel blocks, decoded and
                        // transformed here: the work is shared by the team
                        // instead of done by the caller before it starts.
                        const OB: usize = super::direct_conv::OB;
                        let (b0, b1) = (obs.start * OR / OB, (obs.end * OR).div_ceil(OB));
                        let (dec, u) = &mut own;
                        let d = 9 * g.c;
                        super::direct_conv::decode_all_into(
                            n.from_channel(b0 * OB, d),
                            (b1 - b0) * OB,
                            d,
                            dec,
                        );
                        transform_packed_into(dec, (b1 - b0) * OB, g.c, u);
                        UView {
                            u,
                            nob: (b1 - b0) * OB / OR,
                            base: b0 * OB / OR,
                        }
                    }
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `check` as above; each part has its own planes,
                // scratch and weights (thread-local); `team::run` calls each
                // part once, the parts' (block, channel) output ranges are
                // disjoint, and `out` stays borrowed until every part has
                // finished.
                unsafe {
                    let len = planes.len();
                    planes_on_isa(g, img, planes.as_mut_ptr(), len, rows);
                    part_on_isa(g, &planes, u, shared.0, &epi, blocks, obs, &mut s);
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (&mut s, &mut planes, shared, obs, blocks, rows, u);
                PART_WEIGHTS.with(|c| *c.borrow_mut() = own);
            })
        });
    };
    crate::engine::team::run(b_parts * ob_parts, threads, &part);
}

/// The zero-padded input split by column parity: channel c, phase φ, padded
/// row r, index k holds padded column `2k + φ`. Every element is written
/// once, with vector stores (slice fills became libc `memset` calls per row,
/// and a 32-wide split ran scalar on 16-wide rows: 20 % of a pass).
/// The planes' padded rows `rows` only (`planes` points at the
/// buffer; `len` is its length).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn build_planes_of(
    g: &WinoGeom,
    img: &[f32],
    planes: *mut f32,
    len: usize,
    rows: std::ops::Range<usize>,
) {
    use std::arch::x86_64::*;
    let (hp, p, pad) = (g.hp(), g.pitch(), g.pad);
    let ph = hp * p;
    // Even source columns land in phase pad % 2, odd ones in the other.
    let (even_ph, even_at) = (pad % 2, pad / 2);
    let (odd_ph, odd_at) = (1 - pad % 2, pad.div_ceil(2));
    let (ne, no) = (g.w.div_ceil(2), g.w / 2);
    assert!(even_at + ne <= p && odd_at + no <= p && pad + g.h <= hp);
    assert!(len >= g.planes_len() && img.len() >= g.c * g.h * g.w);
    let rows = rows.start..rows.end.min(hp);
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
    let in_rows = rows.start.max(pad)..rows.end.min(pad + g.h).max(rows.start.max(pad));
    for ch in 0..g.c {
        let cp = base.add(ch * 2 * ph);
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
            if pad == 1 && g.w.is_multiple_of(2) {
                // The usual case: padded column 0 is index 0 of phase 0
                // (where odd source columns go from index 1 on), padded
                // column w + 1 the last index of phase 1 (even columns).
                *o = 0.0;
                *e.add(ne) = 0.0;
            } else {
                clear(e, 0, even_at);
                clear(e, even_at + ne, p);
                clear(o, 0, odd_at);
                clear(o, odd_at + no, p);
            }
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_part(
    g: &WinoGeom,
    planes: &[f32],
    u: UView,
    out: *mut f32,
    epi: &Epilogue,
    blocks: std::ops::Range<usize>,
    obs: std::ops::Range<usize>,
    scratch: &mut [f32],
) {
    match g.rows() {
        Some(Rows::Wide) => part_rows::<0>(g, planes, u, out, epi, blocks, obs, scratch),
        Some(Rows::Eight) => part_rows::<1>(g, planes, u, out, epi, blocks, obs, scratch),
        Some(Rows::Four) => part_rows::<2>(g, planes, u, out, epi, blocks, obs, scratch),
        Some(Rows::Any) => part_rows::<3>(g, planes, u, out, epi, blocks, obs, scratch),
        None => unreachable!("checked by supported()"),
    }
}

/// `KIND`: 0 = `Rows::Wide`, 1 = `Eight`, 2 = `Four` (a const, so the
/// vector loads and stores compile without a branch).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn part_rows<const KIND: usize>(
    g: &WinoGeom,
    planes: &[f32],
    u: UView,
    out: *mut f32,
    epi: &Epilogue,
    blocks: std::ops::Range<usize>,
    obs: std::ops::Range<usize>,
    scratch: &mut [f32],
) {
    let (th, tw) = g.tiles();
    let tiles = th * tw;
    let (vbuf, mbuf) = scratch.split_at_mut(16 * g.c * TB);
    for blk in blocks {
        let t0 = blk * TB;
        // Whole vectors: lanes past the last tile repeat it and are not stored.
        let nt = (tiles - t0).min(TB).div_ceil(LANES) * LANES;
        input_transform::<KIND>(g, planes, t0, nt, vbuf);
        let mut ob = obs.start;
        while ob < obs.end {
            // One vector of tiles (8×8 maps): two channel blocks at once, so
            // the register tile still has 16 accumulators; the second
            // block's results go to the unused second vector of M.
            let pair = nt == LANES && ob + 1 < obs.end;
            for xi in 0..16 {
                let ub = u.block(xi, ob, g.c);
                let mb = mbuf.as_mut_ptr().add(xi * OR * TB);
                let vb = vbuf.as_ptr().add(xi * g.c * TB);
                if nt == TB {
                    gemm_tile::<2>(vb, ub, g.c, mb);
                } else if pair {
                    gemm_pair(vb, ub, ub.add(g.c * OR), g.c, mb);
                } else {
                    gemm_tile::<1>(vb, ub, g.c, mb);
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

/// Load tap (i, j) of 16 tiles from `t` on, channel planes at `cp`.
#[cfg(target_arch = "x86_64")]
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_origins(g: &WinoGeom, t: usize) -> std::arch::x86_64::__m512i {
    let (th, tw) = g.tiles();
    let p = g.pitch();
    let o: [i32; LANES] = std::array::from_fn(|l| {
        let tt = (t + l).min(th * tw - 1);
        (2 * (tt / tw) * p + tt % tw) as i32
    });
    std::arch::x86_64::_mm512_loadu_si512(o.as_ptr() as *const _)
}

/// `V = Bᵀ d B` for tiles `t0 .. t0 + nt` of every channel, stored
/// `vbuf[ξ][c][tile − t0]`.
#[cfg(target_arch = "x86_64")]
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
            // Bᵀ d: combine rows.
            let r: [[__m512; 4]; 4] = std::array::from_fn(|j| {
                [
                    _mm512_sub_ps(d[0][j], d[2][j]),
                    _mm512_add_ps(d[1][j], d[2][j]),
                    _mm512_sub_ps(d[2][j], d[1][j]),
                    _mm512_sub_ps(d[1][j], d[3][j]),
                ]
            });
            // (Bᵀ d) B: combine columns; r[j][a] is row a, column j.
            for a in 0..4 {
                let vals = [
                    _mm512_sub_ps(r[0][a], r[2][a]),
                    _mm512_add_ps(r[1][a], r[2][a]),
                    _mm512_sub_ps(r[2][a], r[1][a]),
                    _mm512_sub_ps(r[1][a], r[3][a]),
                ];
                for (b, &x) in vals.iter().enumerate() {
                    let xi = 4 * a + b;
                    _mm512_storeu_ps(v.add((xi * g.c + ch) * TB + grp * LANES), x);
                }
            }
        }
    }
}

/// `M[r][tiles] = Σ_c U[c][r] · V[c][tiles]` for 8 output channels and
/// `NV` vectors of tiles, one ξ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn gemm_tile<const NV: usize>(v: *const f32, u: *const f32, c: usize, m: *mut f32) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NV]; OR];
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn gemm_pair(v: *const f32, u0: *const f32, u1: *const f32, c: usize, m: *mut f32) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; OR];
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
#[cfg(target_arch = "x86_64")]
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
    let (ho, wo) = g.out();
    let (th, tw) = g.tiles();
    let mut at = [0i32; LANES];
    let mut masks = [0u16; 2];
    for (l, a) in at.iter_mut().enumerate() {
        let tt = t + l;
        let (oy, ox) = (2 * (tt / tw) + dy, 2 * (tt % tw));
        if tt < th * tw && oy < ho {
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
#[cfg(target_arch = "x86_64")]
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
            // Aᵀ M: rows 0 and 1, per column j.
            let s: [[__m512; 4]; 2] = [
                std::array::from_fn(|j| _mm512_add_ps(_mm512_add_ps(mv[j], mv[4 + j]), mv[8 + j])),
                std::array::from_fn(|j| {
                    _mm512_sub_ps(_mm512_sub_ps(mv[4 + j], mv[8 + j]), mv[12 + j])
                }),
            ];
            let t = t0 + grp * LANES;
            let (ty, tx) = (t / tw, t % tw);
            if KIND == 3 {
                for (dy, sr) in s.iter().enumerate() {
                    let y0 = _mm512_add_ps(_mm512_add_ps(sr[0], sr[1]), sr[2]);
                    let y1 = _mm512_sub_ps(_mm512_sub_ps(sr[1], sr[2]), sr[3]);
                    scatter_outputs(g, t, dy, [y0, y1], bias, dst, res, epi.relu);
                }
                continue;
            }
            for (dy, sr) in s.iter().enumerate() {
                let y0 = _mm512_add_ps(_mm512_add_ps(sr[0], sr[1]), sr[2]);
                let y1 = _mm512_sub_ps(_mm512_sub_ps(sr[1], sr[2]), sr[3]);
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

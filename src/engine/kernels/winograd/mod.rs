//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions: geometry, weight
//! transforms and dispatch here; the bodies in `avx512.rs` and, for CPUs
//! without AVX-512, `avx2.rs`; 4-bit codes to transformed weights (per
//! call) in `nibbles.rs`, streamed block by block for one image when the
//! whole layer's would not stay in L2 (`conv_image_streamed`).
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
mod nibbles;
pub use nibbles::transform_nibbles_into;
#[cfg(target_arch = "x86_64")]
mod avx512;

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
pub(crate) const LANES: usize = 16;
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
    /// Where one input row lands in its two phase planes: for even and for
    /// odd source columns, (phase, first index, count). Even columns go to
    /// phase `pad % 2`, odd ones to the other. Checks that both runs and
    /// the padded rows fit the planes.
    pub(crate) fn row_split(&self) -> [(usize, usize, usize); 2] {
        let pad = self.pad;
        let split = [
            (pad % 2, pad / 2, self.w.div_ceil(2)),
            (1 - pad % 2, pad.div_ceil(2), self.w / 2),
        ];
        assert!(
            split.iter().all(|&(_, at, n)| at + n <= self.pitch()) && pad + self.h <= self.hp(),
            "winograd: input rows do not fit the planes"
        );
        split
    }
    /// Of the padded rows `rows`, the part that holds input rows (the rest
    /// is padding), clipped to the planes.
    pub(crate) fn input_rows(
        &self,
        rows: std::ops::Range<usize>,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let rows = rows.start..rows.end.min(self.hp());
        let lo = rows.start.max(self.pad);
        let inside = lo..rows.end.min(self.pad + self.h).max(lo);
        (rows, inside)
    }
    /// Offset in the phase planes of tile `t`'s origin (`2·ty·pitch + tx`);
    /// tiles past the last one repeat it (the lanes of a partial vector).
    pub(crate) fn tile_origin(&self, t: usize) -> i32 {
        let (th, tw) = self.tiles();
        let t = t.min(th * tw - 1);
        (2 * (t / tw) * self.pitch() + t % tw) as i32
    }
    /// Output position (row, column) of row `dy`, column 0 of tile `t`, or
    /// None where the tile does not exist or that row is outside the output.
    pub(crate) fn tile_output(&self, t: usize, dy: usize) -> Option<(usize, usize)> {
        let (th, tw) = self.tiles();
        let oy = 2 * (t / tw) + dy;
        (t < th * tw && oy < self.out().0).then_some((oy, 2 * (t % tw)))
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
    /// First tile of block `blk`, and its tiles rounded up to whole
    /// 16-tile vectors (AVX2 runs them as pairs of 8): lanes past the last
    /// tile repeat it and are not stored.
    pub(crate) fn block_tiles(&self, blk: usize) -> (usize, usize) {
        let (th, tw) = self.tiles();
        let t0 = blk * TB;
        (t0, (th * tw - t0).min(TB).div_ceil(LANES) * LANES)
    }
    pub fn blocks(&self) -> usize {
        let (th, tw) = self.tiles();
        (th * tw).div_ceil(TB)
    }
    pub fn out_blocks(&self) -> usize {
        self.o.div_ceil(OR)
    }
    /// Whether one image with 4-bit weights should go through
    /// [`conv_image_streamed`]: when the layer's transformed weights are
    /// larger than half an L2 (1 MB) and than the transformed input of the
    /// whole image. Transforming the whole layer up front would then write
    /// megabytes only to read them back from L3; streamed, each 16-channel
    /// block's weights are used while still in cache, and the smaller
    /// transformed input is what the GEMM re-reads.
    pub fn streams_weights(&self) -> bool {
        let u = 16 * self.out_blocks() * self.c * OR;
        let v = self.blocks() * 16 * self.c * TB;
        u * 4 > 1 << 20 && v < u
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

/// [`transform_weights`] of a row-major `[O, C, 3, 3]` weight.
pub fn transform_dense(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    transform_weights(o, c, |oc, ic, k| w[(oc * c + ic) * 9 + k])
}

/// The size of transformed weights `u` for this geometry.
fn check_u(g: &WinoGeom, u: &[f32]) {
    assert_eq!(
        u.len(),
        16 * g.out_blocks() * g.c * OR,
        "winograd: weights size"
    );
}

fn check(g: &WinoGeom, img: &[f32], out: &[f32], epi: &Epilogue) {
    let (ho, wo) = g.out();
    assert!(g.supported(), "winograd: unsupported geometry {g:?}");
    assert!(
        is_available(),
        "winograd: neither AVX-512 nor AVX2 + FMA on this CPU"
    );
    assert_eq!(img.len(), g.c * g.h * g.w, "winograd: input size");
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
        avx512::build_planes_of(g, img, planes, len, rows)
    } else {
        avx2::build_planes_of(g, img, planes, len, rows)
    }
}

/// `V` of every tile block into `v` (`[block][16 ξ][C][TB]`), for
/// [`Part::v`], on this CPU's body.
#[cfg(target_arch = "x86_64")]
unsafe fn inputs_on_isa(g: &WinoGeom, planes: &[f32], v: &mut [f32]) {
    let avx512 = isa() == Some(super::direct_conv::Isa::Avx512);
    for (blk, vb) in v
        .chunks_exact_mut(16 * g.c * TB)
        .take(g.blocks())
        .enumerate()
    {
        let (t0, nt) = g.block_tiles(blk);
        if avx512 {
            avx512::inputs_of_block(g, planes, t0, nt, vb)
        } else {
            avx2::inputs_of_block(g, planes, t0, nt, vb)
        }
    }
}

/// One part of one image's convolution: tile blocks `blocks` × GEMM
/// output-channel blocks `obs`, from the phase planes and weights `u` into
/// `out` (`[O, Ho, Wo]`).
pub(crate) struct Part<'a> {
    pub(crate) g: &'a WinoGeom,
    pub(crate) planes: &'a [f32],
    pub(crate) u: UView<'a>,
    pub(crate) out: *mut f32,
    pub(crate) epi: &'a Epilogue<'a>,
    pub(crate) blocks: std::ops::Range<usize>,
    pub(crate) obs: std::ops::Range<usize>,
    /// `V` of every tile block of the image, already transformed
    /// (`[block][16 ξ][C][TB]`, see [`conv_image_streamed`]); `None`: each
    /// block's `V` is transformed into the scratch as it comes.
    pub(crate) v: Option<&'a [f32]>,
}

/// `run_part` on this CPU's body.
#[cfg(target_arch = "x86_64")]
unsafe fn part_on_isa(p: &Part, scratch: &mut [f32]) {
    if isa() == Some(super::direct_conv::Isa::Avx512) {
        avx512::run_part(p, scratch)
    } else {
        avx2::run_part(p, scratch)
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
    /// The streamed call's transformed input of the whole image.
    static INPUTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A split call's per-part transformed 4-bit weights.
    static PART_WEIGHTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static PLANES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One image: `out[o][y][x] = epilogue(conv(img, w))`, with `u` from
/// [`transform_weights`]. Panics if the geometry is unsupported or the CPU
/// lacks AVX-512 (callers check [`WinoGeom::supported`] and [`is_available`]).
pub fn conv_image(g: &WinoGeom, img: &[f32], u: &[f32], out: &mut [f32], epi: Epilogue) {
    check(g, img, out, &epi);
    check_u(g, u);
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
            let part = Part {
                g,
                planes,
                u: UView {
                    u,
                    nob: g.out_blocks(),
                    base: 0,
                },
                out: out.as_mut_ptr(),
                epi: &epi,
                blocks: 0..g.blocks(),
                obs: 0..g.out_blocks(),
                v: None,
            };
            part_on_isa(&part, rest);
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
        SplitWeights::Transformed(u) => check_u(g, u),
        // The 4-bit codes' size, checked here rather than in the parts.
        SplitWeights::Nibbles(n) => check_nibbles(g, &n),
    }
    check(g, img, out, &epi);
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
                        let nib = n.from_channel(b0 * OB, 9 * g.c);
                        UView {
                            u: transform_nibbles_into(nib, (b1 - b0) * OB, g.c, &mut own),
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
                    let this = Part {
                        g,
                        planes: &planes,
                        u,
                        out: shared.0,
                        epi: &epi,
                        blocks,
                        obs,
                        v: None,
                    };
                    part_on_isa(&this, &mut s);
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (&mut s, &mut planes, shared, obs, blocks, rows, u);
                PART_WEIGHTS.with(|c| *c.borrow_mut() = own);
            })
        });
    };
    crate::engine::team::run(b_parts * ob_parts, threads, &part);
}

/// 4-bit codes, scales and offsets for every output channel of `g`, padded
/// to whole 16-channel blocks: checked before the unsafe bodies index them.
fn check_nibbles(g: &WinoGeom, w: &super::direct_conv::Weights) {
    let padded = g.o.div_ceil(super::direct_conv::OB) * super::direct_conv::OB;
    if let super::direct_conv::Weights::Nibbles { nibbles, step, lo } = w {
        assert!(
            nibbles.len() >= padded * 9 * g.c / 2 && step.len() >= padded && lo.len() >= padded,
            "winograd: 4-bit weights size"
        );
    }
}

/// One image with 4-bit weights (`direct_conv::Weights::Nibbles`), output
/// channels outermost: each 16-channel block is transformed and used at
/// once, against every tile block's transformed input (computed once per
/// part). For layers whose transformed weights would not stay in L2
/// ([`WinoGeom::streams_weights`]); the team splits the channel blocks, so
/// no part transforms weights another part uses. Results equal
/// [`conv_image`]'s on the same weights bit for bit.
pub fn conv_image_streamed(
    g: &WinoGeom,
    img: &[f32],
    w: super::direct_conv::Weights,
    out: &mut [f32],
    epi: Epilogue,
    threads: usize,
) {
    const OB: usize = super::direct_conv::OB;
    let d = 9 * g.c;
    let nib = g.o.div_ceil(OB);
    assert!(
        matches!(w, super::direct_conv::Weights::Nibbles { .. }),
        "winograd: streamed weights must be 4-bit"
    );
    check_nibbles(g, &w);
    check(g, img, out, &epi);
    let parts = threads.clamp(1, nib);
    let shared = SharedOut(out.as_mut_ptr());
    let part = |k: usize| {
        #[allow(clippy::redundant_locals)]
        let shared = &shared;
        let own_blocks = k * nib / parts..(k + 1) * nib / parts;
        PLANES.with(|pc| {
            INPUTS.with(|ic| {
                SCRATCH.with(|sc| {
                    let (mut planes, mut v, mut s) =
                        (pc.borrow_mut(), ic.borrow_mut(), sc.borrow_mut());
                    if planes.len() < g.planes_len() {
                        planes.resize(g.planes_len(), 0.0);
                    }
                    let v_len = g.blocks() * 16 * g.c * TB;
                    if v.len() < v_len {
                        v.resize(v_len, 0.0);
                    }
                    if s.len() < g.block_scratch_len() {
                        s.resize(g.block_scratch_len(), 0.0);
                    }
                    let mut own = PART_WEIGHTS.with(|c| std::mem::take(&mut *c.borrow_mut()));
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `check` as above; planes, inputs, scratch and
                    // weights are this thread's; the parts' output-channel
                    // ranges are disjoint and `out` stays borrowed until
                    // every part has finished.
                    unsafe {
                        let len = planes.len();
                        planes_on_isa(g, img, planes.as_mut_ptr(), len, 0..g.hp());
                        let v = &mut v[..v_len];
                        inputs_on_isa(g, &planes, v);
                        for b in own_blocks {
                            let u = transform_nibbles_into(
                                w.from_channel(b * OB, d),
                                OB,
                                g.c,
                                &mut own,
                            );
                            let this = Part {
                                g,
                                planes: &planes,
                                u: UView {
                                    u,
                                    nob: OB / OR,
                                    base: b * OB / OR,
                                },
                                out: shared.0,
                                epi: &epi,
                                blocks: 0..g.blocks(),
                                obs: b * OB / OR..((b + 1) * OB / OR).min(g.out_blocks()),
                                v: Some(v),
                            };
                            part_on_isa(&this, &mut s);
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (&mut s, &mut planes, &mut v, shared, own_blocks);
                    PART_WEIGHTS.with(|c| *c.borrow_mut() = own);
                })
            })
        });
    };
    crate::engine::team::run(parts, threads, &part);
}

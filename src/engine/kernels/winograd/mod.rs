//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions: geometry, weight
//! transforms and dispatch here; the bodies in `avx512.rs` and, for CPUs
//! without AVX-512, `avx2.rs`; 4-bit codes to transformed weights (per
//! call) in `nibbles.rs`, in chunks that stay in L1 for one image
//! (`conv_image_4bit`); the same algorithm on int8 codes (W8A8 on AVX2-only
//! CPUs) in `int16.rs`.
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

/// `Bᵀ d B` of one 4×4 patch of vectors `d[i][j]` (tap row i, column j),
/// with a body's vector add and subtract (f32 or i16 lanes), each of the
/// 16 values handed to `store(ξ, value)` as soon as it is made. A macro,
/// so the intrinsics expand inside each body's `target_feature` function.
/// (Built as one 16-value array, `ξ = 4a + b` decoded per value, it was
/// not unrolled: ResNet-20 FP32 went from 0.49 to 0.55 ms.)
macro_rules! input_tile {
    ($d:expr, $add:path, $sub:path, $store:expr) => {{
        let d = $d;
        let store = $store;
        // Bᵀ d: combine rows; r[j][a] is row a, column j.
        let r: [[_; 4]; 4] = std::array::from_fn(|j| {
            [
                $sub(d[0][j], d[2][j]),
                $add(d[1][j], d[2][j]),
                $sub(d[2][j], d[1][j]),
                $sub(d[1][j], d[3][j]),
            ]
        });
        // (Bᵀ d) B: combine columns.
        for a in 0..4 {
            let vals = [
                $sub(r[0][a], r[2][a]),
                $add(r[1][a], r[2][a]),
                $sub(r[2][a], r[1][a]),
                $sub(r[1][a], r[3][a]),
            ];
            for (b, &x) in vals.iter().enumerate() {
                store(4 * a + b, x);
            }
        }
    }};
}

/// `Aᵀ M A` of one vector of tiles from its 16 products `m[ξ]`, with a
/// body's vector add and subtract: `[dy][dx]`, the tiles' 2×2 outputs.
macro_rules! output_tile {
    ($m:expr, $add:path, $sub:path) => {{
        let m = $m;
        // Aᵀ M: rows 0 and 1, per column j.
        let s: [[_; 4]; 2] = [
            std::array::from_fn(|j| $add($add(m[j], m[4 + j]), m[8 + j])),
            std::array::from_fn(|j| $sub($sub(m[4 + j], m[8 + j]), m[12 + j])),
        ];
        // (Aᵀ M) A: columns 0 and 1.
        let cols = |sr: [_; 4]| {
            [
                $add($add(sr[0], sr[1]), sr[2]),
                $sub($sub(sr[1], sr[2]), sr[3]),
            ]
        };
        [cols(s[0]), cols(s[1])]
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod int16;
mod nibbles;
pub use nibbles::{pack_nibbles, transform_nibbles_into, Nibbles};
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
    /// Whether one image with 4-bit weights streams the whole layer's
    /// weights past the whole image's transformed input in
    /// [`conv_image_4bit`] (split by output channels only): when the
    /// transformed weights are larger than half an L2 (1 MB) and than that
    /// input. Transforming them up front would write megabytes only to read
    /// them back from L3, and each part of a tile-block split would
    /// transform all of them.
    pub fn streams_weights(&self) -> bool {
        let u = 16 * self.out_blocks() * self.c * OR;
        let v = self.blocks() * 16 * self.c * TB;
        u * 4 > 1 << 20 && v < u
    }
}

/// Zero the padding around one input row in its two phase rows `e` and
/// `o` (laid out by `split`, [`WinoGeom::row_split`]; `p` the pitch), with
/// the calling body's masked `clear(row, from, to)`. Shared by the ISA
/// bodies' plane builders.
#[inline(always)]
pub(super) unsafe fn clear_row_ends(
    g: &WinoGeom,
    [(_, even_at, ne), (_, odd_at, no)]: [(usize, usize, usize); 2],
    p: usize,
    (e, o): (*mut f32, *mut f32),
    clear: impl Fn(*mut f32, usize, usize),
) {
    if g.pad == 1 && g.w.is_multiple_of(2) {
        // The usual case: padded column 0 is index 0 of phase 0 (where odd
        // source columns go from index 1 on), padded column w + 1 the last
        // index of phase 1 (even columns).
        *o = 0.0;
        *e.add(ne) = 0.0;
    } else {
        clear(e, 0, even_at);
        clear(e, even_at + ne, p);
        clear(o, 0, odd_at);
        clear(o, odd_at + no, p);
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

/// `V` of tile blocks `blocks` into `v` (`[block − blocks.start][16 ξ][C][TB]`),
/// for [`Part::v`], on this CPU's body.
#[cfg(target_arch = "x86_64")]
unsafe fn inputs_on_isa(
    g: &WinoGeom,
    planes: &[f32],
    blocks: std::ops::Range<usize>,
    v: &mut [f32],
) {
    let avx512 = isa() == Some(super::direct_conv::Isa::Avx512);
    for (blk, vb) in blocks.zip(v.chunks_exact_mut(16 * g.c * TB)) {
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
    /// `V` of the tile blocks `blocks`, already transformed
    /// (`[block − blocks.start][16 ξ][C][TB]`, see [`conv_image_4bit`]);
    /// `None`: each block's `V` is transformed into the scratch as it comes.
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

/// One tile block × output-channel blocks `obs` of a single image with
/// 4-bit weights, run slice by slice of input channels ([`SLICE`]): each
/// output block's slice is transformed ([`SliceWeights`]) right before
/// the GEMM steps that read it, and later slices add to the products in M.
pub(crate) struct SlicedPart<'a> {
    pub(crate) g: &'a WinoGeom,
    pub(crate) planes: &'a [f32],
    pub(crate) blk: usize,
    pub(crate) obs: std::ops::Range<usize>,
    pub(crate) out: *mut f32,
    pub(crate) epi: &'a Epilogue<'a>,
}

/// Input channels per slice. A slice of two output blocks' transformed
/// weights is then 16 KB, and stays in L1 with the slice's inputs and the
/// products from being written to being read.
pub(crate) const SLICE: usize = 16;

/// A sliced part's weights: output block `ob`'s transform of input
/// channels `cr` (`[16 ξ][cr.len()][8]`), valid until the call for the
/// block after next (two blocks' slices are read together).
pub(crate) type SliceWeights<'s> = &'s mut dyn FnMut(usize, std::ops::Range<usize>) -> *const f32;

/// `run_sliced` on this CPU's body.
#[cfg(target_arch = "x86_64")]
unsafe fn sliced_on_isa(p: &SlicedPart, scratch: &mut [f32], u_of: SliceWeights) {
    if isa() == Some(super::direct_conv::Isa::Avx512) {
        avx512::run_sliced(p, scratch, u_of)
    } else {
        avx2::run_sliced(p, scratch, u_of)
    }
}

thread_local! {
    /// A 4-bit call's transformed input of the part's tile blocks.
    static INPUTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A split call's per-part transformed 4-bit weights (of a sliced
    /// part: even output blocks' slices).
    static PART_WEIGHTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A sliced part's odd output blocks' slices.
    static ODD_SLICES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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
        at_least(&mut s, g.planes_len() + g.block_scratch_len());
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

/// Each non-empty part of `parts` (`partition`) on the team, as
/// `body(tile blocks, output-channel blocks, out)`: the parts write
/// disjoint (block, channel) regions of `out`, one image's output, which
/// stays borrowed until every part has finished.
fn run_parts(
    g: &WinoGeom,
    parts: (usize, usize),
    threads: usize,
    out: &mut [f32],
    body: &(dyn Fn(std::ops::Range<usize>, std::ops::Range<usize>, *mut f32) + Sync),
) {
    let shared = SharedOut(out.as_mut_ptr());
    crate::engine::team::run(parts.0 * parts.1, threads, &|k| {
        #[allow(clippy::redundant_locals)]
        let shared = &shared;
        let (blocks, obs) = part_ranges(g, parts, k);
        if !obs.is_empty() && !blocks.is_empty() {
            body(blocks, obs, shared.0);
        }
    });
}

/// Parts of one image on `threads`, as (tile-block parts, output-channel
/// parts): tile blocks first; output-channel blocks when there are fewer
/// tile blocks than threads (8×8 maps have one).
fn partition(g: &WinoGeom, threads: usize) -> (usize, usize) {
    let (nb, nob) = (g.blocks(), g.out_blocks());
    if nb >= threads {
        (threads, 1)
    } else {
        (nb, threads.div_ceil(nb).clamp(1, nob))
    }
}

/// Tile blocks and output-channel blocks of part `k` of `parts`.
fn part_ranges(
    g: &WinoGeom,
    (b_parts, ob_parts): (usize, usize),
    k: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (nb, nob) = (g.blocks(), g.out_blocks());
    let (bp, q) = (k / ob_parts, k % ob_parts);
    (
        bp * nb / b_parts..(bp + 1) * nb / b_parts,
        q * nob / ob_parts..(q + 1) * nob / ob_parts,
    )
}

/// Padded input rows the tiles of `blocks` read: 2·ty .. 2·ty + 4.
fn rows_of(g: &WinoGeom, blocks: &std::ops::Range<usize>) -> std::ops::Range<usize> {
    let (th, tw) = g.tiles();
    let first = blocks.start * TB / tw;
    let last = ((blocks.end * TB).min(th * tw) - 1) / tw;
    2 * first..2 * last + 4
}

/// Grow a reused buffer to at least `len`.
fn at_least<T: Copy + Default>(buf: &mut Vec<T>, len: usize) {
    if buf.len() < len {
        buf.resize(len, T::default());
    }
}

/// One image split over `threads` (the spinning team, for batch-1
/// latency) in one team call, with `u` from [`transform_weights`]: each
/// part builds the plane rows its tiles read into its own buffer, then
/// computes disjoint (tile blocks × output-channel blocks). Results equal
/// [`conv_image`]'s bit for bit: every output is computed the same way by
/// one part. (Building the planes in a separate team call first cost a
/// second synchronisation per layer, which ate the gain of the second
/// thread.)
pub fn conv_image_split(
    g: &WinoGeom,
    img: &[f32],
    u: &[f32],
    out: &mut [f32],
    epi: Epilogue,
    threads: usize,
) {
    check_u(g, u);
    check(g, img, out, &epi);
    let parts = partition(g, threads);
    run_parts(g, parts, threads, out, &|blocks, obs, dst| {
        let rows = rows_of(g, &blocks);
        PLANES.with(|pc| {
            SCRATCH.with(|sc| {
                let (mut planes, mut s) = (pc.borrow_mut(), sc.borrow_mut());
                at_least(&mut planes, g.planes_len());
                at_least(&mut s, g.block_scratch_len());
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `check` as above; each part has its own planes and
                // scratch (thread-local); `team::run` calls each part once,
                // the parts' (block, channel) output ranges are disjoint, and
                // `out` stays borrowed until every part has finished.
                unsafe {
                    let len = planes.len();
                    planes_on_isa(g, img, planes.as_mut_ptr(), len, rows);
                    let this = Part {
                        g,
                        planes: &planes,
                        u: UView {
                            u,
                            nob: g.out_blocks(),
                            base: 0,
                        },
                        out: dst,
                        epi: &epi,
                        blocks,
                        obs,
                        v: None,
                    };
                    part_on_isa(&this, &mut s);
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (&mut s, &mut planes, dst, obs, blocks, rows);
            })
        });
    });
}

/// 4-bit codes, scales and offsets for every output channel of `g`:
/// checked before the unsafe bodies index them.
fn check_nibbles(g: &WinoGeom, w: &Nibbles) {
    assert!(w.fits(g.o, g.c), "winograd: 4-bit weights size");
}

/// Transformed 4-bit weights per chunk: what stays in L1 while the GEMM
/// reads it. Written to a buffer larger than L1, every line of it went to
/// L2 and back (a miss per store), and the transform cost as much as the
/// GEMM it fed on 64-channel layers.
const CHUNK_BYTES: usize = 32 * 1024;
/// At most this much transformed input is kept (in L2) to run weight
/// chunks against, unless the layer's weights are larger still.
const V_BYTES: usize = 512 * 1024;

/// One image with 4-bit weights ([`pack_nibbles`]) on `threads` (the
/// spinning team; 1 runs on the caller). Each part decodes and transforms
/// only the output-channel blocks it computes:
/// - A part of one tile block (8×8 maps, or a tile-block split) runs
///   slice by slice of input channels (`SlicedPart`): each slice of
///   weights is written to and read from L1. In 32 KB chunks of output
///   channels, the GEMM's pass over the inputs (64 KB on a 64-channel 8×8
///   map) evicted the chunk buffer before the next chunk was written, and
///   the transform's stores waited on L2: 4-bit ResNet-20 batch 1 went
///   from 0.490 to 0.479 ms on AVX-512 (FP32 0.467), 0.912 to 0.888 ms on
///   AVX2 (FP32 0.858).
/// - A part of several tile blocks transforms them once up front, then
///   each chunk of weights that stays in L1 (`CHUNK_BYTES`) and runs it
///   against all of them. (A part whose weights fit one chunk, or whose
///   inputs would not stay in L2, runs as [`conv_image`] on its whole
///   transform.)
///
/// Layers whose transformed weights would not stay in L2
/// ([`WinoGeom::streams_weights`]) are split by output channels only, so no
/// part transforms weights another part uses. Results equal
/// [`conv_image`]'s on the whole transform bit for bit.
pub fn conv_image_4bit(
    g: &WinoGeom,
    img: &[f32],
    w: Nibbles,
    out: &mut [f32],
    epi: Epilogue,
    threads: usize,
) {
    check_nibbles(g, &w);
    check(g, img, out, &epi);
    let big = g.streams_weights();
    let parts = if big {
        (1, threads.clamp(1, g.out_blocks()))
    } else {
        partition(g, threads)
    };
    // Output-channel blocks per chunk.
    let chunk = (CHUNK_BYTES / (4 * 16 * g.c * OR)).max(1);
    run_parts(g, parts, threads, out, &|blocks, obs, dst| {
        let v_len = blocks.len() * 16 * g.c * TB;
        let sliced = blocks.len() == 1;
        let stream = !sliced && obs.len() > chunk && (big || v_len * 4 <= V_BYTES);
        let rows = rows_of(g, &blocks);
        PLANES.with(|pc| {
            INPUTS.with(|ic| {
                SCRATCH.with(|sc| {
                    let (mut planes, mut v, mut s) =
                        (pc.borrow_mut(), ic.borrow_mut(), sc.borrow_mut());
                    at_least(&mut planes, g.planes_len());
                    at_least(&mut s, g.block_scratch_len());
                    if stream {
                        at_least(&mut v, v_len);
                    }
                    let mut own = PART_WEIGHTS.with(|c| std::mem::take(&mut *c.borrow_mut()));
                    let mut odd = ODD_SLICES.with(|c| std::mem::take(&mut *c.borrow_mut()));
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `check` as above; planes, inputs, scratch and
                    // weights are this thread's; `team::run` calls each part
                    // once, the parts' (block, channel) output ranges are
                    // disjoint, and `out` stays borrowed until every part
                    // has finished.
                    unsafe {
                        let len = planes.len();
                        planes_on_isa(g, img, planes.as_mut_ptr(), len, rows);
                        if stream {
                            inputs_on_isa(g, &planes, blocks.clone(), &mut v[..v_len]);
                        }
                        if sliced {
                            let cp = g.c.div_ceil(2);
                            let mut u_of = |ob: usize, cr: std::ops::Range<usize>| {
                                // Slices start at even channels: whole pairs.
                                let at = (ob * cp + cr.start / 2) * nibbles::PAIR_BYTES;
                                let nib = Nibbles {
                                    codes: &w.codes[at..],
                                    step: &w.step[ob * OR..],
                                    lo: &w.lo[ob * OR..],
                                };
                                let buf = if ob.is_multiple_of(2) {
                                    &mut own
                                } else {
                                    &mut odd
                                };
                                transform_nibbles_into(nib, OR, cr.len(), buf).as_ptr()
                            };
                            let this = SlicedPart {
                                g,
                                planes: &planes,
                                blk: blocks.start,
                                obs: obs.clone(),
                                out: dst,
                                epi: &epi,
                            };
                            sliced_on_isa(&this, &mut s, &mut u_of);
                        } else {
                            let mut ob = obs.start;
                            while ob < obs.end {
                                let end = if stream {
                                    (ob + chunk).min(obs.end)
                                } else {
                                    obs.end
                                };
                                let nib = w.from_block(ob, g.c);
                                let u = transform_nibbles_into(nib, (end - ob) * OR, g.c, &mut own);
                                let this = Part {
                                    g,
                                    planes: &planes,
                                    u: UView {
                                        u,
                                        nob: end - ob,
                                        base: ob,
                                    },
                                    out: dst,
                                    epi: &epi,
                                    blocks: blocks.clone(),
                                    obs: ob..end,
                                    v: if stream { Some(&v[..v_len]) } else { None },
                                };
                                part_on_isa(&this, &mut s);
                                ob = end;
                            }
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (
                        &mut s,
                        &mut planes,
                        &mut v,
                        dst,
                        obs,
                        blocks,
                        rows,
                        &mut own,
                        &mut odd,
                    );
                    PART_WEIGHTS.with(|c| *c.borrow_mut() = own);
                    ODD_SLICES.with(|c| *c.borrow_mut() = odd);
                })
            })
        });
    });
}

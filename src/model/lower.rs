//! Lowering a conv's (BN-folded) weights to the integer forms the fast paths
//! run: int8 codes for W8A8, packed 4-bit codes for weight-only models.
//!
//! A quantized model reaches the executor as f32 values that lie on per-row
//! grids (whatever quantizer made them, and whether it came from a file or
//! from this session). Lowering recovers each row's grid from the values and
//! checks the round trip, so the integer path computes what the simulation
//! computes. Layers whose values are on no such grid keep the f32 path
//! (weight-only) or the f32 simulation (W8A8: lowered, but flagged inexact).
use crate::engine::kernels::lowbit_linear::RowCodes;
use crate::engine::kernels::{direct_conv, packed3};
use crate::engine::ops::qconv::Int8Weights;

/// Relative tolerance of the grid round trip: BN folding multiplies each
/// code's value by one f32, which moves it by a few ulps.
const TOL: f32 = 1e-5;

/// Integer `k` with `|v − step·(k + origin)| ≤ TOL·span` for every value, if
/// `step` describes the row.
fn codes_on(row: &[f32], step: f32, origin: f32, span: f32, lo: i32, hi: i32) -> Option<Vec<i32>> {
    if step.is_nan() || step <= 0.0 || !step.is_finite() {
        return None;
    }
    let mut codes = Vec::with_capacity(row.len());
    for &v in row {
        let k = (v / step - origin).round();
        if k < lo as f32 || k > hi as f32 || (v - step * (k + origin)).abs() > TOL * span {
            return None;
        }
        codes.push(k as i32);
    }
    Some(codes)
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The row's distinct values (bit for bit) if there are at most `max`;
/// None as soon as a value past `max` turns up.
fn distinct_upto(row: &[f32], max: usize) -> Option<Vec<f32>> {
    let mut seen: Vec<u32> = Vec::with_capacity(max);
    for v in row {
        let b = v.to_bits();
        if !seen.contains(&b) {
            if seen.len() == max {
                return None;
            }
            seen.push(b);
        }
    }
    Some(seen.into_iter().map(f32::from_bits).collect())
}

/// Smallest positive gap between distinct values (a multiple of the grid step).
fn min_gap(row: &[f32], span: f32) -> f32 {
    let mut v = row.to_vec();
    v.sort_by(f32::total_cmp);
    v.windows(2)
        .map(|p| p[1] - p[0])
        .filter(|&d| d > TOL * span)
        .fold(f32::INFINITY, f32::min)
}

/// Symmetric int8 codes of one row: `(step, codes)` with `row ≈ step·codes`,
/// and whether that is exact.
fn int8_row(row: &[f32]) -> (f32, Vec<i8>, bool) {
    let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        return (1.0, vec![0; row.len()], true);
    }
    let gap = min_gap(row, absmax);
    // Absmax grids (/127), PyTorch's symmetric grid (/127.5), [-128, 127]
    // grids, their 7-bit "reduce range" twins (which the AVX2 kernel needs);
    // then the step implied by the smallest gap.
    let candidates = [
        absmax / 127.0,
        absmax / 127.5,
        absmax / 128.0,
        absmax / 63.0,
        absmax / 63.5,
        gap,
        gap / 2.0,
        gap / 3.0,
    ];
    for step in candidates {
        if let Some(k) = codes_on(row, step, 0.0, absmax, -128, 127) {
            return (step, k.into_iter().map(|c| c as i8).collect(), true);
        }
    }
    let step = absmax / 127.0;
    let codes = row
        .iter()
        .map(|v| (v / step).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    (step, codes, false)
}

/// A W8A8 conv's folded weights `[O, d]` as int8; `exact` is false when some
/// row was not on an int8 grid and had to be requantized (the executor then
/// keeps the f32 simulation for that layer).
pub fn lower_int8(weight: &[f32], shape: [usize; 4]) -> (Int8Weights, bool) {
    let d = weight.len() / shape[0].max(1);
    let mut codes = Vec::with_capacity(weight.len());
    let mut scale = Vec::with_capacity(shape[0]);
    let mut exact = true;
    for row in weight.chunks(d.max(1)) {
        let (s, k, e) = int8_row(row);
        scale.push(s);
        codes.extend(k);
        exact &= e;
    }
    (Int8Weights::new(&codes, scale, shape), exact)
}

/// Weights held as low-bit codes in the layout of the kernel that runs the
/// layer (`order`); `value = lo[o] + step[o]·code`.
#[derive(Clone, Debug)]
pub struct LowBitWeights {
    pub shape: [usize; 4],
    /// The codes as held: two per byte (low nibble first) in `order`, or,
    /// once `hold_3bit` found every code below 8, those bytes 3-bit packed
    /// (`kernels::packed3`; for `Rows`, row by row).
    pub codes: Vec<u8>,
    /// Whether `codes` is 3-bit packed.
    pub packed3: bool,
    /// Length of the codes as nibble bytes (unpacked).
    pub nibble_bytes: usize,
    pub order: CodeOrder,
    /// Per output channel (padded to the kernel's block of 8).
    pub step: Vec<f32>,
    pub lo: Vec<f32>,
    /// Levels actually used by the widest row (≤ 16): 8 means a 3-bit grid.
    pub levels: usize,
}

impl LowBitWeights {
    /// Bytes held: codes and the per-channel grid.
    pub fn held_bytes(&self) -> usize {
        self.codes.len() + 4 * (self.step.len() + self.lo.len())
    }

    /// Bits per code as held (3 or 4).
    pub fn held_bits(&self) -> u8 {
        if self.packed3 {
            3
        } else {
            4
        }
    }

    /// The codes of a `Rows`-order layer for the linear GEMV.
    pub fn row_codes(&self) -> RowCodes<'_> {
        if self.packed3 {
            RowCodes::Packed3(&self.codes)
        } else {
            RowCodes::Nibbles(&self.codes)
        }
    }

    /// Nibble bytes per row in `Rows` order.
    fn row_nibbles(&self) -> usize {
        self.shape[1..].iter().product::<usize>().div_ceil(2)
    }

    /// The same codes held in 3 bits when every code is below 8 (3-bit and
    /// 2-bit grids); 4 bits otherwise.
    pub fn hold_3bit(mut self) -> Self {
        if self.packed3 || self.levels > 8 {
            return self;
        }
        let packed = match self.order {
            CodeOrder::Rows => {
                let rb = self.row_nibbles();
                let mut out = Vec::with_capacity(self.shape[0] * packed3::packed_len(rb));
                for row in self.codes.chunks(rb.max(1)) {
                    match packed3::pack3(row) {
                        Some(p) => out.extend(p),
                        None => return self,
                    }
                }
                out
            }
            _ => match packed3::pack3(&self.codes) {
                Some(p) => p,
                None => return self,
            },
        };
        self.codes = packed;
        self.packed3 = true;
        self
    }

    /// Nibble bytes in `order` for a kernel: the codes themselves, or, if
    /// held in 3 bits, unpacked into a per-thread buffer for the length of
    /// `f` (the buffer is kept for the next layer, so a model costs its
    /// widest 3-bit layer's nibbles per thread once).
    pub fn with_nibbles<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        if !self.packed3 {
            return f(&self.codes);
        }
        thread_local! {
            static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        // Taken, not borrowed: a kernel's thread that runs another graph's
        // layer meanwhile (work stealing) finds an empty buffer and grows
        // its own.
        let mut buf = SCRATCH.take();
        self.unpack_into(&mut buf);
        let out = f(&buf);
        SCRATCH.set(buf);
        out
    }

    fn unpack_into(&self, buf: &mut Vec<u8>) {
        let len = self.nibble_bytes;
        let rb = self.row_nibbles();
        // Only new bytes are zeroed; every byte is written below.
        buf.resize(len, 0);
        match self.order {
            CodeOrder::Rows => {
                let prb = packed3::packed_len(rb);
                for (r, dst) in buf.chunks_mut(rb.max(1)).enumerate() {
                    packed3::unpack3(&self.codes[r * prb..(r + 1) * prb], dst);
                }
            }
            _ => packed3::unpack3(&self.codes, buf),
        }
    }
}

/// How a layer's 4-bit codes are laid out: for the kernel that runs it,
/// since only one copy is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeOrder {
    /// `direct_conv::pack_weights` order (the direct kernel).
    Direct,
    /// `winograd::pack_nibbles` order (3×3 stride-1 layers on the Winograd
    /// kernel).
    Winograd,
    /// Row by row, `⌈d/2⌉` bytes per output channel (1×1 stride-1 layers,
    /// decoded row-major for the GEMM: `direct_conv::decode_rows_into`).
    Rows,
}

/// Folded weights `[O, d]` as 4-bit codes, if every row lies on an affine
/// grid of at most 16 levels (RTN/GPTQ/AWQ at ≤ 4 bits, BN folded or not),
/// laid out in `order` (asked for Winograd order, a layer that is not 3×3
/// gets the direct kernel's).
pub fn lower_lowbit(weight: &[f32], shape: [usize; 4], order: CodeOrder) -> Option<LowBitWeights> {
    let o = shape[0];
    let d = weight.len() / o.max(1);
    if d == 0 {
        return None;
    }
    let mut codes = vec![0u8; weight.len()];
    let mut step = vec![0f32; o.div_ceil(direct_conv::OB) * direct_conv::OB];
    let mut lo = step.clone();
    let mut levels = 0;
    for (r, row) in weight.chunks(d).enumerate() {
        let (mn, mx) = row
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let span = (mx - mn).max(mx.abs()).max(mn.abs());
        if mx == mn {
            lo[r] = mn;
            step[r] = 0.0;
            continue;
        }
        // Quick reject: a float row has far more than 16 distinct values.
        let distinct = distinct_upto(row, 16)?;
        // The smallest gap between the row's values is one between its
        // distinct values: sorting those 16, not the whole row (a VGG
        // classifier row is 25 088 values).
        let gap = min_gap(&distinct, span);
        let found = [(mx - mn) / 15.0, gap, gap / 2.0, gap / 3.0]
            .into_iter()
            .find_map(|s| codes_on(row, s, mn / s, span, 0, 15).map(|k| (s, k)));
        let (s, k) = found?;
        // A grid coarser than 16 levels can pass the first candidate with
        // every code a multiple (a 2-bit row's come out 0, 5, 10, 15): its
        // own step keeps the codes small, so the layer can be held in fewer
        // bits (`hold_3bit`).
        let g = k.iter().fold(0, |g, &c| gcd(g, c));
        let (s, k) = match g {
            2.. => {
                let coarse = s * g as f32;
                codes_on(row, coarse, mn / coarse, span, 0, 15).map_or((s, k), |k| (coarse, k))
            }
            _ => (s, k),
        };
        let used = *k.iter().max()? as usize + 1;
        levels = levels.max(used);
        step[r] = s;
        lo[r] = mn;
        for (j, c) in k.into_iter().enumerate() {
            codes[r * d + j] = c as u8;
        }
    }
    let winograd = shape[2..] == [3, 3] && d == 9 * shape[1];
    let order = match order {
        CodeOrder::Winograd if !winograd => CodeOrder::Direct,
        order => order,
    };
    let nibbles = match order {
        CodeOrder::Winograd => crate::engine::kernels::winograd::pack_nibbles(&codes, o, shape[1]),
        CodeOrder::Rows => codes
            .chunks(d)
            .flat_map(|row| {
                row.chunks(2)
                    .map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4))
            })
            .collect(),
        CodeOrder::Direct => {
            // Reorder into the direct kernel's packed layout, then two codes per byte.
            let as_f32: Vec<f32> = codes.iter().map(|&c| c as f32).collect();
            let order = direct_conv::pack_weights(&as_f32, o, d);
            order
                .chunks(2)
                .map(|p| p[0] as u8 | (p.get(1).map_or(0, |&v| v as u8) << 4))
                .collect()
        }
    };
    Some(LowBitWeights {
        shape,
        nibble_bytes: nibbles.len(),
        codes: nibbles,
        packed3: false,
        order,
        step,
        lo,
        levels,
    })
}

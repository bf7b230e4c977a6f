//! Inference graphs keep only what their kernels read. A conv that runs
//! from integer codes (4-bit weight-only, W8A8) reads none of its f32
//! copies: the raw weight, the BN-folded one and the direct kernel's packed
//! layout, together three times an f32 model's weight bytes. Releasing them
//! is what makes a quantized model take the memory its format promises;
//! f32 layers release the raw weight they no longer read.
use crate::model::exec::{conv_path, ConvPath};
use crate::model::graph::{Graph, Op};
use std::sync::Arc;

impl Graph {
    /// Release the f32 weights of every conv that runs from integer codes
    /// on this CPU, and the raw (unfolded) weight of the others; return
    /// the bytes released. For inference only (call on a fused
    /// graph): quantizers, training and export need the f32 weights, and
    /// the released layers keep their integer kernel even when integer
    /// paths are switched off later (`--simulate` must be chosen before).
    pub fn release_f32_weights(&mut self) -> usize {
        let mut freed = 0;
        for n in &mut self.nodes {
            if let Op::Linear(l) = &mut n.op {
                // A weight-only linear reads its 4-bit codes, not its f32 weights.
                if crate::model::exec::linear_lowbit(l).is_some() {
                    freed += 4 * std::mem::take(&mut l.weight).len();
                }
                continue;
            }
            let Op::Conv(c) = &mut n.op else { continue };
            if c.folded.is_none() {
                continue;
            }
            // Builds the codes (cached in `folded`) the kernel will read.
            let path = conv_path(c);
            // Every layer runs from its folded form: the raw weight is only
            // for re-folding. f32 layers keep the folded weight (their
            // kernels read it, or a transform or layout built from it);
            // layers that run from codes drop it, and the direct kernel's
            // layout if a run without integer paths built it.
            let integer = matches!(
                path,
                ConvPath::W4(..) | ConvPath::Int8(_) | ConvPath::Int8Winograd
            );
            freed += 4 * std::mem::take(&mut c.weight).len();
            let Some(folded) = c.folded.as_mut() else {
                continue;
            };
            // A fresh fused graph owns its folded layers; a shared one is
            // copied first, so other graphs keep theirs.
            let f = Arc::make_mut(folded);
            if integer {
                freed += 4 * std::mem::take(&mut f.weight).len();
                freed += 4 * f.packed.take().map_or(0, |p| p.len());
            }
        }
        freed
    }

    /// Bytes of weights held in memory: every f32 copy, transform and
    /// integer code a layer keeps (what `release_f32_weights` shrinks).
    pub fn resident_weight_bytes(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(c) => {
                    let f32s = c.weight.len() + c.bias.as_ref().map_or(0, Vec::len);
                    let folded = c.folded.as_deref().map_or(0, |f| {
                        let int8 = f
                            .int8
                            .get()
                            .and_then(Option::as_ref)
                            .map_or(0, |w| w.0.bytes());
                        let low = f
                            .lowbit
                            .get()
                            .and_then(Option::as_ref)
                            .map_or(0, |l| l.held_bytes());
                        let wino = f.winograd.get().map_or(0, Vec::len);
                        4 * (f.weight.len()
                            + f.packed.get().map_or(0, Vec::len)
                            + wino
                            + f.bias.as_ref().map_or(0, Vec::len))
                            + int8
                            + low
                    });
                    4 * f32s + folded
                }
                Op::Linear(l) => {
                    let low = l.lowbit.as_deref().map_or(0, |l| l.held_bytes());
                    4 * (l.weight.len() + l.bias.as_ref().map_or(0, Vec::len)) + low
                }
                _ => 0,
            })
            .sum()
    }
}

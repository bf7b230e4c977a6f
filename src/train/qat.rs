//! Quantization-aware training set-up and finish: BN folded into the weights
//! with frozen statistics from step 0 (\[D\], Jacob et al.), weights fake-
//! quantized per channel (`torch_sym`) at the bit map's widths, activations
//! per tensor with EMA ranges when `act_bits` is set; afterwards the trained
//! weights are quantized for real and packed like any post-training result.
use crate::model::{Graph, Op};
use crate::quant::packing::QuantizedLayer;
use crate::quant::BitsMap;
use crate::train::tape::{fake_quant_weight, FakeQuant};
use crate::Result;

/// QAT's default learning rate (SGD): lower than fine-tuning's 0.01, since
/// the BN-folded network has no normalisation to absorb a large step (at
/// 0.01, ResNet-20 diverged to 10 % within four steps).
pub const DEFAULT_LR: f64 = 0.002;

/// The BN-folded graph to train and its fake-quantization plan.
pub fn prepare(graph: &Graph, bits: &BitsMap, act_bits: Option<u8>) -> Result<(Graph, FakeQuant)> {
    let per_layer = bits.resolve(graph)?;
    let names = graph.layer_names();
    let folded = crate::quant::smoothquant::fold_bn_into_weights(graph);
    let mut fq = FakeQuant {
        weight_bits: vec![None; folded.nodes.len()],
        act_scale: vec![None; folded.nodes.len()],
        act_bits,
        act_range: vec![None; folded.nodes.len()],
    };
    for (i, n) in folded.nodes.iter().enumerate() {
        if let Some(k) = names.iter().position(|x| *x == n.name) {
            fq.weight_bits[i] = Some(per_layer[k]);
        }
    }
    Ok((folded, fq))
}

/// Replace the latent weights by their quantized values, set the activation
/// scales, and return the packed layers.
pub fn finish(graph: &mut Graph, fq: &FakeQuant) -> Vec<QuantizedLayer> {
    let mut packed = vec![];
    for (i, n) in graph.nodes.iter_mut().enumerate() {
        let Some(bits) = fq.weight_bits.get(i).copied().flatten() else {
            continue;
        };
        let act = fq.act_scale.get(i).copied().flatten();
        let (w, shape) = match &mut n.op {
            Op::Conv(c) => {
                c.act_scale = act;
                c.folded = None;
                (&mut c.weight, c.shape)
            }
            Op::Linear(l) => {
                l.act_scale = act;
                l.lowbit = None;
                (&mut l.weight, [l.out_features, l.in_features, 1, 1])
            }
            _ => continue,
        };
        let (q, _) = fake_quant_weight(w, shape[0], bits);
        let d = w.len() / shape[0].max(1);
        let half = (1u32 << (bits - 1)) as f32;
        let scales: Vec<f32> = w
            .chunks(d)
            .map(|row| {
                let a = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                if a > 0.0 {
                    a / ((2.0 * half - 1.0) / 2.0)
                } else {
                    1.0
                }
            })
            .collect();
        packed.push(QuantizedLayer::from_values(
            &n.name,
            &q,
            shape,
            scales,
            vec![half; shape[0]],
            bits,
            None,
        ));
        w.copy_from_slice(&q);
    }
    graph.refold();
    packed
}

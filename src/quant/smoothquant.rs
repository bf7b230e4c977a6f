//! SmoothQuant W8A8 (ALGORITHMS.md §6): fold BN into the convs, migrate
//! activation outliers into the weights with `s_c = a_c^α / w_c^{1−α}` where a
//! conv's input has an exclusive producer (the conv before it through ReLU, or
//! the normalised image), then calibrate static per-tensor int8 activation
//! scales on the smoothed model.
use crate::engine::Tensor;
use crate::model::{Graph, Op, Runner};
use crate::Result;

/// The fused graph with BN folded into the raw weights and biases, so the
/// quantizer sees (and quantizes) the weights that are actually multiplied.
pub fn fold_bn_into_weights(g: &Graph) -> Graph {
    let mut f = g.fused();
    for n in &mut f.nodes {
        if let Op::Conv(c) = &mut n.op {
            let (w, b) = crate::model::exec::fold_conv(c);
            c.weight = w.into_owned();
            c.bias = b;
            c.post.scale = None;
            c.post.shift = None;
        }
    }
    f.refold();
    f
}

/// Per-channel `max |x|` of an NCHW tensor.
pub fn channel_absmax(x: &Tensor) -> Vec<f32> {
    let c = x.dim().1;
    (0..c)
        .map(|ch| {
            x.index_axis(ndarray::Axis(1), ch)
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
        })
        .collect()
}

/// Run `g` on `calib` and collect, for every quantizable node, `f(input)`.
pub fn collect_inputs<T>(
    g: &Graph,
    calib: &Tensor,
    f: &dyn Fn(&Tensor) -> T,
) -> Result<Vec<(usize, T)>> {
    let mut run = Runner::new(g, calib.clone())?;
    let mut out = vec![];
    while let Some(node) = run.next_node(g) {
        if matches!(g.nodes[node].op, Op::Conv(_) | Op::Linear(_)) {
            if let Some(x) = run.input_of(g, node) {
                out.push((node, f(x)));
            }
        }
        run.step(g)?;
    }
    Ok(out)
}

/// Where a layer's input comes from, when scaling it is safe.
enum Producer {
    Image,
    Conv(usize),
}

fn exclusive_producer(g: &Graph, node: usize) -> Option<Producer> {
    let v = g.nodes[node].inputs[0];
    if g.consumers(v) != 1 {
        return None;
    }
    if v == 0 {
        return Some(Producer::Image);
    }
    let p = g.producer(v)?;
    // A fused residual add would not be divided by s: only plain conv(+ReLU).
    match &g.nodes[p].op {
        Op::Conv(c) if g.nodes[p].inputs.len() == 1 && c.post.scale.is_none() => {
            Some(Producer::Conv(p))
        }
        _ => None,
    }
}

/// Smooth every conv with an exclusive producer, in place; returns the
/// smoothed nodes. `g` must come from `fold_bn_into_weights`.
pub fn smooth(g: &mut Graph, calib: &Tensor, alpha: f64) -> Result<Vec<usize>> {
    let act = collect_inputs(g, calib, &channel_absmax)?;
    let mut smoothed = vec![];
    for (node, a) in act {
        let Some(producer) = exclusive_producer(g, node) else {
            continue;
        };
        let Op::Conv(c) = &g.nodes[node].op else {
            continue;
        };
        if c.geom.groups != 1 {
            continue;
        }
        let [o, cin, kh, kw] = c.shape;
        let k2 = kh * kw;
        let w_max: Vec<f32> = (0..cin)
            .map(|ch| {
                (0..o)
                    .flat_map(|r| (0..k2).map(move |k| (r, k)))
                    .fold(0f32, |m, (r, k)| {
                        m.max(c.weight[(r * cin + ch) * k2 + k].abs())
                    })
                    .max(1e-5)
            })
            .collect();
        // [D] s = 1 for channels never active in calibration.
        let s: Vec<f32> = a
            .iter()
            .zip(&w_max)
            .map(|(&ac, &wc)| {
                if ac == 0.0 {
                    1.0
                } else {
                    ((ac as f64).powf(alpha) / (wc as f64).powf(1.0 - alpha)).max(1e-5) as f32
                }
            })
            .collect();
        if let Op::Conv(c) = &mut g.nodes[node].op {
            for (k, w) in c.weight.iter_mut().enumerate() {
                *w *= s[(k / k2) % cin];
            }
        }
        match producer {
            Producer::Image => {
                for (sd, sc) in g.meta.std.iter_mut().zip(&s) {
                    *sd *= sc;
                }
            }
            Producer::Conv(p) => {
                if let Op::Conv(pc) = &mut g.nodes[p].op {
                    let per = pc.weight.len() / pc.shape[0].max(1);
                    for (r, row) in pc.weight.chunks_mut(per).enumerate() {
                        row.iter_mut().for_each(|v| *v /= s[r]);
                    }
                    if let Some(b) = &mut pc.bias {
                        b.iter_mut().zip(&s).for_each(|(v, sc)| *v /= sc);
                    }
                }
            }
        }
        smoothed.push(node);
    }
    g.refold();
    Ok(smoothed)
}

/// Static per-tensor scales `max|x|/127` for every layer input (calibration
/// on the graph as it is: call after smoothing, before weight quantization).
pub fn calibrate_act_scales(g: &mut Graph, calib: &Tensor) -> Result<()> {
    let ranges = collect_inputs(g, calib, &|x: &Tensor| {
        x.iter().fold(0f32, |m, v| m.max(v.abs()))
    })?;
    for (node, r) in ranges {
        let s = if r > 0.0 { Some(r / 127.0) } else { None };
        match &mut g.nodes[node].op {
            Op::Conv(c) => c.act_scale = s,
            Op::Linear(l) => l.act_scale = s,
            _ => {}
        }
    }
    Ok(())
}

/// SmoothQuant's weight grid: `absmax_sym`, `Δ = max|w|/(2^{b−1}−1)`, codes
/// `round(w/Δ)` in `[−(2^{b−1}−1), 2^{b−1}−1]`, stored offset by `2^{b−1}−1`.
pub fn absmax_grid(row: &[f32], bits: u8) -> crate::quant::grid::RowGrid {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let a = row.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
    crate::quant::grid::RowGrid {
        scale: a / qmax,
        zero: qmax,
        maxq: 2.0 * qmax,
    }
}

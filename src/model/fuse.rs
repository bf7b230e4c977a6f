//! Inference rewrites that keep outputs identical: fold eval-mode BatchNorm into
//! the conv before it, fuse a residual add and a ReLU into the conv epilogue.
//! Layer weights are untouched (the fold lives in `PostOps`), so a fused graph
//! can still be quantized and its quantized weights swapped in.
use crate::engine::ops::ConvGeom;
use crate::model::graph::{ConvLayer, Graph, Op, PostOps};

impl Graph {
    /// The graph with BN folded and add/ReLU fused, ready for fast inference.
    pub fn fused(&self) -> Graph {
        self.clone().into_fused()
    }

    /// `fused` without keeping the original (no copy of its weights: what
    /// a freshly loaded model wants).
    pub fn into_fused(self) -> Graph {
        let mut g = self;
        fold_batchnorm(&mut g);
        fuse_add(&mut g);
        w8a8_linear_as_conv(&mut g);
        fuse_relu(&mut g);
        g.refold();
        g
    }

    pub fn consumers(&self, value: usize) -> usize {
        let uses = self
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter())
            .filter(|&&v| v == value)
            .count();
        uses + usize::from(self.output == value)
    }

    pub fn producer(&self, value: usize) -> Option<usize> {
        self.nodes.iter().position(|n| n.output == value)
    }
}

/// Remove node `i`, whose single input is replaced everywhere by its output.
fn splice_out(g: &mut Graph, i: usize, into: usize) {
    let removed = g.nodes.remove(i);
    let idx = if into > i { into - 1 } else { into };
    g.nodes[idx].output = removed.output;
}

fn fold_batchnorm(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        if let Op::BatchNorm(bn) = &g.nodes[i].op {
            let src = g.nodes[i].inputs[0];
            if let Some(p) = g.producer(src) {
                let foldable = g.consumers(src) == 1
                    && matches!(&g.nodes[p].op, Op::Conv(c) if c.post.scale.is_none() && !c.post.relu && g.nodes[p].inputs.len() == 1);
                if foldable {
                    let (scale, shift) = bn.scale_shift();
                    let bn_name = g.nodes[i].name.clone();
                    if let Op::Conv(c) = &mut g.nodes[p].op {
                        c.post.scale = Some(scale);
                        c.post.shift = Some(shift);
                        c.post.bn_name = Some(bn_name);
                    }
                    splice_out(g, i, p);
                    continue;
                }
            }
        }
        i += 1;
    }
}

fn fuse_add(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        if matches!(g.nodes[i].op, Op::Add) {
            let (a, b) = (g.nodes[i].inputs[0], g.nodes[i].inputs[1]);
            hoist_shortcut_pad(g, a, b);
            hoist_shortcut_pad(g, b, a);
            // Prefer the operand computed last (the block's conv2) as the conv.
            for (conv_in, other) in [(a, b), (b, a)] {
                if let Some(p) = g.producer(conv_in) {
                    let ok = g.consumers(conv_in) == 1
                        && g.nodes[p].inputs.len() == 1
                        && matches!(&g.nodes[p].op, Op::Conv(c) if !c.post.relu)
                        && g.producer(other).is_none_or(|q| q < p);
                    if ok {
                        g.nodes[p].inputs.push(other);
                        splice_out(g, i, p);
                        i = i.saturating_sub(1);
                        break;
                    }
                }
            }
        }
        i += 1;
    }
}

/// An option-A shortcut (`ShortcutPad`) computed after the conv whose
/// output it is added to moves to just before that conv, so the add (and
/// the ReLU after it) can fuse into the conv's epilogue. ResNet-20 lists
/// the shortcut after `conv2`; the separate add and ReLU cost 2.4 µs per
/// downsampling block. Only this parameter-free op moves: the order of the
/// layers a quantizer walks stays as it was.
fn hoist_shortcut_pad(g: &mut Graph, conv_out: usize, other: usize) {
    let (Some(p), Some(q)) = (g.producer(conv_out), g.producer(other)) else {
        return;
    };
    let movable = q > p
        && matches!(g.nodes[q].op, Op::ShortcutPad { .. })
        && matches!(g.nodes[p].op, Op::Conv(_))
        && g.nodes[q]
            .inputs
            .iter()
            .all(|&v| g.producer(v).is_none_or(|r| r < p));
    if movable {
        let node = g.nodes.remove(q);
        g.nodes.insert(p, node);
    }
}

/// A W8A8 linear layer becomes the 1×1 conv it is on its `[N, in, 1, 1]`
/// input, so it runs on the int8 conv kernel (and a ReLU after it fuses):
/// at batch 1 a VGG's f32 classifier streams 490 MB of weights an image,
/// int8 codes a quarter of that. Same weights, bias and input scale, so the
/// same arithmetic as the simulated linear.
fn w8a8_linear_as_conv(g: &mut Graph) {
    for n in &mut g.nodes {
        let Op::Linear(l) = &mut n.op else { continue };
        if l.act_scale.is_none() {
            continue;
        }
        n.op = Op::Conv(ConvLayer {
            weight: std::mem::take(&mut l.weight),
            shape: [l.out_features, l.in_features, 1, 1],
            bias: l.bias.take(),
            geom: ConvGeom::new(1, 0),
            post: PostOps::default(),
            folded: None,
            act_scale: l.act_scale,
        });
    }
}

fn fuse_relu(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        if matches!(g.nodes[i].op, Op::Relu) {
            let src = g.nodes[i].inputs[0];
            if let Some(p) = g.producer(src) {
                if g.consumers(src) == 1 {
                    if let Op::Conv(c) = &mut g.nodes[p].op {
                        if !c.post.relu {
                            c.post.relu = true;
                            splice_out(g, i, p);
                            continue;
                        }
                    }
                }
            }
        }
        i += 1;
    }
}

//! Save a model as safetensors under the names it was loaded with, so PyTorch
//! users (and qscope) can reload it. Quantized layers are stored as bit-packed
//! integer codes (`{layer}.weight.qcodes`, U8) with per-row scale and zero
//! point (`.qscale`, `.qzero`, F32) and, for AWQ, per-input-channel scales
//! (`.qcol`); the metadata key `qscope.q.{layer}` holds `{"bits", "shape"}`.
//! W8A8 activation scales are `{layer}.input_scale`. A BatchNorm folded into a
//! conv is written back as a BN with γ = scale, β = shift, μ = 0, σ² = 1 − ε.
use crate::model::graph::{Graph, Op};
use crate::quant::packing::{pack, QuantizedLayer};
use crate::util::write_atomic;
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

struct Out {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
}

impl Out {
    fn f32(&mut self, name: String, shape: Vec<usize>, v: &[f32]) {
        self.tensors.push((
            name,
            Dtype::F32,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
}

pub fn save(graph: &Graph, packed: &[QuantizedLayer], path: &Path) -> Result<()> {
    save_with_adapters(graph, packed, &[], path)
}

/// As `save`, plus CoRa adapters as `{layer}.adapter.a` (`[r, C_in, k, k]`)
/// and `{layer}.adapter.b` (`[N, r, 1, 1]`); the loader adds `B·A` back.
pub fn save_with_adapters(
    graph: &Graph,
    packed: &[QuantizedLayer],
    adapters: &[crate::train::cora_job::Adapter],
    path: &Path,
) -> Result<()> {
    let by_name: HashMap<&str, &QuantizedLayer> =
        packed.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut out = Out { tensors: vec![] };
    let mut md: HashMap<String, String> = graph.meta.file_metadata.clone().into_iter().collect();
    md.insert("mean".into(), format!("{:?}", graph.meta.mean));
    md.insert("std".into(), format!("{:?}", graph.meta.std));
    let weight = |out: &mut Out,
                  md: &mut HashMap<String, String>,
                  name: &str,
                  shape: Vec<usize>,
                  w: &[f32]| match by_name.get(name) {
        Some(q) => {
            let n = q.shape[0];
            out.tensors.push((
                format!("{name}.weight.qcodes"),
                Dtype::U8,
                vec![(q.codes.len() * q.storage_bits as usize).div_ceil(8)],
                pack(&q.codes, q.storage_bits),
            ));
            out.f32(format!("{name}.weight.qscale"), vec![n], &q.row_scale);
            out.f32(format!("{name}.weight.qzero"), vec![n], &q.row_zero);
            if let Some(c) = &q.col_scale {
                out.f32(format!("{name}.weight.qcol"), vec![c.len()], c);
            }
            md.insert(
                format!("qscope.q.{name}"),
                serde_json::json!({"bits": q.storage_bits, "shape": shape}).to_string(),
            );
        }
        None => out.f32(format!("{name}.weight"), shape, w),
    };
    for n in &graph.nodes {
        match &n.op {
            Op::Conv(c) => {
                weight(&mut out, &mut md, &n.name, c.shape.to_vec(), &c.weight);
                if let Some(b) = &c.bias {
                    out.f32(format!("{}.bias", n.name), vec![b.len()], b);
                }
                if let Some(s) = c.act_scale {
                    out.f32(format!("{}.input_scale", n.name), vec![1], &[s]);
                }
                if let Some(bn) = &c.post.bn_name {
                    let o = c.shape[0];
                    let gamma = c.post.scale.clone().unwrap_or_else(|| vec![1.0; o]);
                    let beta = c.post.shift.clone().unwrap_or_else(|| vec![0.0; o]);
                    out.f32(format!("{bn}.weight"), vec![o], &gamma);
                    out.f32(format!("{bn}.bias"), vec![o], &beta);
                    out.f32(format!("{bn}.running_mean"), vec![o], &vec![0.0; o]);
                    out.f32(format!("{bn}.running_var"), vec![o], &vec![1.0 - 1e-5; o]);
                }
            }
            Op::Linear(l) => {
                weight(
                    &mut out,
                    &mut md,
                    &n.name,
                    vec![l.out_features, l.in_features],
                    &l.weight,
                );
                if let Some(b) = &l.bias {
                    out.f32(format!("{}.bias", n.name), vec![b.len()], b);
                }
                if let Some(s) = l.act_scale {
                    out.f32(format!("{}.input_scale", n.name), vec![1], &[s]);
                }
            }
            Op::BatchNorm(bn) => {
                for (s, v) in [
                    ("weight", &bn.gamma),
                    ("bias", &bn.beta),
                    ("running_mean", &bn.mean),
                    ("running_var", &bn.var),
                ] {
                    out.f32(format!("{}.{s}", n.name), vec![v.len()], v);
                }
            }
            _ => {}
        }
    }
    for ad in adapters.iter().filter(|a| a.rank > 0) {
        let node = graph.find_layer(&ad.name)?;
        let (_, shape) = graph
            .weight(node)
            .ok_or_else(|| Error::Invalid(format!("export: {} has no weight", ad.name)))?;
        out.f32(
            format!("{}.adapter.a", ad.name),
            vec![ad.rank, shape[1], shape[2], shape[3]],
            &ad.a,
        );
        out.f32(
            format!("{}.adapter.b", ad.name),
            vec![shape[0], ad.rank, 1, 1],
            &ad.b,
        );
    }
    let views = out
        .tensors
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("export: {e:?}")))?;
    let data = safetensors::serialize(views, &Some(md))
        .map_err(|e| Error::Invalid(format!("export: {e:?}")))?;
    write_atomic(path, &data)
}

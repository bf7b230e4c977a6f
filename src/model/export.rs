//! Save a model as safetensors with the same tensor names it was loaded with.
//! Quantized weights are stored dequantized (f32) for now, with the bit widths
//! in metadata.
use crate::model::graph::{Graph, Op};
use crate::util::write_atomic;
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

pub fn save(graph: &Graph, path: &Path) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for n in &graph.nodes {
        match &n.op {
            Op::Conv(c) => {
                tensors.push((
                    format!("{}.weight", n.name),
                    c.shape.to_vec(),
                    c.weight.clone(),
                ));
                if let Some(b) = &c.bias {
                    tensors.push((format!("{}.bias", n.name), vec![b.len()], b.clone()));
                }
            }
            Op::Linear(l) => {
                tensors.push((
                    format!("{}.weight", n.name),
                    vec![l.out_features, l.in_features],
                    l.weight.clone(),
                ));
                if let Some(b) = &l.bias {
                    tensors.push((format!("{}.bias", n.name), vec![b.len()], b.clone()));
                }
            }
            Op::BatchNorm(bn) => {
                for (s, v) in [
                    ("weight", &bn.gamma),
                    ("bias", &bn.beta),
                    ("running_mean", &bn.mean),
                    ("running_var", &bn.var),
                ] {
                    tensors.push((format!("{}.{s}", n.name), vec![v.len()], v.clone()));
                }
            }
            _ => {}
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("export: {e:?}")))?;
    let md: std::collections::HashMap<String, String> =
        graph.meta.file_metadata.clone().into_iter().collect();
    let data = safetensors::serialize(views, &Some(md))
        .map_err(|e| Error::Invalid(format!("export: {e:?}")))?;
    write_atomic(path, &data)
}

//! safetensors → `Graph`. The architecture is inferred from tensor names and
//! shapes; the file's metadata (`arch`, `family`, `mean`, `std`, `classes`,
//! `input_size`) overrides what inference cannot know. Other naming
//! conventions are mapped to torchvision's first (`naming`), so the
//! architectures read one set of names.
use crate::model::arch;
use crate::model::graph::Graph;
use crate::model::meta::{Family, ModelMeta};
use crate::model::naming;
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// What a safetensors error means for someone holding the file (the
/// crate's own names, e.g. `MetadataIncompleteBuffer`, say little).
fn describe(e: &safetensors::SafeTensorError, len: usize) -> String {
    use safetensors::SafeTensorError as E;
    let what = match e {
        E::HeaderTooSmall | E::InvalidHeaderLength => {
            format!("too short for its header ({len} bytes): truncated, or not a safetensors file")
        }
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization => {
            "its header is not safetensors JSON (another format, or damaged)".into()
        }
        E::HeaderTooLarge => {
            "not a safetensors file, or damaged (its first 8 bytes claim a header over 100 MB)"
                .into()
        }
        E::MetadataIncompleteBuffer | E::InvalidOffset(_) | E::TensorInvalidInfo => format!(
            "its tensors do not fill the file as its header says ({len} bytes): truncated or damaged"
        ),
        _ => String::new(),
    };
    if what.is_empty() {
        format!("{e:?}")
    } else {
        format!("{what} [{e:?}]")
    }
}

/// Named f32 tensors read from a file, with bookkeeping so that tensors the
/// architecture does not use are reported instead of silently ignored.
pub struct TensorStore {
    pub path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    used: BTreeSet<String>,
    pub metadata: BTreeMap<String, String>,
    /// The file's float tensor types other than F32 (`"F16"`, `"BF16"`,
    /// `"F64"`): weights are converted to f32 on load.
    pub float_types: BTreeSet<String>,
    /// Rank of each layer's CoRa adapter, merged into its weight on load.
    pub adapter_ranks: BTreeMap<String, usize>,
}

impl TensorStore {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::Safetensors {
            path: path.to_path_buf(),
            reason,
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(describe(&e, bytes.len())))?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(describe(&e, bytes.len())))?;
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut tensors = HashMap::new();
        let mut float_types = BTreeSet::new();
        for (raw_name, view) in st.iter() {
            // DataParallel checkpoints prefix every key with `module.`.
            let name = raw_name
                .strip_prefix("module.")
                .unwrap_or(raw_name)
                .to_string();
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let data = view.data();
            if matches!(view.dtype(), Dtype::F16 | Dtype::BF16 | Dtype::F64) {
                float_types.insert(format!("{:?}", view.dtype()));
            }
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                // Integer tensors: quantized exports (codes, zero points) are read as
                // their numeric values; the quantized loader interprets them.
                Dtype::I8 => data.iter().map(|&b| b as i8 as f32).collect(),
                Dtype::U8 => data.iter().map(|&b| b as f32).collect(),
                Dtype::I32 => data
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                    .collect(),
                other => {
                    return Err(Error::Tensor {
                        path: path.to_path_buf(),
                        tensor: name,
                        problem: format!(
                            "unsupported dtype {other:?} (expected F32, F16, BF16 or F64)"
                        ),
                    })
                }
            };
            // A NaN or ∞ would run through every kernel and quantizer and
            // come out as a plausible-looking accuracy; say so here instead.
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(Error::Tensor {
                    path: path.to_path_buf(),
                    tensor: name,
                    problem: format!(
                        "{bad} of its {} values are NaN or infinite: the checkpoint is damaged (or was saved from a diverged run)",
                        values.len()
                    ),
                });
            }
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        naming::to_torchvision(&mut tensors);
        let mut store = TensorStore {
            path: path.to_path_buf(),
            tensors,
            used: BTreeSet::new(),
            metadata,
            float_types,
            adapter_ranks: BTreeMap::new(),
        };
        store.dequantize_packed()?;
        store.merge_adapters()?;
        Ok(store)
    }

    /// CoRa adapters saved by `model::export`: `W += B·A`.
    fn merge_adapters(&mut self) -> Result<()> {
        let names: Vec<String> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_suffix(".adapter.a").map(String::from))
            .collect();
        for name in names {
            let bad = |problem: String| Error::Tensor {
                path: self.path.clone(),
                tensor: format!("{name}.adapter.a"),
                problem,
            };
            let (sa, a) = self
                .tensors
                .remove(&format!("{name}.adapter.a"))
                .ok_or_else(|| bad("missing".into()))?;
            let (sb, b) = self
                .tensors
                .remove(&format!("{name}.adapter.b"))
                .ok_or_else(|| bad("`.adapter.b` is missing".into()))?;
            let (sw, w) = self
                .tensors
                .get_mut(&format!("{name}.weight"))
                .ok_or_else(|| bad("the layer's weight is missing".into()))?;
            let (n, r) = (
                sb.first().copied().unwrap_or(0),
                sa.first().copied().unwrap_or(0),
            );
            let d: usize = sa.iter().skip(1).product();
            if sb.get(1) != Some(&r)
                || sw.first() != Some(&n)
                || w.len() != n * d
                || a.len() != r * d
                || b.len() != n * r
            {
                return Err(bad(format!(
                    "adapter shapes {sa:?} and {sb:?} do not fit weight {sw:?}"
                )));
            }
            self.adapter_ranks.insert(name.clone(), r);
            for row in 0..n {
                for k in 0..r {
                    let bv = b[row * r + k];
                    for (o, av) in w[row * d..(row + 1) * d]
                        .iter_mut()
                        .zip(&a[k * d..(k + 1) * d])
                    {
                        *o += bv * av;
                    }
                }
            }
        }
        Ok(())
    }

    /// Turn qscope's packed layers (`{layer}.weight.qcodes` + scales, see
    /// `model::export`) back into f32 `{layer}.weight` tensors.
    fn dequantize_packed(&mut self) -> Result<()> {
        let entries: Vec<(String, String)> = self
            .metadata
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("qscope.q.")
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect();
        for (name, spec) in entries {
            let bad = |problem: String| Error::Tensor {
                path: self.path.clone(),
                tensor: format!("{name}.weight.qcodes"),
                problem,
            };
            let v: serde_json::Value = serde_json::from_str(&spec)
                .map_err(|e| bad(format!("metadata is not JSON: {e}")))?;
            let bits = v["bits"]
                .as_u64()
                .filter(|b| (1..=8).contains(b))
                .ok_or_else(|| bad("metadata has no valid `bits`".into()))?
                as u8;
            let shape: Vec<usize> = v["shape"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().map(|x| x as usize))
                        .collect()
                })
                .unwrap_or_default();
            if shape.is_empty() || shape.contains(&0) || shape.len() > 4 {
                return Err(bad("metadata has no valid `shape`".into()));
            }
            let mut take = |suffix: &str| {
                self.tensors
                    .remove(&format!("{name}.weight.{suffix}"))
                    .map(|(_, v)| v)
            };
            let codes = take("qcodes").ok_or_else(|| bad("missing".into()))?;
            let scale = take("qscale").ok_or_else(|| bad("missing `.qscale`".into()))?;
            let zero = take("qzero").ok_or_else(|| bad("missing `.qzero`".into()))?;
            let col = take("qcol");
            let count: usize = shape.iter().product();
            let bytes: Vec<u8> = codes.iter().map(|&v| v as u8).collect();
            let codes = crate::quant::packing::unpack(&bytes, bits, count).ok_or_else(|| {
                bad(format!(
                    "{} bytes is too short for {count} {bits}-bit codes",
                    bytes.len()
                ))
            })?;
            if scale.len() != shape[0] || zero.len() != shape[0] {
                return Err(bad(format!(
                    "scale/zero have {}/{} values for {} rows",
                    scale.len(),
                    zero.len(),
                    shape[0]
                )));
            }
            let mut s4 = [1usize; 4];
            for (d, v) in s4.iter_mut().zip(&shape) {
                *d = *v;
            }
            if let Some(c) = &col {
                if c.len() != s4[1] {
                    return Err(bad(format!(
                        "`.qcol` has {} values for {} input channels",
                        c.len(),
                        s4[1]
                    )));
                }
            }
            let q = crate::quant::packing::QuantizedLayer {
                name: name.clone(),
                storage_bits: bits,
                codes,
                row_scale: scale,
                row_zero: zero,
                col_scale: col,
                shape: s4,
            };
            self.tensors
                .insert(format!("{name}.weight"), (shape, q.dequantize()));
        }
        Ok(())
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|(s, _)| s.as_slice())
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Take a tensor, checking its shape; `None` in `expected` means "any size".
    pub fn take(&mut self, name: &str, expected: &[Option<usize>]) -> Result<Vec<f32>> {
        let (shape, values) = self.tensors.get(name).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            problem: format!("missing (expected shape {})", fmt_shape(expected)),
        })?;
        let fits = shape.len() == expected.len()
            && shape
                .iter()
                .zip(expected)
                .all(|(a, e)| e.is_none_or(|e| e == *a));
        if !fits {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                problem: format!("has shape {shape:?}, expected {}", fmt_shape(expected)),
            });
        }
        self.used.insert(name.to_string());
        Ok(values.clone())
    }

    /// Error if the file holds tensors the architecture did not use.
    pub fn finish(&self) -> Result<()> {
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k))
            .collect();
        extra.sort();
        if let Some(first) = extra.first() {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: (*first).clone(),
                problem: format!(
                    "not used by the inferred architecture ({} unexpected tensor(s): {})",
                    extra.len(),
                    extra
                        .iter()
                        .take(5)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(())
    }
}

fn fmt_shape(expected: &[Option<usize>]) -> String {
    let parts: Vec<String> = expected
        .iter()
        .map(|e| e.map_or("?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Load a model file into a graph (BN kept as separate nodes; call
/// `Graph::fused` for fast inference).
pub fn load(path: &Path) -> Result<Graph> {
    let mut store = TensorStore::open(path)?;
    let graph = build(&mut store)?;
    store.finish()?;
    Ok(graph)
}

pub fn build(store: &mut TensorStore) -> Result<Graph> {
    let path = store.path.clone();
    let arch_err = |reason: String| Error::Architecture {
        path: path.clone(),
        reason,
    };
    let md = store.metadata.clone();
    let meta_family = match md.get("family").map(String::as_str) {
        Some("cifar") => Some(Family::Cifar),
        Some("imagenet") => Some(Family::Imagenet),
        Some(other) => {
            return Err(arch_err(format!(
                "metadata family `{other}` is not `cifar` or `imagenet`"
            )))
        }
        None => None,
    };
    let meta_size = match md.get("input_size") {
        Some(s) => Some(
            s.trim()
                .parse::<usize>()
                .map_err(|_| arch_err(format!("metadata input_size `{s}` is not a number")))?,
        ),
        None => None,
    };
    let (built, family, input_size, channels, default_arch) = if arch::vgg::detect(store) {
        let channels = store.shape("features.0.weight").map_or(3, |s| s[1]);
        let (built, shape) = arch::vgg::build(store, meta_size)?;
        let name = format!("vgg{}{}", built.4, if shape.batchnorm { "_bn" } else { "" });
        let family = meta_family.unwrap_or(shape.family);
        (built, family, shape.input_size, channels, name)
    } else {
        let stem = store
            .shape("conv1.weight")
            .ok_or_else(|| {
                arch_err(
                    "no `conv1.weight` (ResNet) or `features.0.weight` (VGG) tensor: \
                     not an architecture qscope knows"
                        .into(),
                )
            })?
            .to_vec();
        if stem.len() != 4 {
            return Err(arch_err(format!(
                "`conv1.weight` has shape {stem:?}, expected 4 dimensions"
            )));
        }
        let family = meta_family.unwrap_or(if stem[2] == 7 {
            Family::Imagenet
        } else {
            Family::Cifar
        });
        let built = arch::resnet::build(store, family)?;
        let default_size = match (family, stem[1]) {
            (Family::Imagenet, _) => 224,
            (Family::Cifar, 1) => 28,
            (Family::Cifar, _) => 32,
        };
        let name = format!("resnet{}", built.4);
        (
            built,
            family,
            meta_size.unwrap_or(default_size),
            stem[1],
            name,
        )
    };
    let (nodes, num_values, output, num_classes, _depth) = built;
    let (mut mean, mut std) = ModelMeta::default_norm(channels);
    if let Some(m) = md.get("mean") {
        mean = parse_floats(m)
            .ok_or_else(|| arch_err(format!("metadata mean `{m}` is not a list of numbers")))?;
    }
    if let Some(s) = md.get("std") {
        std = parse_floats(s)
            .ok_or_else(|| arch_err(format!("metadata std `{s}` is not a list of numbers")))?;
    }
    if mean.len() != channels || std.len() != channels {
        return Err(arch_err(format!(
            "mean/std have {}/{} values for {channels} input channels",
            mean.len(),
            std.len()
        )));
    }
    let class_names = md.get("classes").map(|c| {
        c.split(',')
            .map(|s| s.trim().to_string())
            .collect::<Vec<_>>()
    });
    let arch_name = md.get("arch").cloned().unwrap_or(default_arch);
    // W8A8 activation scales saved by `model::export`.
    let mut nodes = nodes;
    for n in &mut nodes {
        let key = format!("{}.input_scale", n.name);
        if store.has(&key) {
            let s = store.take(&key, &[Some(1)])?[0];
            match &mut n.op {
                crate::model::Op::Conv(c) => c.act_scale = Some(s),
                crate::model::Op::Linear(l) => l.act_scale = Some(s),
                _ => {}
            }
        }
    }
    let meta = ModelMeta {
        arch: arch_name,
        family,
        source: path.clone(),
        num_classes,
        input_channels: channels,
        input_size,
        resize: (family == Family::Imagenet).then_some(input_size * 8 / 7),
        mean,
        std,
        class_names,
        file_metadata: md,
        stored_floats: store.float_types.iter().cloned().collect(),
        adapter_ranks: store.adapter_ranks.clone(),
    };
    Ok(Graph {
        nodes,
        num_values,
        output,
        meta,
    })
}

fn parse_floats(s: &str) -> Option<Vec<f32>> {
    s.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|v| v.trim().parse().ok())
        .collect()
}

//! VGG-style plain CNNs in torchvision naming: `features.{i}` convs,
//! each optionally followed by BatchNorm at `features.{i+1}`, with a ReLU
//! after it and 2×2 max-pools between blocks, then `classifier.{j}` linear
//! layers with ReLU (and dropout, nothing at inference) between them, or a
//! single `classifier` linear (CIFAR variants).
//!
//! ReLUs and pools have no parameters, so their places come from the gaps
//! in the module indices: after conv `i` (and its BN) the ReLU takes the
//! next index, and every further index before the next conv is a max-pool.
//! The features end with a max-pool, as in every VGG configuration; that
//! pool has no index to find, so it is assumed.
use super::builder::GraphBuilder;
use super::Built;
use crate::model::graph::Op;
use crate::model::loader::TensorStore;
use crate::model::meta::Family;
use crate::{Error, Result};

/// What the builder found beyond the graph: the family (ImageNet when the
/// classifier reads a 7×7 map, as torchvision's adaptive pool makes) and the
/// input side the classifier implies.
pub struct VggShape {
    pub family: Family,
    pub input_size: usize,
    pub batchnorm: bool,
}

/// True when the file looks like a VGG (its first conv is `features.0`).
pub fn detect(store: &TensorStore) -> bool {
    store
        .shape("features.0.weight")
        .is_some_and(|s| s.len() == 4)
}

/// Modules of `features` that have parameters, by index.
enum Module {
    Conv,
    BatchNorm,
}

pub fn build(store: &mut TensorStore, input_size: Option<usize>) -> Result<(Built, VggShape)> {
    let path = store.path.clone();
    let arch_err = |reason: String| Error::Architecture {
        path: path.clone(),
        reason,
    };
    let mut modules: std::collections::BTreeMap<usize, Module> = Default::default();
    for name in store.names() {
        let Some(rest) = name.strip_prefix("features.") else {
            continue;
        };
        let Some((idx, param)) = rest.split_once('.') else {
            continue;
        };
        let Ok(idx) = idx.parse::<usize>() else {
            return Err(arch_err(format!(
                "`{name}`: expected features.<index>.<param>"
            )));
        };
        let kind = match param {
            "running_mean" => Module::BatchNorm,
            "weight" if store.shape(name).is_some_and(|s| s.len() == 4) => Module::Conv,
            _ => continue,
        };
        modules.insert(idx, kind);
    }
    let in_ch = store.shape("features.0.weight").map_or(3, |s| s[1]);
    let mut b = GraphBuilder::new(store);
    let (mut x, mut c) = (0, in_ch);
    // The next module index with no parameters to read yet.
    let mut next = 0;
    let (mut convs, mut pools, mut batchnorm) = (0, 0, false);
    let list: Vec<(usize, &Module)> = modules.iter().map(|(i, m)| (*i, m)).collect();
    let mut k = 0;
    while k < list.len() {
        let (i, m) = list[k];
        if !matches!(m, Module::Conv) {
            return Err(arch_err(format!(
                "features.{i} is a BatchNorm that follows no conv"
            )));
        }
        // Every index skipped since the last ReLU is a max-pool.
        for p in next..i {
            x = b.op(&format!("features.{p}"), max_pool(), vec![x]);
            pools += 1;
        }
        // 3×3 in every torchvision VGG; VGG-16's configuration C also has
        // 1×1 convs. Either way stride 1 with "same" padding (k / 2).
        let (y, cout) = b.conv(x, &format!("features.{i}"), c, None, None, 1)?;
        x = y;
        let mut relu_at = i + 1;
        if let Some((j, Module::BatchNorm)) = list.get(k + 1) {
            if *j != i + 1 {
                return Err(arch_err(format!(
                    "features.{j} is a BatchNorm that does not directly follow conv features.{i}"
                )));
            }
            x = b.batchnorm(x, &format!("features.{j}"), cout)?;
            batchnorm = true;
            relu_at = i + 2;
            k += 1;
        }
        x = b.op(&format!("features.{relu_at}"), Op::Relu, vec![x]);
        next = relu_at + 1;
        c = cout;
        convs += 1;
        k += 1;
    }
    if convs == 0 {
        return Err(arch_err("no conv in `features`".into()));
    }
    x = b.op(&format!("features.{next}"), max_pool(), vec![x]);
    pools += 1;

    // The classifier: `classifier.{j}` linears in index order, or one `classifier`.
    let heads = b.linear_names("classifier");
    let Some(first) = heads.first() else {
        return Err(arch_err(
            "no classifier tensor (`classifier.0.weight` or `classifier.weight`)".into(),
        ));
    };
    let in_features = b
        .store
        .shape(&format!("{first}.weight"))
        .filter(|s| s.len() == 2)
        .map(|s| s[1])
        .ok_or_else(|| arch_err(format!("`{first}.weight` is not a 2-D linear weight")))?;
    // The map the classifier reads: side² · channels.
    let side = Some((in_features / c.max(1)).isqrt())
        .filter(|s| *s > 0 && s * s * c == in_features)
        .ok_or_else(|| {
            arch_err(format!(
            "`{first}.weight` reads {in_features} features, not {c} channels times a square map"
        ))
        })?;
    let family = if side == 7 {
        Family::Imagenet
    } else {
        Family::Cifar
    };
    let scale = 1usize << pools;
    let input_size = input_size.unwrap_or(match (family, in_ch) {
        (Family::Imagenet, _) => 224,
        // One feature per channel: global pooling makes any input work.
        (Family::Cifar, 1) if side == 1 => 28,
        (Family::Cifar, _) if side == 1 => 32,
        (Family::Cifar, _) => side * scale,
    });
    let after = input_size / scale;
    if after == 0 {
        return Err(arch_err(format!(
            "a {input_size}×{input_size} input is smaller than the {pools} max-pools allow"
        )));
    }
    // torchvision's adaptive average pool to the classifier's map: exact
    // when it divides the features' side (224 → 7×7 → 7×7 is a no-op).
    if after != side {
        if side == 1 {
            x = b.op("avgpool", Op::GlobalAvgPool, vec![x]);
        } else if after.is_multiple_of(side) {
            let k = after / side;
            x = b.op(
                "avgpool",
                Op::AvgPool {
                    kernel: k,
                    stride: k,
                    pad: 0,
                },
                vec![x],
            );
        } else {
            return Err(arch_err(format!(
                "the features end {after}×{after} for a {input_size}×{input_size} input, \
                 but the classifier reads {side}×{side}: set the metadata input_size"
            )));
        }
    }
    x = b.op("flatten", Op::Flatten, vec![x]);
    let (x, width) = b.linears(x, &heads, in_features)?;
    let depth = convs + heads.len();
    Ok((
        (b.nodes, b.num_values, x, width, depth),
        VggShape {
            family,
            input_size,
            batchnorm,
        },
    ))
}

fn max_pool() -> Op {
    Op::MaxPool {
        kernel: 2,
        stride: 2,
        pad: 0,
    }
}

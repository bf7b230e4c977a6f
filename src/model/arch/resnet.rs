//! ResNets of any depth and stage widths, CIFAR-style (3×3 stem) and
//! torchvision ImageNet-style (7×7 stride-2 stem + max-pool), with basic or
//! bottleneck blocks. Shortcuts: `downsample.{0,1}` (torchvision),
//! `shortcut.{0,1}` (kuangliu), or parameter-free "option A" (akamaster).
use super::builder::GraphBuilder;
use super::Built;
use crate::model::graph::Op;
use crate::model::loader::TensorStore;
use crate::model::meta::Family;
use crate::{Error, Result};

pub fn build(store: &mut TensorStore, family: Family) -> Result<Built> {
    let path = store.path.clone();
    let arch_err = |reason: String| Error::Architecture {
        path: path.clone(),
        reason,
    };
    let in_ch = store.shape("conv1.weight").map_or(3, |s| s[1]);
    let mut b = GraphBuilder::new(store);
    let stages = b.stages();
    if stages.is_empty() {
        return Err(arch_err("no `layerN.M.*` tensors: not a ResNet".into()));
    }
    for (k, (l, blocks)) in stages.iter().enumerate() {
        if *l != k + 1 {
            return Err(arch_err(format!(
                "stages must be numbered layer1, layer2, …; found layer{l} in position {}",
                k + 1
            )));
        }
        if blocks.iter().enumerate().any(|(j, i)| j != *i) {
            return Err(arch_err(format!(
                "blocks of layer{l} are not numbered 0..{}",
                blocks.len()
            )));
        }
    }
    // A pre-activation ResNet (kuangliu's PreActResNet, Wide ResNets) has
    // no BatchNorm after the stem: each block normalises its input before
    // its convs. Said here, or the error would be a `bn1.weight` "missing"
    // from a file that is not damaged.
    if !b.store.has("bn1.weight") && b.store.has("layer1.0.bn1.weight") {
        return Err(arch_err(
            "no `bn1` after the stem but `layer1.0.bn1` in the blocks: a pre-activation ResNet \
             (BatchNorm before each conv), which qscope does not run; it runs post-activation \
             ResNets (conv → BN → ReLU)"
                .into(),
        ));
    }
    let bottleneck = b.store.has("layer1.0.conv3.weight");
    let (stem_k, stem_stride) = match family {
        Family::Cifar => (3, 1),
        Family::Imagenet => (7, 2),
    };
    let (mut x, mut c) = b.conv_bn(0, "conv1", "bn1", in_ch, None, Some(stem_k), stem_stride)?;
    x = b.op("relu", Op::Relu, vec![x]);
    if family == Family::Imagenet {
        x = b.op(
            "maxpool",
            Op::MaxPool {
                kernel: 3,
                stride: 2,
                pad: 1,
            },
            vec![x],
        );
    }
    let mut blocks_total = 0;
    for (l, blocks) in &stages {
        for &i in blocks {
            let pre = format!("layer{l}.{i}");
            let stride = if *l > 1 && i == 0 { 2 } else { 1 };
            let input = x;
            let y = if bottleneck {
                let (y, m) = b.conv_bn(
                    x,
                    &format!("{pre}.conv1"),
                    &format!("{pre}.bn1"),
                    c,
                    None,
                    Some(1),
                    1,
                )?;
                let y = b.op(&format!("{pre}.relu1"), Op::Relu, vec![y]);
                let (y, m2) = b.conv_bn(
                    y,
                    &format!("{pre}.conv2"),
                    &format!("{pre}.bn2"),
                    m,
                    None,
                    Some(3),
                    stride,
                )?;
                let y = b.op(&format!("{pre}.relu2"), Op::Relu, vec![y]);
                b.conv_bn(
                    y,
                    &format!("{pre}.conv3"),
                    &format!("{pre}.bn3"),
                    m2,
                    None,
                    Some(1),
                    1,
                )?
            } else {
                let (y, m) = b.conv_bn(
                    x,
                    &format!("{pre}.conv1"),
                    &format!("{pre}.bn1"),
                    c,
                    None,
                    Some(3),
                    stride,
                )?;
                let y = b.op(&format!("{pre}.relu1"), Op::Relu, vec![y]);
                b.conv_bn(
                    y,
                    &format!("{pre}.conv2"),
                    &format!("{pre}.bn2"),
                    m,
                    None,
                    Some(3),
                    1,
                )?
            };
            let (y, cout) = y;
            let shortcut = ["downsample", "shortcut"]
                .into_iter()
                .find(|s| b.store.has(&format!("{pre}.{s}.0.weight")));
            let skip = if let Some(s) = shortcut {
                b.conv_bn(
                    input,
                    &format!("{pre}.{s}.0"),
                    &format!("{pre}.{s}.1"),
                    c,
                    Some(cout),
                    Some(1),
                    stride,
                )?
                .0
            } else if stride != 1 || c != cout {
                if cout < c {
                    return Err(arch_err(format!(
                        "{pre}: channels shrink from {c} to {cout} without a shortcut conv"
                    )));
                }
                let pad_before = (cout - c) / 2;
                b.op(
                    &format!("{pre}.shortcut"),
                    Op::ShortcutPad {
                        stride,
                        pad_before,
                        pad_after: cout - c - pad_before,
                    },
                    vec![input],
                )
            } else {
                input
            };
            let sum = b.op(&format!("{pre}.add"), Op::Add, vec![y, skip]);
            x = b.op(&format!("{pre}.relu"), Op::Relu, vec![sum]);
            c = cout;
            blocks_total += 1;
        }
    }
    let heads = b.classifier_names();
    if heads.is_empty() {
        return Err(arch_err(
            "no classifier tensor (`fc.weight`, `linear.weight` or `fc.N.weight`)".into(),
        ));
    }
    let x = b.op("avgpool", Op::GlobalAvgPool, vec![x]);
    let x = b.op("flatten", Op::Flatten, vec![x]);
    let (out, classes) = b.linears(x, &heads, c)?;
    let depth = blocks_total * if bottleneck { 3 } else { 2 } + 2;
    Ok((b.nodes, b.num_values, out, classes, depth))
}

//! Other naming conventions mapped to torchvision's before an architecture
//! is inferred, so that `arch` reads one set of names: wrapper modules
//! (`model.`, `_orig_mod.` …) dropped, and Hugging Face `transformers`
//! ResNets renamed. Exports use the mapped (torchvision) names.
use std::collections::HashMap;

/// Every mapping, in order: wrappers first, so a wrapped Hugging Face
/// checkpoint is recognised too.
pub fn to_torchvision<T>(tensors: &mut HashMap<String, T>) {
    strip_wrappers(tensors);
    if tensors
        .keys()
        .any(|k| k.contains("embedder.embedder.convolution."))
    {
        rename(tensors, hf_resnet_name);
    }
}

/// Training code often keeps the network one module down: `model.`
/// (PyTorch Lightning), `_orig_mod.` (`torch.compile`), `net.`,
/// `backbone.` … A bare network always has several top-level modules (a
/// stem and a classifier at least), so when every tensor shares its first
/// name component that component is such a wrapper: drop it, as often as
/// it repeats (`model._orig_mod.`). Returns the prefixes dropped.
pub fn strip_wrappers<T>(tensors: &mut HashMap<String, T>) -> Vec<String> {
    let mut dropped = Vec::new();
    loop {
        let mut first: Option<&str> = None;
        let shared = !tensors.is_empty()
            && tensors.keys().all(|k| match k.split_once('.') {
                Some((head, _)) => *first.get_or_insert(head) == head,
                None => false,
            });
        let Some(head) = first.filter(|_| shared).map(|h| format!("{h}.")) else {
            return dropped;
        };
        rename(tensors, |k| Some(k[head.len()..].to_string()));
        dropped.push(head);
    }
}

/// Each name through `map`; names it does not map stay as they are (and
/// are reported later as tensors the architecture does not use).
fn rename<T>(tensors: &mut HashMap<String, T>, map: impl Fn(&str) -> Option<String>) {
    *tensors = std::mem::take(tensors)
        .into_iter()
        .map(|(k, v)| (map(&k).unwrap_or(k), v))
        .collect();
}

/// A Hugging Face `ResNetForImageClassification` name (`microsoft/resnet-18`,
/// `-50` …) as torchvision's: the same network (7×7 stem and max-pool,
/// stride in the 3×3 conv, projection shortcuts), with each conv and its
/// BatchNorm in one `ResNetConvLayer`:
/// - `resnet.embedder.embedder.{convolution,normalization}` → `conv1`, `bn1`
/// - `resnet.encoder.stages.S.layers.I.layer.J.…` → `layer{S+1}.I.conv{J+1}`, `bn{J+1}`
/// - `….shortcut.…` → `….downsample.{0,1}`
/// - `classifier.1` (after a Flatten) → `fc`
fn hf_resnet_name(k: &str) -> Option<String> {
    let k = k.strip_prefix("resnet.").unwrap_or(k);
    if let Some(rest) = k.strip_prefix("embedder.embedder.") {
        return conv_layer(rest, "conv1", "bn1");
    }
    if let Some(rest) = k.strip_prefix("encoder.stages.") {
        let (s, rest) = rest.split_once('.')?;
        let (i, rest) = rest.strip_prefix("layers.")?.split_once('.')?;
        let (s, i) = (s.parse::<usize>().ok()?, i.parse::<usize>().ok()?);
        let block = format!("layer{}.{i}", s + 1);
        if let Some(r) = rest.strip_prefix("shortcut.") {
            let (conv, bn) = (
                format!("{block}.downsample.0"),
                format!("{block}.downsample.1"),
            );
            return conv_layer(r, &conv, &bn);
        }
        let (j, r) = rest.strip_prefix("layer.")?.split_once('.')?;
        let j = j.parse::<usize>().ok()? + 1;
        return conv_layer(r, &format!("{block}.conv{j}"), &format!("{block}.bn{j}"));
    }
    k.strip_prefix("classifier.1.").map(|r| format!("fc.{r}"))
}

/// `convolution.X` → `{conv}.X`, `normalization.X` → `{bn}.X`.
fn conv_layer(rest: &str, conv: &str, bn: &str) -> Option<String> {
    match rest.split_once('.')? {
        ("convolution", r) => Some(format!("{conv}.{r}")),
        ("normalization", r) => Some(format!("{bn}.{r}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_resnet_names_map_to_torchvision() {
        for (hf, tv) in [
            (
                "resnet.embedder.embedder.convolution.weight",
                "conv1.weight",
            ),
            (
                "resnet.embedder.embedder.normalization.running_var",
                "bn1.running_var",
            ),
            (
                "resnet.encoder.stages.0.layers.1.layer.2.convolution.weight",
                "layer1.1.conv3.weight",
            ),
            (
                "resnet.encoder.stages.3.layers.0.layer.0.normalization.bias",
                "layer4.0.bn1.bias",
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.convolution.weight",
                "layer2.0.downsample.0.weight",
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.normalization.weight",
                "layer2.0.downsample.1.weight",
            ),
            ("classifier.1.bias", "fc.bias"),
        ] {
            assert_eq!(hf_resnet_name(hf).as_deref(), Some(tv), "{hf}");
        }
        assert_eq!(
            hf_resnet_name("resnet.encoder.stages.x.layers.0.layer.0.convolution.weight"),
            None
        );
        assert_eq!(hf_resnet_name("resnet.pooler.weight"), None);
    }
}

//! What a model expects of its input, and where it came from.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// 3×3 stem, no max-pool, 32×32 (CIFAR) or 28×28 (MNIST) inputs.
    Cifar,
    /// 7×7 stride-2 stem and max-pool, 224×224 inputs after resize 256 / crop 224.
    Imagenet,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelMeta {
    pub arch: String,
    pub family: Family,
    pub source: PathBuf,
    pub num_classes: usize,
    pub input_channels: usize,
    /// Side of the square network input.
    pub input_size: usize,
    /// Resize the shorter side to this before the centre crop (ImageNet models).
    pub resize: Option<usize>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Class names stored in the file's metadata, if any.
    pub class_names: Option<Vec<String>>,
    /// Metadata of the safetensors file, kept so an export can carry it on.
    pub file_metadata: std::collections::BTreeMap<String, String>,
    /// Float types the file stored its tensors in, other than F32 (say
    /// `["F16"]`); qscope computes in f32 either way.
    pub stored_floats: Vec<String>,
    /// Rank of each layer's CoRa adapter (`{layer}.adapter.a/b`), already
    /// added to the layer's weight.
    pub adapter_ranks: std::collections::BTreeMap<String, usize>,
}

impl ModelMeta {
    /// Normalisation defaults per family: ImageNet statistics for RGB
    /// (what the bundled CIFAR ResNet-20 was trained with), MNIST's for grey.
    pub fn default_norm(channels: usize) -> (Vec<f32>, Vec<f32>) {
        if channels == 1 {
            (vec![0.1307], vec![0.3081])
        } else {
            (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
        }
    }
}

//! Parameter count and sizes: FP32 in memory, and the file on disk.
use crate::model::Graph;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizeReport {
    pub params: usize,
    pub memory_bytes: usize,
    pub file_bytes: Option<u64>,
}

impl SizeReport {
    pub fn of(graph: &Graph) -> Self {
        let params = graph.param_count();
        SizeReport {
            params,
            memory_bytes: params * 4,
            file_bytes: std::fs::metadata(&graph.meta.source).ok().map(|m| m.len()),
        }
    }
}

/// Bytes of a quantized model stored bit-packed: each layer's codes at its bit
/// width (GPFQ's 2^b+1-level alphabet needs b+1 bits), a 4-byte scale and
/// 4-byte zero point per output channel, and every other parameter as f32.
pub fn packed_bytes(graph: &Graph, bits: &[u8], extra_level: bool) -> u64 {
    let layers = graph.layers();
    let mut total = 0u64;
    let mut weights = 0usize;
    for (l, &b) in layers.iter().zip(bits) {
        let n: usize = l.shape.iter().product();
        weights += n;
        let storage = b as u64 + u64::from(extra_level);
        total += (n as u64 * storage).div_ceil(8) + l.shape[0] as u64 * 8;
    }
    total + ((graph.param_count() - weights) * 4) as u64
}

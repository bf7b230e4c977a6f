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

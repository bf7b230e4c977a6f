//! Round-to-nearest: every weight to its nearest grid level, no data.
use crate::quant::grid::RowGrid;

pub fn rtn(w: &[f32], grids: &[RowGrid]) -> Vec<f32> {
    let d = w.len() / grids.len().max(1);
    w.chunks(d.max(1))
        .zip(grids)
        .flat_map(|(row, g)| row.iter().map(move |&v| g.quantize(v)))
        .collect()
}

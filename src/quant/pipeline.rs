//! The sequential driver: run the FP network and the network-being-quantized
//! side by side over the calibration batch, node by node. At each quantizable
//! layer, capture both inputs (X from FP, X̃ from the quantized prefix),
//! quantize, swap the weight into the quantized network, and move on — so each
//! layer sees the inputs it will see at test time, with no O(L²) re-runs.
use crate::engine::ops::{self, Epilogue};
use crate::engine::Tensor;
use crate::model::{Graph, Op, Runner};
use crate::quant::bits::BitsMap;
use crate::quant::gptq::{gptq, GptqOptions};
use crate::quant::grid::{fit_rows, GridKind};
use crate::quant::metrics::{histogram_pair, mse, relative_error, sqnr_db, Histogram};
use crate::quant::stats::{gram, gram_pair_sampled, LayerGeom};
use crate::quant::{gpfq, rtn};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Rtn,
    Gptq,
    Gpfq,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Rtn, Method::Gptq, Method::Gpfq];
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Gpfq => "gpfq",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s.to_ascii_lowercase())
            .ok_or_else(|| Error::Invalid(format!("unknown method `{s}` (rtn, gptq, gpfq)")))
    }
    /// Whether the method reads calibration data (RTN only uses it for metrics).
    pub fn needs_data(self) -> bool {
        !matches!(self, Method::Rtn)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QuantConfig {
    pub method: Method,
    pub bits: BitsMap,
    /// Grid for RTN and GPTQ (GPFQ always uses its own mid-tread alphabet).
    #[serde(default)]
    pub grid: GridKind,
    #[serde(default = "yes")]
    pub per_channel: bool,
    /// MSE search over clipping ratios when fitting grids.
    #[serde(default)]
    pub mse_clip: bool,
    #[serde(default = "damping")]
    pub damping: f64,
    #[serde(default = "block")]
    pub block: usize,
    #[serde(default)]
    pub act_order: bool,
    /// GPFQ's alphabet scalar C (δ = C·rad/K).
    #[serde(default = "gpfq_c")]
    pub gpfq_c: f64,
    /// GPFQ's patch retain rate.
    #[serde(default = "retain")]
    pub gpfq_retain: f64,
    #[serde(default)]
    pub seed: u64,
    /// Calibration images used for the per-layer SQNR figure.
    #[serde(default = "sqnr_images")]
    pub sqnr_images: usize,
}

fn yes() -> bool {
    true
}
fn damping() -> f64 {
    0.01
}
fn block() -> usize {
    128
}
fn gpfq_c() -> f64 {
    1.16
}
fn retain() -> f64 {
    0.25
}
fn sqnr_images() -> usize {
    128
}

impl QuantConfig {
    pub fn new(method: Method, bits: u8) -> Self {
        QuantConfig {
            method,
            bits: BitsMap::uniform(bits),
            grid: GridKind::Asym,
            per_channel: true,
            mse_clip: false,
            damping: damping(),
            block: block(),
            act_order: false,
            gpfq_c: gpfq_c(),
            gpfq_retain: retain(),
            seed: 0,
            sqnr_images: sqnr_images(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerReport {
    pub index: usize,
    pub name: String,
    pub shape: [usize; 4],
    pub bits: u8,
    /// Mean squared weight error.
    pub mse: f64,
    /// ‖W − Q‖ / ‖W‖.
    pub rel_error: f64,
    /// Layer output on calibration images: FP network vs quantized network, dB.
    pub sqnr_db: f64,
    pub seconds: f64,
    pub hist_fp: Histogram,
    pub hist_q: Histogram,
    /// Quantization levels of the first output channel (for plotting).
    pub levels: Vec<f32>,
}

pub struct QuantOutcome {
    /// The input graph (unfused) with every quantizable weight replaced.
    pub graph: Graph,
    pub layers: Vec<LayerReport>,
    pub bits: Vec<u8>,
    pub seconds: f64,
}

fn layer_geom(op: &Op) -> Option<LayerGeom> {
    match op {
        Op::Conv(c) => Some(LayerGeom::Conv {
            shape: c.shape,
            geom: c.geom,
        }),
        Op::Linear(l) => Some(LayerGeom::Linear {
            in_features: l.in_features,
        }),
        _ => None,
    }
}

/// The layer's raw GEMM output (no bias, BN or activation) for SQNR.
fn raw_output(op: &Op, x: &Tensor, w: &[f32]) -> Result<Vec<f32>> {
    let out = match op {
        Op::Conv(c) => ops::conv2d(x, w, c.shape, c.geom, Epilogue::default()),
        Op::Linear(l) => ops::linear(x, w, l.out_features, None),
        _ => return Ok(vec![]),
    }
    .map_err(|problem| Error::Shape {
        layer: "sqnr".into(),
        problem,
    })?;
    Ok(out.into_raw_vec_and_offset().0)
}

fn head(x: &Tensor, k: usize) -> Tensor {
    x.slice(ndarray::s![..k.min(x.dim().0), .., .., ..])
        .to_owned()
}

/// Quantize every conv/linear layer of `graph` in forward order.
/// `on_layer(report, done, total)` is called as each layer finishes.
pub fn quantize_model(
    graph: &Graph,
    calib: &Tensor,
    cfg: &QuantConfig,
    cancel: &AtomicBool,
    on_layer: &mut dyn FnMut(&LayerReport, usize, usize),
) -> Result<QuantOutcome> {
    let start = Instant::now();
    let bits = cfg.bits.resolve(graph)?;
    if calib.dim().0 == 0 {
        return Err(Error::Invalid("no calibration images".into()));
    }
    let fp = graph.fused();
    let mut qg = fp.clone();
    // RTN needs data only for its SQNR figure: run the networks on a few images.
    let data = if cfg.method.needs_data() {
        calib.clone()
    } else {
        head(calib, cfg.sqnr_images)
    };
    let mut fp_run = Runner::new(&fp, data.clone())?;
    let mut q_run = Runner::new(&qg, data)?;
    let names = graph.layer_names();
    let total = names.len();
    let mut reports = Vec::with_capacity(total);
    let mut quantized = graph.clone();
    while let Some(node) = q_run.next_node(&qg) {
        if let Some(lg) = layer_geom(&qg.nodes[node].op) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let t0 = Instant::now();
            let name = qg.nodes[node].name.clone();
            let index = reports.len();
            let b = bits[index];
            let (w, shape) = qg
                .weight(node)
                .map(|(w, s)| (w.to_vec(), s))
                .ok_or_else(|| Error::Invalid(format!("{name}: no weight")))?;
            if let Op::Conv(c) = &qg.nodes[node].op {
                if c.geom.groups > 1 && cfg.method != Method::Rtn {
                    return Err(Error::Invalid(format!(
                        "{name}: grouped convolutions are supported by RTN only"
                    )));
                }
            }
            let (n, d) = (shape[0], w.len() / shape[0]);
            let x_q = q_run
                .input_of(&qg, node)
                .ok_or_else(|| Error::Invalid(format!("{name}: input not captured")))?;
            let x_fp = fp_run
                .input_of(&fp, node)
                .ok_or_else(|| Error::Invalid(format!("{name}: input not captured")))?;
            let grids = fit_rows(&w, n, b, cfg.grid, cfg.per_channel, cfg.mse_clip);
            let (q, levels) = match cfg.method {
                Method::Rtn => (rtn::rtn(&w, &grids), grids[0].levels()),
                Method::Gptq => {
                    let h = gram(x_q, lg);
                    let opt = GptqOptions {
                        damping: cfg.damping,
                        block: cfg.block,
                        act_order: cfg.act_order,
                    };
                    (gptq(&w, n, d, &h, &grids, opt, &name)?.q, grids[0].levels())
                }
                Method::Gpfq => {
                    let (g, ht) = gram_pair_sampled(
                        x_fp,
                        x_q,
                        lg,
                        cfg.gpfq_retain,
                        cfg.seed.wrapping_add(index as u64),
                    );
                    let (delta, k) = gpfq::alphabet_step(&w, n, b, cfg.gpfq_c);
                    let levels = (-k..=k).map(|i| (i as f64 * delta) as f32).collect();
                    (gpfq::gpfq_gram(&w, n, d, &g, &ht, delta, k), levels)
                }
            };
            let k = cfg.sqnr_images;
            let op = &qg.nodes[node].op;
            let y_ref = raw_output(op, &head(x_fp, k), &w)?;
            let y_q = raw_output(op, &head(x_q, k), &q)?;
            let (hist_fp, hist_q) = histogram_pair(&w, &q, 64);
            let report = LayerReport {
                index,
                name: name.clone(),
                shape,
                bits: b,
                mse: mse(&w, &q),
                rel_error: relative_error(&w, &q),
                sqnr_db: sqnr_db(&y_ref, &y_q),
                seconds: t0.elapsed().as_secs_f64(),
                hist_fp,
                hist_q,
                levels,
            };
            if let Some(wm) = qg.weight_mut(node) {
                wm.copy_from_slice(&q);
            }
            qg.refold();
            let target = quantized.find_layer(&name)?;
            if let Some(wm) = quantized.weight_mut(target) {
                wm.copy_from_slice(&q);
            }
            on_layer(&report, index + 1, total);
            reports.push(report);
        }
        fp_run.step(&fp)?;
        q_run.step(&qg)?;
    }
    Ok(QuantOutcome {
        graph: quantized,
        layers: reports,
        bits,
        seconds: start.elapsed().as_secs_f64(),
    })
}

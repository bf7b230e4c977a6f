//! The sequential driver: run the FP network and the network-being-quantized
//! side by side over the calibration batch, node by node. At each quantizable
//! layer, capture both inputs (X from FP, X̃ from the quantized prefix),
//! quantize, swap the weight into the quantized network, and move on — so each
//! layer sees the inputs it will see at test time, with no O(L²) re-runs.
use crate::engine::ops::{self, Epilogue};
use crate::engine::Tensor;
use crate::model::{Graph, Op, Runner};
use crate::quant::awq::{self, AwqOptions};
use crate::quant::bits::BitsMap;
use crate::quant::gptq::{gptq, GptqOptions};
use crate::quant::grid::{fit_rows, GridKind};
use crate::quant::metrics::{histogram_pair, mse, relative_error, sqnr_db, Histogram};
use crate::quant::packing::QuantizedLayer;
use crate::quant::stats::{gram, gram_pair_sampled, LayerGeom};
use crate::quant::{gpfq, rtn, smoothquant};
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
    Awq,
    /// AWQ with the Duke study's salient-channel upscaling and grid.
    #[serde(rename = "awq-salient")]
    AwqSalient,
    /// SmoothQuant W8A8: smoothed weights and static int8 activations.
    #[serde(rename = "smoothquant")]
    SmoothQuant,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Rtn,
        Method::Gptq,
        Method::Gpfq,
        Method::Awq,
        Method::AwqSalient,
        Method::SmoothQuant,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Gpfq => "gpfq",
            Method::Awq => "awq",
            Method::AwqSalient => "awq-salient",
            Method::SmoothQuant => "smoothquant",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown method `{s}` (rtn, gptq, gpfq, awq, awq-salient, smoothquant)"
                ))
            })
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
    /// SmoothQuant's migration strength α.
    #[serde(default = "sq_alpha")]
    pub sq_alpha: f64,
    /// AWQ's α grid (default 0, 0.05, …, 0.95); `[0]` reduces AWQ to RTN.
    #[serde(default)]
    pub awq_alphas: Option<Vec<f64>>,
}

fn sq_alpha() -> f64 {
    0.5
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
            sq_alpha: sq_alpha(),
            awq_alphas: None,
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
    /// Method-specific choice, e.g. AWQ's α.
    #[serde(default)]
    pub detail: Option<String>,
}

pub struct QuantOutcome {
    /// The fused graph with every quantizable weight replaced by its
    /// dequantized value (and activation scales set for W8A8).
    pub graph: Graph,
    pub layers: Vec<LayerReport>,
    pub bits: Vec<u8>,
    /// The integer form of every layer, for export and size.
    pub packed: Vec<QuantizedLayer>,
    pub seconds: f64,
}

impl QuantOutcome {
    /// Bytes stored: packed layers, activation scales, every other parameter as f32.
    pub fn stored_bytes(&self) -> u64 {
        let layers: usize = self.packed.iter().map(QuantizedLayer::stored_bytes).sum();
        let weights: usize = self.packed.iter().map(|p| p.codes.len()).sum();
        let act = self
            .graph
            .nodes
            .iter()
            .filter(|n| {
                matches!(&n.op, Op::Conv(c) if c.act_scale.is_some())
                    || matches!(&n.op, Op::Linear(l) if l.act_scale.is_some())
            })
            .count();
        (layers + (self.graph.param_count() - weights) * 4 + act * 4) as u64
    }
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

/// The layer's output before bias and activation — with BN's scale folded in
/// and the input fake-quantized where the layer has an activation scale — for SQNR.
fn layer_output(op: &Op, x: &Tensor) -> Result<Vec<f32>> {
    let out = match op {
        Op::Conv(c) => {
            let (w, _) = crate::model::exec::fold_conv(c);
            let x = crate::model::exec::fake_quant(x, c.act_scale);
            ops::conv2d(&x, &w, c.shape, c.geom, Epilogue::default())
        }
        Op::Linear(l) => ops::linear(
            &crate::model::exec::fake_quant(x, l.act_scale),
            &l.weight,
            l.out_features,
            None,
        ),
        _ => return Ok(vec![]),
    }
    .map_err(|problem| Error::Shape {
        layer: "sqnr".into(),
        problem,
    })?;
    Ok(out.into_raw_vec_and_offset().0)
}

/// Per-input-channel `mean |x|` (AWQ's activation scale).
fn channel_mean_abs(x: &Tensor) -> Vec<f64> {
    let c = x.dim().1;
    (0..c)
        .map(|ch| {
            let v = x.index_axis(ndarray::Axis(1), ch);
            v.iter().map(|a| a.abs() as f64).sum::<f64>() / v.len().max(1) as f64
        })
        .collect()
}

type CachedLayer = (Vec<f32>, LayerReport, QuantizedLayer);

/// Per-layer results of recent runs in this process. With sequential
/// calibration a layer's result depends only on the model, the calibration
/// data, the settings and the bits of the layers up to it — so a what-if
/// re-run (one layer's bits changed) reuses every layer before the change.
static LAYER_CACHE: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<u64, CachedLayer>>,
> = std::sync::LazyLock::new(Default::default);

fn run_cache_key(graph: &Graph, calib: &Tensor, cfg: &QuantConfig) -> u64 {
    let mut cfg = cfg.clone();
    cfg.bits = BitsMap::uniform(0); // the resolved per-layer bits enter the layer key instead
    let mut bytes = serde_json::to_vec(&cfg).unwrap_or_default();
    // Every weight and every calibration value (fnv over a few MB: milliseconds).
    for i in graph.layer_nodes() {
        if let Some((w, _)) = graph.weight(i) {
            bytes.extend(w.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    bytes.extend(graph.meta.source.to_string_lossy().as_bytes());
    bytes.extend(calib.iter().flat_map(|v| v.to_le_bytes()));
    bytes.extend(format!("{:?}", calib.dim()).as_bytes());
    crate::util::fnv1a64(&bytes)
}

fn layer_cache_key(run: u64, bits_so_far: &[u8]) -> u64 {
    let mut bytes = run.to_le_bytes().to_vec();
    bytes.extend_from_slice(bits_so_far);
    crate::util::fnv1a64(&bytes)
}

/// Calibration images as the smoothed graph expects them: its normalisation
/// std was multiplied by SmoothQuant's input scales, so divide accordingly.
fn data_for(smoothed: &Graph, original: &Graph, data: &Tensor) -> Tensor {
    let mut x = data.clone();
    for (c, (a, b)) in original.meta.std.iter().zip(&smoothed.meta.std).enumerate() {
        let r = a / b;
        if r != 1.0 {
            x.index_axis_mut(ndarray::Axis(1), c)
                .mapv_inplace(|v| v * r);
        }
    }
    x
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
    let run_key = run_cache_key(graph, calib, cfg);
    if calib.dim().0 == 0 {
        return Err(Error::Invalid("no calibration images".into()));
    }
    let fp = graph.fused();
    // RTN needs data only for its SQNR figure: run the networks on a few images.
    let data = if cfg.method.needs_data() {
        calib.clone()
    } else {
        head(calib, cfg.sqnr_images)
    };
    let mut qg = if cfg.method == Method::SmoothQuant {
        let mut g = smoothquant::fold_bn_into_weights(graph);
        smoothquant::smooth(&mut g, &data, cfg.sq_alpha)?;
        // Smoothing folded input scales into the normalisation: feed images normalised the new way.
        let smoothed_data = data_for(&g, graph, &data);
        smoothquant::calibrate_act_scales(&mut g, &smoothed_data)?;
        g
    } else {
        fp.clone()
    };
    let mut fp_run = Runner::new(&fp, data.clone())?;
    let mut q_run = Runner::new(
        &qg,
        if cfg.method == Method::SmoothQuant {
            data_for(&qg, graph, &data)
        } else {
            data
        },
    )?;
    let total = graph.layer_names().len();
    let mut reports = Vec::with_capacity(total);
    let mut packed = Vec::with_capacity(total);
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
            let k2 = shape[2] * shape[3];
            let x_q = q_run
                .input_of(&qg, node)
                .ok_or_else(|| Error::Invalid(format!("{name}: input not captured")))?;
            let x_fp = fp_run
                .input_of(&fp, node)
                .ok_or_else(|| Error::Invalid(format!("{name}: input not captured")))?;
            let cache_key = layer_cache_key(run_key, &bits[..=index]);
            let cached = LAYER_CACHE
                .lock()
                .ok()
                .and_then(|c| c.get(&cache_key).cloned());
            let (report, ql) = if let Some((q, mut report, ql)) = cached {
                // Same model, data, settings and bits up to here: the result is identical.
                if let Some(wm) = qg.weight_mut(node) {
                    wm.copy_from_slice(&q);
                }
                qg.refold();
                report.detail = Some(format!(
                    "reused{}",
                    report
                        .detail
                        .as_deref()
                        .map_or(String::new(), |d| format!(" · {d}"))
                ));
                report.seconds = t0.elapsed().as_secs_f64();
                (report, ql)
            } else {
                let grids = fit_rows(&w, n, b, cfg.grid, cfg.per_channel, cfg.mse_clip);
                let scales = |g: &[crate::quant::grid::RowGrid]| {
                    (
                        g.iter().map(|r| r.scale).collect::<Vec<_>>(),
                        g.iter().map(|r| r.zero).collect::<Vec<_>>(),
                    )
                };
                let mut detail = None;
                let (q, levels, ql) = match cfg.method {
                    Method::Rtn | Method::Gptq => {
                        let q = if cfg.method == Method::Rtn {
                            rtn::rtn(&w, &grids)
                        } else {
                            let h = gram(x_q, lg);
                            let opt = GptqOptions {
                                damping: cfg.damping,
                                block: cfg.block,
                                act_order: cfg.act_order,
                            };
                            let r = gptq(&w, n, d, &h, &grids, opt, &name)?;
                            if r.damping != cfg.damping {
                                detail = Some(format!("damping raised to {}", r.damping));
                            }
                            r.q
                        };
                        let (sc, z) = scales(&grids);
                        let ql = QuantizedLayer::from_values(&name, &q, shape, sc, z, b, None);
                        (q, grids[0].levels(), ql)
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
                        let q = gpfq::gpfq_gram(&w, n, d, &g, &ht, delta, k);
                        let ql = QuantizedLayer::from_values(
                            &name,
                            &q,
                            shape,
                            vec![delta as f32; n],
                            vec![k as f32; n],
                            b + 1,
                            None,
                        );
                        (q, levels, ql)
                    }
                    Method::Awq | Method::AwqSalient => {
                        let h = gram(x_q, lg);
                        let s_x = channel_mean_abs(x_q);
                        let salient = cfg.method == Method::AwqSalient;
                        let mut opt = if salient {
                            AwqOptions::salient()
                        } else {
                            AwqOptions::plain()
                        };
                        if let Some(a) = &cfg.awq_alphas {
                            opt.alphas = a.clone();
                        }
                        let (grid, per_channel, clip) = (cfg.grid, cfg.per_channel, cfg.mse_clip);
                        let fit = move |row: &[f32]| {
                            if salient {
                                awq::seed_grid(row, b)
                            } else {
                                fit_rows(row, 1, b, grid, per_channel, clip)[0]
                            }
                        };
                        let r = awq::awq(&w, n, k2, &h, &s_x, &fit, &opt);
                        detail = Some(format!(
                            "α={:.2}{}",
                            r.alpha,
                            if salient {
                                format!(" s_sal={}", r.salient_scale)
                            } else {
                                String::new()
                            }
                        ));
                        let (sc, z) = scales(&r.grids);
                        let levels = r.grids.first().map_or(vec![], |g| {
                            g.levels().iter().map(|v| v / r.col_scale[0]).collect()
                        });
                        let ql = QuantizedLayer::from_values(
                            &name,
                            &r.q_scaled,
                            shape,
                            sc,
                            z,
                            b,
                            Some(r.col_scale),
                        );
                        (r.q, levels, ql)
                    }
                    Method::SmoothQuant => {
                        let g: Vec<_> = if cfg.per_channel {
                            w.chunks(d)
                                .map(|row| smoothquant::absmax_grid(row, b))
                                .collect()
                        } else {
                            vec![smoothquant::absmax_grid(&w, b); n]
                        };
                        let q = rtn::rtn(&w, &g);
                        let (sc, z) = scales(&g);
                        let ql = QuantizedLayer::from_values(&name, &q, shape, sc, z, b, None);
                        (q, g[0].levels().into_iter().skip(1).collect(), ql)
                    }
                };
                let k = cfg.sqnr_images;
                let y_ref = layer_output(&fp.nodes[node].op, &head(x_fp, k))?;
                if let Some(wm) = qg.weight_mut(node) {
                    wm.copy_from_slice(&q);
                }
                qg.refold();
                let y_q = layer_output(&qg.nodes[node].op, &head(x_q, k))?;
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
                    detail,
                };
                if let Ok(mut c) = LAYER_CACHE.lock() {
                    if c.len() > 4096 {
                        c.clear();
                    }
                    c.insert(cache_key, (q, report.clone(), ql.clone()));
                }
                (report, ql)
            };
            on_layer(&report, index + 1, total);
            reports.push(report);
            packed.push(ql);
        }
        fp_run.step(&fp)?;
        q_run.step(&qg)?;
    }
    Ok(QuantOutcome {
        graph: qg,
        packed,
        layers: reports,
        bits,
        seconds: start.elapsed().as_secs_f64(),
    })
}

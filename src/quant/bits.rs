//! Per-layer bit widths: uniform, the LAQ mixed presets "5+3" / "3+5" (split
//! by cumulative parameter count, ALGORITHMS.md §8 \[D\]), "first and last at 8",
//! and explicit `name=bits` overrides.
use crate::model::Graph;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BitsMap {
    /// Default bits for every layer.
    pub bits: u8,
    /// `uniform`, `5+3`, `3+5` or `8-ends`.
    #[serde(default = "uniform")]
    pub preset: String,
    /// Explicit per-layer overrides, applied last.
    #[serde(default)]
    pub overrides: Vec<(String, u8)>,
}

fn uniform() -> String {
    "uniform".into()
}

impl BitsMap {
    pub fn uniform(bits: u8) -> Self {
        BitsMap {
            bits,
            preset: uniform(),
            overrides: vec![],
        }
    }

    /// Parse `"layer1.0.conv1=8,fc=8"`.
    pub fn parse_overrides(s: &str) -> Result<Vec<(String, u8)>> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (name, b) = p.split_once('=').ok_or_else(|| {
                    Error::Invalid(format!("bit map entry `{p}` is not name=bits"))
                })?;
                let b: u8 = b.trim().parse().map_err(|_| {
                    Error::Invalid(format!("bit map entry `{p}`: bits must be a number"))
                })?;
                Ok((name.trim().to_string(), b))
            })
            .collect()
    }

    /// Bits for each quantizable layer of `graph`, in forward order.
    pub fn resolve(&self, graph: &Graph) -> Result<Vec<u8>> {
        let layers = graph.layers();
        let total: usize = layers.iter().map(|l| l.params).sum();
        let mut before = 0usize;
        let mut out = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let first_half = (before as f64) < 0.5 * total as f64;
            before += l.params;
            out.push(match self.preset.as_str() {
                "uniform" => self.bits,
                "5+3" => {
                    if first_half {
                        5
                    } else {
                        3
                    }
                }
                "3+5" => {
                    if first_half {
                        3
                    } else {
                        5
                    }
                }
                "8-ends" => {
                    if i == 0 || i + 1 == layers.len() {
                        8
                    } else {
                        self.bits
                    }
                }
                other => {
                    return Err(Error::Invalid(format!(
                        "unknown bit-map preset `{other}` (uniform, 5+3, 3+5, 8-ends)"
                    )))
                }
            });
        }
        for (name, b) in &self.overrides {
            let idx =
                layers
                    .iter()
                    .position(|l| &l.name == name)
                    .ok_or_else(|| Error::UnknownLayer {
                        name: name.clone(),
                        known: layers
                            .iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            out[idx] = *b;
        }
        if let Some(b) = out.iter().find(|&&b| !(2..=8).contains(&b)) {
            return Err(Error::Invalid(format!(
                "{b} bits is out of range: 2 to 8 bits are supported"
            )));
        }
        Ok(out)
    }

    /// Average bits per weight, `Σ b_l n_l / Σ n_l`.
    pub fn average(graph: &Graph, bits: &[u8]) -> f64 {
        let layers = graph.layers();
        let n: usize = layers.iter().map(|l| l.params).sum();
        layers
            .iter()
            .zip(bits)
            .map(|(l, &b)| l.params as f64 * b as f64)
            .sum::<f64>()
            / n.max(1) as f64
    }
}

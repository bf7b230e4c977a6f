//! Shared graph-building steps: a conv (+BN) read by its PyTorch prefix.
use crate::engine::ops::ConvGeom;
use crate::model::graph::{BatchNormParams, ConvLayer, LinearLayer, Node, Op, PostOps};
use crate::model::loader::TensorStore;
use crate::Result;

pub struct GraphBuilder<'s> {
    pub store: &'s mut TensorStore,
    pub nodes: Vec<Node>,
    pub num_values: usize,
}

impl<'s> GraphBuilder<'s> {
    pub fn new(store: &'s mut TensorStore) -> Self {
        GraphBuilder {
            store,
            nodes: Vec::new(),
            num_values: 1,
        }
    }

    fn push(&mut self, name: String, op: Op, inputs: Vec<usize>) -> usize {
        let output = self.num_values;
        self.num_values += 1;
        self.nodes.push(Node {
            name,
            op,
            inputs,
            output,
        });
        output
    }

    /// `{prefix}.weight` of shape `[out, cin, k, k]`, optional `{prefix}.bias`.
    pub fn conv(
        &mut self,
        x: usize,
        prefix: &str,
        cin: usize,
        out: Option<usize>,
        k: Option<usize>,
        stride: usize,
    ) -> Result<(usize, usize)> {
        let wname = format!("{prefix}.weight");
        let weight = self.store.take(&wname, &[out, Some(cin), k, k])?;
        let shape: [usize; 4] = {
            let s = self.store.shape(&wname).unwrap_or(&[0, 0, 0, 0]);
            [s[0], s[1], s[2], s[3]]
        };
        let bias_name = format!("{prefix}.bias");
        let bias = if self.store.has(&bias_name) {
            Some(self.store.take(&bias_name, &[Some(shape[0])])?)
        } else {
            None
        };
        let geom = ConvGeom::new(stride, shape[2] / 2);
        let v = self.push(
            prefix.to_string(),
            Op::Conv(ConvLayer {
                weight,
                shape,
                bias,
                geom,
                post: PostOps::default(),
                folded: None,
                act_scale: None,
            }),
            vec![x],
        );
        Ok((v, shape[0]))
    }

    pub fn batchnorm(&mut self, x: usize, prefix: &str, c: usize) -> Result<usize> {
        let mut t = |s: &str| self.store.take(&format!("{prefix}.{s}"), &[Some(c)]);
        let bn = BatchNormParams {
            gamma: t("weight")?,
            beta: t("bias")?,
            mean: t("running_mean")?,
            var: t("running_var")?,
            eps: 1e-5,
        };
        Ok(self.push(prefix.to_string(), Op::BatchNorm(bn), vec![x]))
    }

    pub fn conv_bn(
        &mut self,
        x: usize,
        conv: &str,
        bn: &str,
        cin: usize,
        out: Option<usize>,
        k: Option<usize>,
        stride: usize,
    ) -> Result<(usize, usize)> {
        let (v, c) = self.conv(x, conv, cin, out, k, stride)?;
        Ok((self.batchnorm(v, bn, c)?, c))
    }

    pub fn op(&mut self, name: &str, op: Op, inputs: Vec<usize>) -> usize {
        self.push(name.to_string(), op, inputs)
    }

    /// The linear layers of a classifier named `prefix`: one `{prefix}`
    /// linear, or an `nn.Sequential` of them, `{prefix}.{j}` in index
    /// order (Dropout and ReLU have no tensors). Empty if there is none.
    pub fn linear_names(&self, prefix: &str) -> Vec<String> {
        let mut found: Vec<String> = self
            .store
            .names()
            .filter_map(|n| {
                let j = n.strip_prefix(prefix)?.strip_prefix('.')?;
                j.strip_suffix(".weight")?.parse::<usize>().ok()
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|j| format!("{prefix}.{j}"))
            .collect();
        if found.is_empty() && self.store.has(&format!("{prefix}.weight")) {
            found.push(prefix.to_string());
        }
        found
    }

    /// `names`' linears from `x` of `width` features, with a ReLU between
    /// consecutive ones (torchvision's VGG classifier, and the usual
    /// fine-tuning heads `Linear, ReLU, Dropout, Linear`). Returns the
    /// output value and its width.
    pub fn linears(
        &mut self,
        mut x: usize,
        names: &[String],
        mut width: usize,
    ) -> Result<(usize, usize)> {
        for (n, name) in names.iter().enumerate() {
            let weight = self
                .store
                .take(&format!("{name}.weight"), &[None, Some(width)])?;
            let out_features = weight.len() / width.max(1);
            let bias_name = format!("{name}.bias");
            let bias = if self.store.has(&bias_name) {
                Some(self.store.take(&bias_name, &[Some(out_features)])?)
            } else {
                None
            };
            x = self.push(
                name.clone(),
                Op::Linear(LinearLayer {
                    weight,
                    out_features,
                    in_features: width,
                    bias,
                    act_scale: None,
                    lowbit: None,
                }),
                vec![x],
            );
            if n + 1 < names.len() {
                x = self.op(&format!("{name}.relu"), Op::Relu, vec![x]);
            }
            width = out_features;
        }
        Ok((x, width))
    }

    /// Stage and block indices present: `layerL.i.` → sorted `(L, [i…])`.
    pub fn stages(&self) -> Vec<(usize, Vec<usize>)> {
        let mut found: std::collections::BTreeMap<usize, std::collections::BTreeSet<usize>> =
            Default::default();
        for name in self.store.names() {
            let mut parts = name.split('.');
            if let (Some(l), Some(i)) = (parts.next(), parts.next()) {
                if let (Some(l), Ok(i)) = (
                    l.strip_prefix("layer").and_then(|v| v.parse().ok()),
                    i.parse::<usize>(),
                ) {
                    found.entry(l).or_default().insert(i);
                }
            }
        }
        found
            .into_iter()
            .map(|(l, is)| (l, is.into_iter().collect()))
            .collect()
    }

    /// A ResNet's classifier linears: `fc` (torchvision), `linear`
    /// (akamaster, kuangliu) or `classifier`, each one linear or a
    /// `Sequential` of them (`fc.1` after a Dropout, `fc.0`/`fc.3` …).
    pub fn classifier_names(&self) -> Vec<String> {
        ["fc", "linear", "classifier"]
            .into_iter()
            .map(|p| self.linear_names(p))
            .find(|names| !names.is_empty())
            .unwrap_or_default()
    }
}

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

    /// Global average pool, flatten and the classifier `{prefix}.weight/bias`.
    pub fn head(&mut self, x: usize, prefix: &str, cin: usize) -> Result<(usize, usize)> {
        let g = self.op("avgpool", Op::GlobalAvgPool, vec![x]);
        let f = self.op("flatten", Op::Flatten, vec![g]);
        let wname = format!("{prefix}.weight");
        let weight = self.store.take(&wname, &[None, Some(cin)])?;
        let out_features = weight.len() / cin.max(1);
        let bias = if self.store.has(&format!("{prefix}.bias")) {
            Some(
                self.store
                    .take(&format!("{prefix}.bias"), &[Some(out_features)])?,
            )
        } else {
            None
        };
        let v = self.push(
            prefix.to_string(),
            Op::Linear(LinearLayer {
                weight,
                out_features,
                in_features: cin,
                bias,
                act_scale: None,
                lowbit: None,
            }),
            vec![f],
        );
        Ok((v, out_features))
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

    /// Name of the classifier: `linear` (akamaster) or `fc` (torchvision).
    pub fn classifier_name(&self) -> Option<&'static str> {
        ["fc", "linear", "classifier"]
            .into_iter()
            .find(|n| self.store.has(&format!("{n}.weight")))
    }
}

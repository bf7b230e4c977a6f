//! Greedy subset selection by inter-class distance [V LAQ notebook]: from a
//! seed class, repeatedly add the unselected class with the lowest
//! ('similar') or highest ('dissimilar') mean ICD to the selected set;
//! 'random' samples uniformly. A subset's statistic is its median pairwise ICD.
use crate::util::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubsetKind {
    Similar,
    Dissimilar,
    Random,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subset {
    pub kind: SubsetKind,
    pub classes: Vec<usize>,
    pub median_icd: f64,
    pub mean_icd: f64,
}

fn stats(m: &[f64], k: usize, classes: &[usize]) -> (f64, f64) {
    let mut v: Vec<f64> = classes
        .iter()
        .enumerate()
        .flat_map(|(a, &i)| classes[a + 1..].iter().map(move |&j| m[i * k + j]))
        .collect();
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2])
    };
    (median, v.iter().sum::<f64>() / v.len() as f64)
}

pub fn greedy(m: &[f64], k: usize, size: usize, kind: SubsetKind, rng: &mut Rng) -> Subset {
    let mut chosen = vec![rng.below(k)];
    if kind == SubsetKind::Random {
        let mut all: Vec<usize> = (0..k).collect();
        rng.shuffle(&mut all);
        chosen = all[..size.min(k)].to_vec();
    } else {
        while chosen.len() < size.min(k) {
            let score =
                |c: usize| chosen.iter().map(|&s| m[s * k + c]).sum::<f64>() / chosen.len() as f64;
            let cand = (0..k).filter(|c| !chosen.contains(c));
            let pick = match kind {
                SubsetKind::Similar => cand.min_by(|&a, &b| score(a).total_cmp(&score(b))),
                _ => cand.max_by(|&a, &b| score(a).total_cmp(&score(b))),
            };
            match pick {
                Some(c) => chosen.push(c),
                None => break,
            }
        }
    }
    chosen.sort_unstable();
    let (median_icd, mean_icd) = stats(m, k, &chosen);
    Subset {
        kind,
        classes: chosen,
        median_icd,
        mean_icd,
    }
}

/// `count` distinct subsets of `size` classes spanning the median-ICD range:
/// candidates from every seed class (similar, dissimilar) and random draws,
/// then picked at evenly spaced quantiles of their median ICD.
pub fn select_subsets(m: &[f64], k: usize, size: usize, count: usize, seed: u64) -> Vec<Subset> {
    let mut rng = Rng::new(seed);
    let mut cands: Vec<Subset> = vec![];
    for _ in 0..(4 * k).max(20) {
        for kind in [
            SubsetKind::Similar,
            SubsetKind::Dissimilar,
            SubsetKind::Random,
        ] {
            let s = greedy(m, k, size, kind, &mut rng);
            if !cands.iter().any(|c| c.classes == s.classes) {
                cands.push(s);
            }
        }
    }
    cands.sort_by(|a, b| a.median_icd.total_cmp(&b.median_icd));
    if cands.len() <= count {
        return cands;
    }
    let mut out: Vec<Subset> = (0..count)
        .map(|q| cands[q * (cands.len() - 1) / (count - 1).max(1)].clone())
        .collect();
    out.dedup_by(|a, b| a.classes == b.classes);
    out
}

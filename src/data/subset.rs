//! Class subsets and deterministic (seeded) sampling.
use crate::data::split::Split;
use crate::util::Rng;
use crate::{Error, Result};

/// `"all"`, or a comma list of class names or indices → sorted class indices.
pub fn parse_classes(spec: &str, names: &[String]) -> Result<Vec<usize>> {
    let spec = spec.trim();
    if spec.is_empty() || spec.eq_ignore_ascii_case("all") {
        return Ok((0..names.len()).collect());
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let idx = match names.iter().position(|n| n == part) {
            Some(i) => i,
            None => match part.parse::<usize>() {
                Ok(i) if i < names.len() => i,
                _ => {
                    return Err(Error::Invalid(format!(
                        "unknown class `{part}` (classes: {})",
                        names.join(", ")
                    )))
                }
            },
        };
        if !out.contains(&idx) {
            out.push(idx);
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid("empty class subset".into()));
    }
    out.sort_unstable();
    Ok(out)
}

/// `n` images of each class in `classes`, chosen by a seeded shuffle.
pub fn sample_per_class(
    split: &Split,
    classes: &[usize],
    n: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let groups = split.by_class();
    let mut out = Vec::new();
    for &c in classes {
        let mut g = groups.get(c).cloned().unwrap_or_default();
        if g.len() < n {
            return Err(Error::Invalid(format!(
                "class `{}` has {} images in {}, {n} requested",
                split.class_names.get(c).map_or("?", String::as_str),
                g.len(),
                split.source
            )));
        }
        Rng::new(seed ^ (c as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)).shuffle(&mut g);
        out.extend_from_slice(&g[..n]);
    }
    Ok(out)
}

/// The calibration size when the user chose none: `default`, or every image
/// of `classes` in `split` if they have fewer (a small dataset such as the
/// bundled sample). A size the user did choose is kept as asked, and
/// [`sample_spread`] reports it if the classes cannot supply it.
pub fn default_calib(split: &Split, classes: &[usize], default: usize) -> usize {
    default.min(split.indices_of(classes).len())
}

/// `total` images spread as evenly as possible over `classes` (the first
/// `total mod k` classes get one more), seeded. Errors if not enough exist.
pub fn sample_spread(
    split: &Split,
    classes: &[usize],
    total: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    if classes.is_empty() {
        return Err(Error::Invalid("empty class subset".into()));
    }
    let available: usize = split.indices_of(classes).len();
    if total > available {
        return Err(Error::Invalid(format!(
            "{total} images requested but the chosen classes have only {available} in {}",
            split.source
        )));
    }
    let k = classes.len();
    let mut out = Vec::with_capacity(total);
    for (j, &c) in classes.iter().enumerate() {
        let want = total / k + usize::from(j < total % k);
        out.extend(sample_per_class(split, &[c], want, seed)?);
    }
    // Interleave classes so any prefix (a calibration batch) is balanced.
    let mut rng = Rng::new(seed.wrapping_add(1));
    rng.shuffle(&mut out);
    Ok(out)
}

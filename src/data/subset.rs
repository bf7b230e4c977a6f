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

/// `total` images spread as evenly as the classes allow, seeded: each class
/// gets an equal share (the first `total mod k` classes one more), and the
/// share a small class cannot fill goes to the classes with images to spare
/// (real datasets are rarely balanced; MNIST's classes differ by 20 %).
/// Errors only if the classes together have fewer than `total`.
pub fn sample_spread(
    split: &Split,
    classes: &[usize],
    total: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    if classes.is_empty() {
        return Err(Error::Invalid("empty class subset".into()));
    }
    let groups = split.by_class();
    let counts: Vec<usize> = classes
        .iter()
        .map(|&c| groups.get(c).map_or(0, Vec::len))
        .collect();
    let available: usize = counts.iter().sum();
    if total > available {
        return Err(Error::Invalid(format!(
            "{total} images requested but the chosen classes have only {available} in {}",
            split.source
        )));
    }
    let mut out = Vec::with_capacity(total);
    for (&c, want) in classes.iter().zip(spread(&counts, total)) {
        out.extend(sample_per_class(split, &[c], want, seed)?);
    }
    // Interleave classes so any prefix (a calibration batch) is balanced.
    let mut rng = Rng::new(seed.wrapping_add(1));
    rng.shuffle(&mut out);
    Ok(out)
}

/// How many of `total` to take from each class of `counts` images: equal
/// shares, capped by what a class has, the rest shared again among the
/// classes with images left (water filling). Needs `total <= sum(counts)`.
pub fn spread(counts: &[usize], total: usize) -> Vec<usize> {
    let mut take = vec![0; counts.len()];
    let mut left = total;
    loop {
        let open: Vec<usize> = (0..counts.len()).filter(|&j| take[j] < counts[j]).collect();
        if left == 0 || open.is_empty() {
            return take;
        }
        let share = left / open.len();
        if share == 0 {
            // Fewer images left than classes with spare: one each, in order.
            for &j in open.iter().take(left) {
                take[j] += 1;
            }
            return take;
        }
        for &j in &open {
            let add = share.min(counts[j] - take[j]);
            take[j] += add;
            left -= add;
        }
    }
}

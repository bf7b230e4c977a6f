//! Accuracy-vs-median-ICD charts as standalone SVG files (for papers).
use crate::laq::experiment::Cell;

const COLORS: [(&str, &str); 4] = [
    ("original", "#1f77b4"),
    ("quant", "#ff7f0e"),
    ("ft", "#2ca02c"),
    ("ft+quant", "#d62728"),
];

/// One chart: top-1 (`sub` picks Sub or All) against median ICD, one line
/// per variant, at bit setting `bits` (the FP variants are drawn as they are).
pub fn svg(cells: &[Cell], bits: &str, sub: bool) -> String {
    let (w, h, m) = (640.0, 400.0, 50.0);
    let pick = |c: &Cell| if sub { c.top1_sub } else { c.top1_all };
    let rel: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.bits == bits || c.bits == "fp")
        .collect();
    let xmax = rel.iter().fold(1e-9f64, |a, c| a.max(c.median_icd)) * 1.05;
    let ymin = rel
        .iter()
        .fold(100f64, |a, c| a.min(pick(c)))
        .floor()
        .max(0.0);
    let (x, y) = (
        |v: f64| m + v / xmax * (w - 2.0 * m),
        |v: f64| h - m - (v - ymin) / (100.0 - ymin).max(1e-9) * (h - 2.0 * m),
    );
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    s += &format!(
        r#"<line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{}" stroke="black"/>"#,
        h - m,
        w - m,
        h - m,
        h - m
    );
    s += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">median inter-class distance (ICD)</text>"#,
        w / 2.0,
        h - 12.0
    );
    s += &format!(
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">top-1 {} (%)</text>"#,
        h / 2.0,
        h / 2.0,
        if sub { "Sub" } else { "All" }
    );
    s += &format!(
        r#"<text x="{m}" y="{}">{ymin:.0}</text><text x="{m}" y="{}">100</text><text x="{}" y="{}">{xmax:.1}</text>"#,
        h - m + 14.0,
        m - 4.0,
        w - m - 20.0,
        h - m + 14.0
    );
    for (k, (variant, color)) in COLORS.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = rel
            .iter()
            .filter(|c| c.variant == *variant)
            .map(|c| (c.median_icd, pick(c)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        s += &format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (a, b) in &pts {
            s += &format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(*a),
                y(*b)
            );
        }
        s += &format!(
            r#"<text x="{}" y="{}" fill="{color}">{variant}</text>"#,
            w - m - 70.0,
            m + 14.0 * k as f64
        );
    }
    s + &format!(
        r#"<text x="{m}" y="20">LAQ, {bits} bits, {} evaluation</text></svg>"#,
        if sub { "Sub" } else { "All" }
    )
}

use crate::app::state::State;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table, TableState};
use ratatui::Frame;

pub const COLUMNS: [&str; 12] = [
    "",
    "model",
    "method",
    "bits",
    "classes",
    "calib",
    "top-1 All",
    "Δ vs FP",
    "top-1 Sub",
    "size KiB",
    "lat. ms",
    "kernels",
];

/// The kernel a run's latency was measured on, short ("int8 avx512-vnni ×19"
/// → "int8 vnni"), "+" when some layers ran on another kind (a W4 model
/// whose layers use both the Winograd and the direct 4-bit kernels is
/// still "w4 packed").
fn short_kernels(path: &str) -> String {
    let name = |part: &str| -> String {
        [
            ("int8 avx512-vnni", "int8 vnni"),
            // Integer Winograd (3×3 stride 1) and direct layers alike.
            ("int8 winograd avx2", "int8 avx2"),
            ("int8 avx2", "int8 avx2"),
            ("int8 portable", "int8"),
            ("w8a8 simulated", "w8a8 sim"),
            ("w4 weight-only", "w4 packed"),
            ("w3 weight-only", "w3 packed"),
            ("fp32 direct", "fp32 direct"),
            ("fp32 winograd", "fp32 winograd"),
            ("fp32 im2col", "fp32 gemm"),
        ]
        .iter()
        .find(|(long, _)| part.starts_with(long))
        .map_or(part.split(" ×").next().unwrap_or(""), |(_, s)| s)
        .to_string()
    };
    let mut parts = path.split(", ").map(name);
    let first = parts.next().unwrap_or_default();
    if parts.any(|p| p != first) {
        format!("{first} +")
    } else {
        first
    }
}

/// Which of [`COLUMNS`] fit `width` cells: below 110 the kernels and
/// calibration size go, below 96 the model name too.
fn columns_for_width(width: u16) -> [bool; 12] {
    COLUMNS.map(|name| match name {
        "calib" | "kernels" => width >= 110,
        "model" => width >= 96,
        _ => true,
    })
}

/// The cells of the kept columns.
fn shown<T>(keep: [bool; 12], cells: Vec<T>) -> Vec<T> {
    cells
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    if s.results.is_empty() {
        super::empty_state(
            f,
            area,
            " Results ",
            "No results yet: finished jobs appear here and are saved in results/.",
            t,
        );
        return;
    }
    let order = s.sorted_results();
    // All twelve columns need ~110 cells; on a narrower terminal drop the
    // least needed ones rather than squeeze every column to a stump.
    let keep = columns_for_width(area.width);
    // A quantized run shows Δ only against an FP32 run of the same model,
    // data and classes; say how to get one instead of leaving "—" a riddle.
    let no_baseline = s
        .results
        .iter()
        .any(|r| r.spec.quant.is_some() && s.baseline_for(r).is_none());
    let (area, hint) = if no_baseline && area.height > 4 {
        let [a, h] = ratatui::layout::Layout::vertical([Constraint::Min(3), Constraint::Length(1)])
            .areas(area);
        (a, Some(h))
    } else {
        (area, None)
    };
    if let Some(h) = hint {
        f.render_widget(
            Paragraph::new(
                " Δ vs FP: run Quantizer fp32 (Setup) on the same model, data and classes.",
            )
            .style(Style::default().fg(t.muted)),
            h,
        );
    }
    let rows: Vec<Row> = order
        .iter()
        .map(|&i| {
            let r = &s.results[i];
            let delta = s
                .baseline_for(r)
                .filter(|_| r.spec.quant.is_some())
                .map(|b| r.eval.top1_all - b.eval.top1_all);
            let delta_cell = match delta {
                Some(d) => Span::styled(
                    format!("{d:+.2}"),
                    Style::default().fg(if d >= -1.0 {
                        t.good
                    } else if d >= -5.0 {
                        t.warn
                    } else {
                        t.bad
                    }),
                ),
                None => Span::raw("—"),
            };
            Row::new(shown(
                keep,
                vec![
                    Line::from(if s.marked.contains(&i) { "◆" } else { " " }),
                    Line::from(r.arch.clone()),
                    Line::from(r.label.clone()),
                    Line::from(format!("{:.2}", r.bits_avg)),
                    Line::from(
                        r.spec
                            .classes
                            .as_ref()
                            .map_or("all".into(), |c| c.join(",")),
                    ),
                    Line::from(if r.spec.quant.is_some() {
                        r.spec.calib.to_string()
                    } else {
                        "—".into()
                    }),
                    Line::from(format!("{:.2}", r.eval.top1_all)),
                    Line::from(delta_cell),
                    Line::from(r.eval.top1_sub.map_or("—".into(), |v| format!("{v:.2}"))),
                    Line::from(format!("{:.1}", r.size_bytes as f64 / 1024.0)),
                    Line::from(format!("{:.2}", r.latency_ms)),
                    Line::from(short_kernels(&r.latency_path)),
                ],
            ))
        })
        .collect();
    let widths = shown(
        keep,
        vec![
            Constraint::Length(1),
            Constraint::Length(10),
            Constraint::Length(12),
            Constraint::Length(5),
            Constraint::Min(8),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Min(10),
        ],
    );
    let title = super::fit_title(
        &[
            format!("Results: {}", super::count(s.results.len(), "run")),
            format!(
                "sorted by {}{}",
                s.sort.name(),
                if s.sort_desc { " ↓" } else { " ↑" }
            ),
            "s sort".into(),
            "space mark".into(),
            "c compare".into(),
            "e export CSV".into(),
            "Enter layers".into(),
        ],
        area.width,
    );
    let table = Table::new(rows, widths)
        .header(
            Row::new(shown(keep, COLUMNS.to_vec()))
                .style(Style::default().fg(t.accent).add_modifier(Modifier::BOLD)),
        )
        .block(super::block(title, t))
        .row_highlight_style(
            Style::default()
                .bg(t.highlight_bg)
                .add_modifier(Modifier::BOLD),
        );
    let mut ts = TableState::default().with_selected(Some(s.result_cursor.min(order.len() - 1)));
    f.render_stateful_widget(table, area, &mut ts);
}

#[cfg(test)]
mod tests {
    use super::short_kernels;

    #[test]
    fn kernels_are_shortened_and_mixed_kinds_marked() {
        assert_eq!(short_kernels("int8 avx512-vnni ×19"), "int8 vnni");
        assert_eq!(
            short_kernels(
                "w4 weight-only (winograd / direct avx512) ×17, w4 weight-only (direct avx512) ×2"
            ),
            "w4 packed"
        );
        assert_eq!(
            short_kernels("w8a8 simulated in fp32 ×1, int8 avx512-vnni ×18"),
            "w8a8 sim +"
        );
        assert_eq!(short_kernels("fp32 gemm"), "fp32 gemm");
        assert_eq!(
            short_kernels("int8 winograd avx2-madd16 ×17, int8 avx2-madd16 ×2"),
            "int8 avx2"
        );
    }
}

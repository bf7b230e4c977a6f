//! FP vs quantized weight histograms of one layer on a shared x range, drawn
//! cell by cell (overlaid or stacked), with the quantization levels marked.
use crate::app::state::State;
use crate::quant::metrics::Histogram;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Re-bin to `width` columns (summing neighbouring bins).
fn columns(h: &Histogram, width: usize) -> Vec<f64> {
    let n = h.counts.len();
    (0..width)
        .map(|c| {
            let (a, b) = (
                c * n / width,
                ((c + 1) * n / width).max(c * n / width + 1).min(n),
            );
            h.counts[a..b].iter().map(|&v| v as f64).sum()
        })
        .collect()
}

const EIGHTHS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One histogram as lines of block characters, `height` rows tall.
fn bars(values: &[f64], max: f64, height: usize, color: Color) -> Vec<Line<'static>> {
    (0..height)
        .map(|row| {
            let from_bottom = (height - 1 - row) as f64;
            let spans: Vec<Span> = values
                .iter()
                .map(|&v| {
                    let h = v / max.max(1.0) * height as f64 - from_bottom;
                    let idx = (h.clamp(0.0, 1.0) * 8.0).round() as usize;
                    Span::styled(EIGHTHS[idx].to_string(), Style::default().fg(color))
                })
                .collect();
            Line::from(spans)
        })
        .collect()
}

fn overlay(fp: &[f64], q: &[f64], max: f64, height: usize, t: &Theme) -> Vec<Line<'static>> {
    (0..height)
        .map(|row| {
            let level = (height - row) as f64 / height as f64 * max.max(1.0);
            let spans: Vec<Span> = fp
                .iter()
                .zip(q)
                .map(|(&a, &b)| match (a >= level, b >= level) {
                    (true, true) => Span::styled("█", Style::default().fg(t.quant).bg(t.fp)),
                    (false, true) => Span::styled("█", Style::default().fg(t.quant)),
                    (true, false) => Span::styled("▒", Style::default().fg(t.fp)),
                    (false, false) => Span::raw(" "),
                })
                .collect();
            Line::from(spans)
        })
        .collect()
}

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let report = s
        .current_run()
        .and_then(|r| r.layers.get(s.layer_cursor))
        .and_then(|l| l.as_ref());
    let Some(l) = report else {
        super::empty_state(
            f,
            area,
            " Histogram ",
            "No quantized layer selected yet (start a job, or pick a layer on the Layers screen).",
            t,
        );
        return;
    };
    let title = format!(
        " {} · {} bits · MSE {:.3e} · SQNR {:.2} dB · ←/→ layer · o {} ",
        l.name,
        l.bits,
        l.mse,
        l.sqnr_db,
        if s.overlay { "stack" } else { "overlay" }
    );
    let outer = super::block(title, t);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let [plot, marks, axis, legend] = Layout::vertical([
        Constraint::Min(4),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(inner);
    let w = plot.width as usize;
    let (fp, q) = (columns(&l.hist_fp, w), columns(&l.hist_q, w));
    let max = fp.iter().chain(&q).fold(0f64, |a, &v| a.max(v));
    let h = plot.height as usize;
    let lines = if s.overlay {
        overlay(&fp, &q, max, h, t)
    } else {
        let top = h / 2;
        let mut v = bars(&fp, fp.iter().fold(0f64, |a, &x| a.max(x)), top, t.fp);
        v.extend(bars(
            &q,
            q.iter().fold(0f64, |a, &x| a.max(x)),
            h - top,
            t.quant,
        ));
        v
    };
    f.render_widget(Paragraph::new(lines), plot);
    let (lo, hi) = (l.hist_fp.lo as f64, l.hist_fp.hi as f64);
    let mut row = vec![' '; w];
    for &lv in &l.levels {
        let x = ((lv as f64 - lo) / (hi - lo).max(1e-12) * w as f64).floor();
        if x >= 0.0 && (x as usize) < w {
            row[x as usize] = '┴';
        }
    }
    f.render_widget(
        Paragraph::new(row.into_iter().collect::<String>()).style(Style::default().fg(t.accent)),
        marks,
    );
    let left = format!("{lo:.3}");
    let right = format!("{hi:.3}");
    let pad = w.saturating_sub(left.len() + right.len());
    f.render_widget(
        Paragraph::new(format!("{left}{}{right}", " ".repeat(pad)))
            .style(Style::default().fg(t.muted)),
        axis,
    );
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("▒ FP32 weights  ", Style::default().fg(t.fp)),
            Span::styled("█ quantized  ", Style::default().fg(t.quant)),
            Span::styled(
                format!("┴ {} levels of channel 0", l.levels.len()),
                Style::default().fg(t.accent),
            ),
        ])),
        legend,
    );
}

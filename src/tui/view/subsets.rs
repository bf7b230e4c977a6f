//! LAQ subsets: the 2-D class embedding (braille scatter, one colour per
//! class, the selected subset bright), the inter-class distance heat map, and
//! the subsets with their median ICD; Enter makes one the calibration subset.
use crate::app::state::State;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Points};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

const PALETTE: [Color; 10] = [
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightBlue,
    Color::LightMagenta,
];

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let Some(laq) = &s.laq else {
        super::empty_state(
            f,
            area,
            " Subsets ",
            "No subsets loaded. Run `qscope subsets --model M --data D --out subsets.json`, then `qscope dashboard --subsets subsets.json`.",
            t,
        );
        return;
    };
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let chosen: &[usize] = laq.subsets.get(s.subset_cursor).map_or(&[], |x| &x.1);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in laq.embedding.chunks(2) {
        x0 = x0.min(p[0] as f64);
        x1 = x1.max(p[0] as f64);
        y0 = y0.min(p[1] as f64);
        y1 = y1.max(p[1] as f64);
    }
    let k = laq.class_names.len();
    let per_class: Vec<Vec<(f64, f64)>> = (0..k)
        .map(|c| {
            laq.embedding
                .chunks(2)
                .zip(&laq.labels)
                .filter(|(_, &l)| l as usize == c)
                .map(|(p, _)| (p[0] as f64, p[1] as f64))
                .collect()
        })
        .collect();
    let canvas = Canvas::default()
        .block(super::block(
            super::fit_title(
                &[
                    "UMAP of penultimate features".into(),
                    "selected subset bright".into(),
                ],
                left.width,
            ),
            t,
        ))
        .marker(Marker::Braille)
        .x_bounds([x0, x1.max(x0 + 1e-6)])
        .y_bounds([y0, y1.max(y0 + 1e-6)])
        .paint(|ctx| {
            for (c, pts) in per_class.iter().enumerate() {
                let color = if chosen.is_empty() || chosen.contains(&c) {
                    PALETTE[c % PALETTE.len()]
                } else {
                    t.muted
                };
                ctx.draw(&Points { coords: pts, color });
            }
        });
    let left = if laq.cells.is_empty() {
        left
    } else {
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(left);
        render_results(f, bottom, laq, t);
        top
    };
    f.render_widget(canvas, left);
    let max = laq.icd.iter().fold(1e-12f64, |m, v| m.max(*v));
    let inner = right.width.saturating_sub(2) as usize;
    let caption = super::fill(
        &format!("ICD heat map by quartile (denser = farther; max {max:.1})"),
        " ",
        inner,
    );
    // With many classes (CIFAR-100) the heat map gives way to the subsets
    // list, which gets at least half the column: the subsets are what is picked.
    let heat_h = ((k + caption.len()) as u16 + 2).min(
        right.height.div_ceil(2).max(
            right
                .height
                .saturating_sub(2 * laq.subsets.len() as u16 + 2),
        ),
    );
    let [heat, list] =
        Layout::vertical([Constraint::Length(heat_h), Constraint::Min(3)]).areas(right);
    // Shade by rank among the pairs, not by value over the maximum: KL
    // distances span orders of magnitude, and one far pair left every other
    // cell blank on a linear scale.
    let mut sorted: Vec<f64> = (0..k * k)
        .filter(|t| t / k != t % k)
        .map(|t| laq.icd[t])
        .collect();
    sorted.sort_by(f64::total_cmp);
    let shades = ['░', '▒', '▓', '█'];
    let mut lines: Vec<Line> = (0..k)
        .map(|i| {
            let mut spans = vec![Span::styled(
                format!(
                    "{:>10} ",
                    laq.class_names[i].chars().take(10).collect::<String>()
                ),
                Style::default().fg(PALETTE[i % PALETTE.len()]),
            )];
            for j in 0..k {
                let below = sorted.partition_point(|&v| v < laq.icd[i * k + j]);
                let ch = if i == j {
                    ' '
                } else {
                    shades[(4 * below / sorted.len().max(1)).min(3)]
                };
                let style = if chosen.contains(&i) && chosen.contains(&j) {
                    Style::default().fg(t.accent)
                } else {
                    Style::default().fg(t.fg)
                };
                spans.push(Span::styled(format!("{ch}{ch}"), style));
            }
            Line::from(spans)
        })
        .collect();
    for (i, c) in caption.into_iter().enumerate() {
        lines.insert(i, Line::from(Span::styled(c, Style::default().fg(t.muted))));
    }
    f.render_widget(
        Paragraph::new(lines).block(super::block(" inter-class distance ", t)),
        heat,
    );
    let blocks: Vec<Vec<Line>> = laq
        .subsets
        .iter()
        .enumerate()
        .map(|(i, (kind, cls, median))| {
            let names: Vec<&str> = cls
                .iter()
                .filter_map(|&c| laq.class_names.get(c).map(String::as_str))
                .collect();
            let style = if i == s.subset_cursor {
                Style::default()
                    .bg(t.highlight_bg)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            // Class names that do not fit continue on lines of their own,
            // under the names: the subset is what the user picks.
            let head = format!("{:<10} {:>7.2}  ", kind, median);
            let pad = head.chars().count();
            super::fill(&names.join(", "), " ", inner.saturating_sub(pad).max(8))
                .into_iter()
                .enumerate()
                .map(|(j, part)| {
                    let lead = if j == 0 {
                        head.clone()
                    } else {
                        " ".repeat(pad)
                    };
                    Line::from(Span::styled(format!("{lead}{part}"), style))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // Scrolled so the selected subset's lines are in view.
    let end: usize = blocks.iter().take(s.subset_cursor + 1).map(Vec::len).sum();
    let visible = list.height.saturating_sub(2) as usize;
    let scroll = end.saturating_sub(visible) as u16;
    let rows: Vec<Line> = blocks.into_iter().flatten().collect();
    f.render_widget(
        Paragraph::new(rows).scroll((scroll, 0)).block(super::block(
            super::fit_title(
                &[
                    "subsets · median ICD".into(),
                    "Enter = calibrate on it".into(),
                ],
                list.width,
            ),
            t,
        )),
        list,
    );
}

/// LAQ results: top-1 against median ICD, one line per variant (b: bits, m: All/Sub).
fn render_results(f: &mut Frame, area: Rect, laq: &crate::app::state::LaqView, t: &Theme) {
    use ratatui::widgets::{Axis, Chart, Dataset, GraphType};
    let settings = laq.bit_settings();
    let bits = settings
        .get(laq.chart_bits)
        .cloned()
        .unwrap_or_else(|| "4".into());
    let pick = |c: &crate::laq::experiment::Cell| {
        if laq.chart_sub {
            c.top1_sub
        } else {
            c.top1_all
        }
    };
    let series: Vec<(&str, Color, Vec<(f64, f64)>)> = [
        ("original", Color::Blue),
        ("quant", Color::Yellow),
        ("ft", Color::Green),
        ("ft+quant", Color::Red),
    ]
    .into_iter()
    .map(|(v, col)| {
        let mut pts: Vec<(f64, f64)> = laq
            .cells
            .iter()
            .filter(|c| c.variant == v && (c.bits == bits || c.bits == "fp"))
            .map(|c| (c.median_icd, pick(c)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        (v, col, pts)
    })
    .collect();
    let xmax = laq.cells.iter().fold(1e-6f64, |m, c| m.max(c.median_icd)) * 1.05;
    let ymin = laq
        .cells
        .iter()
        .fold(100f64, |m, c| m.min(pick(c)))
        .floor()
        .max(0.0);
    let data: Vec<Dataset> = series
        .iter()
        .map(|(v, col, pts)| {
            Dataset::default()
                .name(*v)
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(*col))
                .data(pts)
        })
        .collect();
    let title = format!(
        " LAQ top-1 {} vs median ICD · {bits} bits · b bits · m All/Sub ",
        if laq.chart_sub { "Sub" } else { "All" }
    );
    f.render_widget(
        Chart::new(data)
            .block(super::block(title, t))
            .x_axis(
                Axis::default()
                    .bounds([0.0, xmax])
                    .labels(vec![Line::from("0"), Line::from(format!("{xmax:.0}"))])
                    .style(Style::default().fg(t.muted)),
            )
            .y_axis(
                Axis::default()
                    .bounds([ymin, 100.0])
                    .labels(vec![Line::from(format!("{ymin:.0}")), Line::from("100")])
                    .style(Style::default().fg(t.muted)),
            ),
        area,
    );
}

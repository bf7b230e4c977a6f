use crate::app::setup::Field;
use crate::app::state::{RunStatus, State};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph};
use ratatui::Frame;

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    // The class list needs ~30 columns; on 80 the form gets the rest, for
    // its paths.
    let right_w = (area.width * 42 / 100).min(area.width.saturating_sub(48));
    let [left, right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(right_w)]).areas(area);
    let form = &s.setup;
    let mut lines = vec![];
    for (i, field) in Field::ALL.iter().enumerate() {
        let focused = i == form.focus;
        let style = if focused {
            Style::default()
                .bg(t.highlight_bg)
                .fg(t.fg)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        let marker = if focused { "▸ " } else { "  " };
        let value = form.value(*field);
        let editing = focused && form.editing.is_some();
        let mut spans = vec![Span::styled(
            format!("{marker}{:<20}", field.label()),
            style.fg(if *field == Field::Start {
                t.good
            } else {
                t.accent
            }),
        )];
        // A long path shows its end: the file name, and while typing the
        // cursor. Other long values show their start.
        let after = match (focused, editing) {
            (_, true) => 1,     // the cursor
            (true, false) => 2, // " ▸"
            (false, false) => 0,
        };
        let room = (left.width as usize).saturating_sub(2 + 22 + 2 + after);
        let path = editing || matches!(field, Field::Model | Field::Data);
        let value = fit_value(&value, room, path);
        if *field != Field::Start {
            let arrows = if focused && !editing {
                ["◂ ", " ▸"]
            } else {
                ["  ", "  "]
            };
            spans.push(Span::styled(
                format!(
                    "{}{value}{}",
                    arrows[0],
                    if editing { "█" } else { arrows[1] }
                ),
                style,
            ));
        } else {
            spans.push(Span::styled("  press Enter", Style::default().fg(t.muted)));
        }
        lines.push(Line::from(spans));
        if *field == Field::Start {
            break;
        }
    }
    let blank_at = lines.len();
    lines.push(Line::from(""));
    let hint = match form.field() {
        Field::Model | Field::Data => "←/→ choose · e type a path",
        Field::Classes => "←/→ move · space select · a all classes (right panel)",
        Field::Start => "Enter queues the job; it runs in the background",
        _ => "←/→ change · ↑/↓ move · Enter start",
    };
    let width = left.width.saturating_sub(2) as usize;
    for l in super::fill(hint, " ", width) {
        lines.push(Line::from(Span::styled(l, Style::default().fg(t.muted))));
    }
    let mut about = model_lines(form, t, width);
    if let Some(d) = form.chosen_dataset_info() {
        let (sep, style) = if d.starts_with(crate::app::setup::DATASET_ERROR) {
            // An error names a path: wrapped at spaces, in the warning colour.
            (" ", Style::default().fg(t.warn))
        } else {
            (" · ", Style::default().fg(t.muted))
        };
        about.extend(
            super::fill(&format!("data: {d}"), sep, width)
                .into_iter()
                .map(|l| Line::from(Span::styled(l, style))),
        );
    }
    // On a short terminal (80×24) the blank lines around the hint make way
    // for the model and dataset lines.
    let rows = left.height.saturating_sub(2) as usize;
    let need = lines.len() + about.len();
    if need < rows {
        lines.push(Line::from(""));
    } else if need > rows {
        lines.remove(blank_at);
    }
    lines.extend(about);
    f.render_widget(
        Paragraph::new(lines).block(super::block(" New job ", t)),
        left,
    );

    let [classes, queue] =
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(right);
    let items: Vec<ListItem> = form
        .class_names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mark = if form.selected.get(i).copied().unwrap_or(false) {
                "[x]"
            } else {
                "[ ]"
            };
            let cursor = form.field() == Field::Classes && i == form.class_cursor;
            let style = if cursor {
                Style::default()
                    .bg(t.highlight_bg)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            // Classes named by their index (MNIST's digits) need it once.
            let label = if *n == i.to_string() {
                format!("{mark} {i:>2}")
            } else {
                format!("{mark} {i:>2} {n}")
            };
            ListItem::new(label).style(style)
        })
        .collect();
    let title = match form.chosen_classes() {
        None => " Class subset: all ".to_string(),
        Some(c) => format!(" Class subset: {} of {} ", c.len(), form.class_names.len()),
    };
    let list = if items.is_empty() {
        List::new(vec![ListItem::new("(choose a dataset)")])
    } else {
        List::new(items)
    };
    // Scrolled to the cursor: CIFAR-100's classes do not fit the panel.
    let mut at = ListState::default().with_selected(Some(form.class_cursor));
    f.render_stateful_widget(list.block(super::block(title, t)), classes, &mut at);

    let runs: Vec<ListItem> = s
        .runs
        .iter()
        .rev()
        .filter(|r| r.job > 0)
        .map(|r| {
            let (txt, col) = match &r.status {
                RunStatus::Queued => ("queued".to_string(), t.muted),
                RunStatus::Running => (
                    format!("running {}/{}", r.done_layers(), r.layers.len()),
                    t.accent,
                ),
                RunStatus::Done => (
                    r.result
                        .as_ref()
                        .map_or("done".into(), |x| format!("{:.2} %", x.eval.top1_all)),
                    t.good,
                ),
                RunStatus::Failed(_) => ("failed".into(), t.bad),
                RunStatus::Cancelled => ("cancelled".into(), t.warn),
            };
            ListItem::new(Line::from(vec![
                Span::raw(format!("#{:<3} {:<14} ", r.job, r.label)),
                Span::styled(txt, Style::default().fg(col)),
            ]))
        })
        .collect();
    f.render_widget(
        List::new(runs).block(super::block(" Jobs this session ", t)),
        queue,
    );
}

/// The chosen model in brief once loaded (or why it cannot be), and a
/// warning when its classes do not match the dataset's.
fn model_lines(form: &crate::app::SetupForm, t: &Theme, width: usize) -> Vec<Line<'static>> {
    let muted = Style::default().fg(t.muted);
    match form.chosen_model_info() {
        None if form.models.is_empty() => vec![],
        None => vec![Line::from(Span::styled("loading the model…", muted))],
        Some(Err(e)) => {
            // Wrapped by characters: the error names a path, with no spaces.
            let text: Vec<char> = format!("cannot load: {e}").chars().collect();
            text.chunks(width.max(1))
                .map(|c| {
                    Line::from(Span::styled(
                        c.iter().collect::<String>(),
                        Style::default().fg(t.bad),
                    ))
                })
                .collect()
        }
        Some(Ok(info)) => {
            let mut v: Vec<Line> = super::fill(&info.brief, " · ", width)
                .into_iter()
                .map(|l| Line::from(Span::styled(l, muted)))
                .collect();
            let warning =
                crate::eval::accuracy::class_count_warning(info.classes, form.class_names.len());
            if let Some(warning) = warning {
                v.extend(
                    super::fill(&warning, " ", width)
                        .into_iter()
                        .map(|l| Line::from(Span::styled(l, Style::default().fg(t.warn)))),
                );
            }
            v
        }
    }
}

/// `value` in at most `room` characters: its end after `…` (`tail`, for
/// paths), or its start before `…`.
fn fit_value(value: &str, room: usize, tail: bool) -> String {
    let n = value.chars().count();
    if n <= room {
        return value.to_string();
    }
    let keep = room.saturating_sub(1);
    if tail {
        format!("…{}", value.chars().skip(n - keep).collect::<String>())
    } else {
        format!("{}…", value.chars().take(keep).collect::<String>())
    }
}

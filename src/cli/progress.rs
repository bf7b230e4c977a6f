//! A progress bar on stderr that appears only once a task has run for a
//! second, so quick commands stay quiet and scripts' stdout stays clean.
use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    start: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(label: &str) -> Self {
        Progress {
            label: label.to_string(),
            start: Instant::now(),
            bar: None,
        }
    }

    pub fn update(&mut self, done: usize, total: usize) {
        if self.bar.is_none() && self.start.elapsed() > Duration::from_secs(1) {
            let bar = ProgressBar::with_draw_target(
                Some(total as u64),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(self.label.clone());
            self.bar = Some(bar);
        }
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

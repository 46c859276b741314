//! Progress: bars on a terminal, plain periodic lines otherwise (cron logs), or nothing.
//!
//! indicatif hides itself when stderr is not a terminal, so the line mode is ours.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::delivery::Status;

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars if stderr is a terminal, else lines.
    Auto,
    /// Plain lines every few seconds.
    Lines,
    /// Nothing.
    Quiet,
}

/// Tracks the run and draws it.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: usize,
    done: usize,
    counts: HashMap<Status, usize>,
    retrying: usize,
    started: Instant,
    last_line: Instant,
    interval: Duration,
}

impl Progress {
    /// Starts tracking `total` messages.
    pub fn new(mode: Mode, total: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (mode == Mode::Auto && tty).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            lines: mode == Mode::Lines || (mode == Mode::Auto && !tty),
            total,
            done: 0,
            counts: HashMap::new(),
            retrying: 0,
            started: Instant::now(),
            last_line: Instant::now(),
            interval: Duration::from_secs(5),
        }
    }

    fn summary(&self) -> String {
        format!(
            "delivered {} bounced {} deferred {} invalid {} retrying {}",
            self.counts.get(&Status::Delivered).unwrap_or(&0),
            self.counts.get(&Status::Bounced).unwrap_or(&0),
            self.counts.get(&Status::Deferred).unwrap_or(&0),
            self.counts.get(&Status::Invalid).unwrap_or(&0),
            self.retrying
        )
    }

    /// A row got its final outcome.
    pub fn finished(&mut self, status: Status, was_retrying: bool) {
        self.done += 1;
        *self.counts.entry(status).or_default() += 1;
        if was_retrying {
            self.retrying = self.retrying.saturating_sub(1);
        }
        self.draw();
    }

    /// A row failed transiently and waits for another attempt.
    pub fn retrying(&mut self, first_time: bool) {
        if first_time {
            self.retrying += 1;
        }
        self.draw();
    }

    fn draw(&mut self) {
        if let Some(bar) = &self.bar {
            bar.set_position(self.done as u64);
            bar.set_message(self.summary());
        }
        if self.lines && self.last_line.elapsed() >= self.interval {
            self.last_line = Instant::now();
            eprintln!(
                "progress: {}/{} done in {:.0}s, {}",
                self.done,
                self.total,
                self.started.elapsed().as_secs_f64(),
                self.summary()
            );
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

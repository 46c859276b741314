//! Progress: bars on a terminal, plain periodic lines otherwise (cron logs), or nothing.
//!
//! indicatif hides itself when stderr is not a terminal, so the line mode is ours. Both show
//! the overall count by status and the busiest sites (most messages still to go), which is
//! where a slow run is usually stuck, and each mailbox provider's pace and state
//! (`google: 140/s, 5/5 conns`, `yahoo: slowed to 10/min`, `apple: suspended until 14:05 UTC`),
//! which is why it is stuck.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::delivery::ProviderBook;
use crate::outcome::Status;

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

/// Sites shown at most, besides the total.
const BUSIEST: usize = 3;

struct Site {
    name: String,
    total: usize,
    done: usize,
}

/// Tracks the run and draws it.
pub struct Progress {
    bar: Option<ProgressBar>,
    site_bars: Vec<ProgressBar>,
    lines: bool,
    total: usize,
    done: usize,
    counts: HashMap<Status, usize>,
    retrying: usize,
    /// Rows an earlier run finished (journal): done, with the status that run gave them.
    earlier: usize,
    sites: Vec<Site>,
    started: Instant,
    last_line: Instant,
    last_sites: Instant,
    interval: Duration,
    /// The engine's provider gates, read for their status.
    book: Option<ProviderBook>,
}

impl Progress {
    /// Starts tracking `total` rows (the whole list, as the summary counts them), the
    /// messages to send spread over `sites` (name, messages).
    pub fn new(mode: Mode, total: usize, sites: Vec<(String, usize)>) -> Self {
        let tty = std::io::stderr().is_terminal();
        let mut site_bars = Vec::new();
        let bar = (mode == Mode::Auto && tty).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar = multi.add(ProgressBar::new(total as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let style = ProgressStyle::with_template("  {bar:20.green/white} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            for _ in 0..BUSIEST.min(sites.len()) {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(style.clone());
                site_bars.push(b);
            }
            bar
        });
        Self {
            bar,
            site_bars,
            lines: mode == Mode::Lines || (mode == Mode::Auto && !tty),
            total,
            done: 0,
            counts: HashMap::new(),
            retrying: 0,
            earlier: 0,
            sites: sites
                .into_iter()
                .map(|(name, total)| Site {
                    name,
                    total,
                    done: 0,
                })
                .collect(),
            started: Instant::now(),
            last_line: Instant::now(),
            last_sites: Instant::now(),
            interval: Duration::from_secs(5),
            book: None,
        }
    }

    /// Shows the state of the providers in `book` too.
    pub fn providers(&mut self, book: ProviderBook) {
        self.book = Some(book);
    }

    /// `; google: 140/s, 5/5 conns; yahoo: slowed to 10/min, 1/3 conns`.
    fn providers_line(&self) -> String {
        let lines = self
            .book
            .as_ref()
            .map(|b| b.status_lines())
            .unwrap_or_default();
        lines.iter().map(|l| format!("; {l}")).collect()
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        for status in Status::ALL {
            let n = self.counts.get(&status).copied().unwrap_or(0);
            if n > 0 || matches!(status, Status::Delivered | Status::Deferred) {
                s.push_str(&format!("{} {n} ", status.as_str()));
            }
        }
        if self.earlier > 0 {
            s.push_str(&format!("done-earlier {} ", self.earlier));
        }
        s.push_str(&format!("retrying {}", self.retrying));
        s
    }

    /// `n` rows got their final outcome before sending (input errors, DNS, `--limit`).
    pub fn settled(&mut self, status: Status, n: usize) {
        if n > 0 {
            self.done += n;
            *self.counts.entry(status).or_default() += n;
        }
    }

    /// `n` rows were finished by an earlier run of the job (the journal).
    pub fn earlier(&mut self, n: usize) {
        self.done += n;
        self.earlier += n;
    }

    /// The sites with the most messages still to go, busiest first.
    fn busiest(&self) -> Vec<&Site> {
        let mut open: Vec<&Site> = self.sites.iter().filter(|s| s.done < s.total).collect();
        open.sort_by(|a, b| {
            (b.total - b.done)
                .cmp(&(a.total - a.done))
                .then(a.name.cmp(&b.name))
        });
        open.truncate(BUSIEST);
        open
    }

    fn busiest_line(&self) -> String {
        let busiest = self.busiest();
        if busiest.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = busiest
            .iter()
            .map(|s| format!("{} ({} left)", s.name, s.total - s.done))
            .collect();
        format!("; busiest: {}", parts.join(", "))
    }

    /// A row got its final outcome; `site` is the index of its site in the list given to
    /// [`Progress::new`], if it had one.
    pub fn finished(&mut self, status: Status, was_retrying: bool, site: Option<usize>) {
        self.done += 1;
        *self.counts.entry(status).or_default() += 1;
        if was_retrying {
            self.retrying = self.retrying.saturating_sub(1);
        }
        if let Some(s) = site.and_then(|i| self.sites.get_mut(i)) {
            s.done += 1;
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
            bar.set_message(format!("{}{}", self.summary(), self.providers_line()));
            if self.last_sites.elapsed() >= Duration::from_millis(200) {
                self.last_sites = Instant::now();
                let busiest = self.busiest();
                for (i, b) in self.site_bars.iter().enumerate() {
                    match busiest.get(i) {
                        Some(s) => {
                            b.set_length(s.total as u64);
                            b.set_position(s.done as u64);
                            b.set_message(s.name.clone());
                        }
                        None => {
                            b.set_length(0);
                            b.set_message("");
                        }
                    }
                }
            }
        }
        if self.lines && self.last_line.elapsed() >= self.interval {
            self.last_line = Instant::now();
            self.print_line();
        }
    }

    fn print_line(&self) {
        eprintln!(
            "progress: {}/{} rows done in {:.0}s, {}{}{}",
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64(),
            self.summary(),
            self.busiest_line(),
            self.providers_line()
        );
    }

    /// Clears the bars; in line mode, prints the last line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            for b in &self.site_bars {
                b.finish_and_clear();
            }
            bar.finish_and_clear();
        }
        if self.lines {
            self.print_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_sites_are_those_with_most_left() {
        let mut p = Progress::new(
            Mode::Quiet,
            10,
            vec![
                ("a".into(), 5),
                ("b".into(), 3),
                ("c".into(), 1),
                ("d".into(), 1),
            ],
        );
        for _ in 0..4 {
            p.finished(Status::Delivered, false, Some(0));
        }
        p.finished(Status::Bounced, false, Some(2));
        let names: Vec<&str> = p.busiest().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["b", "a", "d"]);
        assert_eq!(
            p.busiest_line(),
            "; busiest: b (3 left), a (1 left), d (1 left)"
        );
        assert_eq!(p.summary(), "delivered 4 bounced 1 deferred 0 retrying 0");
    }
}

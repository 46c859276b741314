//! Where a run's time goes: how long each stage took and when the first SMTP session opened,
//! measured from the start of the run (`run --timings` prints it). Start-up cost is what a
//! canary (`--limit 1`) or a small scheduled run pays; this says which stage to look at.

use std::fmt;
use std::time::{Duration, Instant};

/// Stage durations of one run.
#[derive(Clone, Debug)]
pub struct Timings {
    /// When the run started.
    started: Instant,
    /// When the last stage ended.
    last: Instant,
    /// Each stage's name and duration, in order.
    pub stages: Vec<(&'static str, Duration)>,
    /// How long after the start the first SMTP session opened (`None`: none did).
    pub first_connection: Option<Duration>,
}

impl Timings {
    /// Starts the clock at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            last: started,
            stages: Vec::new(),
            first_connection: None,
        }
    }

    /// Ends stage `name` now.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.stages.push((name, now - self.last));
        self.last = now;
    }

    /// Notes when the first SMTP session opened.
    pub fn connected_at(&mut self, at: Option<Instant>) {
        self.first_connection = at.map(|t| t.saturating_duration_since(self.started));
    }
}

impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        f.write_str("timings:")?;
        for (i, (name, d)) in self.stages.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{name} {:.1} ms", ms(*d))?;
        }
        if let Some(d) = self.first_connection {
            write!(f, "; first SMTP session {:.1} ms after the start", ms(d))?;
        }
        writeln!(f)
    }
}

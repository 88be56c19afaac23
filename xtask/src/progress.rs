//! Progress on stderr, in one place: each step of a command as a spinner with its name and
//! elapsed time on a terminal, else as one plain timed line when it is done; the lines between
//! steps ([`say!`]); and tracing's output, drawn above a spinner so that it never tears it.
//! `--quiet` prints errors only. Stdout is never written here.
//!
//! The decisions (which [`Mode`], the text of a done line, what an engine [`Event`] shows) are
//! plain functions; [`Output`] draws them with indicatif.

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use e2e_migrations::progress::{Event, Observer};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A terminal: a spinner per step, redrawn in place, then its done line.
    Live,
    /// Not a terminal (CI, a pipe, a file), `TERM=dumb` or `NO_COLOR`: one line per step when
    /// it is done, and the lines between steps.
    Plain,
    /// `--quiet`: nothing but errors.
    Quiet,
}

/// What the mode is decided from, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `--quiet` was given.
    pub(crate) quiet: bool,
    /// Stderr is a terminal.
    pub(crate) stderr_is_terminal: bool,
    /// `$TERM`, if set.
    pub(crate) term: Option<String>,
    /// `$NO_COLOR`, if set.
    pub(crate) no_color: Option<String>,
}

impl Facts {
    /// The facts of this process.
    pub(crate) fn of_this_process(quiet: bool) -> Facts {
        let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Facts {
            quiet,
            stderr_is_terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            term: var("TERM"),
            no_color: var("NO_COLOR"),
        }
    }
}

/// Decides how progress is shown (pure): `--quiet` wins; a spinner needs a terminal that can
/// redraw a line (not `TERM=dumb`) and a user who has not asked for plain output (`NO_COLOR`,
/// when set and not empty, as no-color.org defines it).
pub(crate) fn decide(f: &Facts) -> Mode {
    let dumb = f.term.as_deref().is_some_and(|t| t.trim() == "dumb");
    let no_color = f.no_color.as_deref().is_some_and(|v| !v.is_empty());
    if f.quiet {
        Mode::Quiet
    } else if !f.stderr_is_terminal || dumb || no_color {
        Mode::Plain
    } else {
        Mode::Live
    }
}

/// A duration for people (pure): `850 ms`, `12.3 s`, `2 min 05 s`.
pub(crate) fn format_elapsed(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} min {:02} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// The spinner's clock (pure): tenths of seconds, so that it visibly moves.
fn format_ticking(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format_elapsed(d)
    }
}

/// The line a step ends with (pure): `  what: outcome (time)`, or `  what (time)` without one.
pub(crate) fn done_line(what: &str, outcome: &str, elapsed: Duration) -> String {
    let time = format_elapsed(elapsed);
    if outcome.is_empty() {
        format!("  {what} ({time})")
    } else {
        format!("  {what}: {outcome} ({time})")
    }
}

/// What an engine event shows while its step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Show {
    /// Beside the step's spinner, replacing what was there.
    Detail(String),
    /// A line of its own under the step.
    Note(String),
}

/// What `event` shows in `mode` (pure). On a terminal the spinner says what the step is doing
/// now; off one, only a wait for the lock gets a line (as it always has), so a log shows why a
/// step took long without a line per migration.
pub(crate) fn show(mode: Mode, event: &Event) -> Option<Show> {
    match mode {
        Mode::Quiet => None,
        Mode::Plain => matches!(event, Event::LockWaiting { .. }).then(|| Show::Note(event.to_string())),
        Mode::Live => match event {
            Event::Applied { .. } => None,
            other => Some(Show::Detail(other.to_string())),
        },
    }
}

/// Where progress goes: the mode, and on a terminal the set of spinners drawn on stderr.
#[derive(Clone)]
pub(crate) struct Output {
    mode: Mode,
    bars: Option<MultiProgress>,
}

impl Output {
    /// Progress in `mode`, on stderr.
    pub(crate) fn new(mode: Mode) -> Output {
        let bars = (mode == Mode::Live).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Output { mode, bars }
    }

    /// Live progress drawn on `target` (a virtual terminal, in tests).
    #[cfg(test)]
    fn drawn_on(target: ProgressDrawTarget) -> Output {
        Output { mode: Mode::Live, bars: Some(MultiProgress::with_draw_target(target)) }
    }

    /// The mode.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// A line of progress (not `--quiet`), above the spinners.
    pub(crate) fn say(&self, text: &str) {
        match (&self.bars, self.mode) {
            (_, Mode::Quiet) => {}
            (Some(bars), _) => {
                if bars.println(text).is_err() {
                    eprintln!("{text}");
                }
            }
            (None, _) => eprintln!("{text}"),
        }
    }

    /// Writes `bytes` (a log record, filtered already) on stderr, above the spinners.
    pub(crate) fn log(&self, bytes: &[u8]) {
        match &self.bars {
            Some(bars) => {
                let text = String::from_utf8_lossy(bytes);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                if bars.println(text).is_err() {
                    let _ = std::io::stderr().write_all(bytes);
                }
            }
            None => {
                let _ = std::io::stderr().write_all(bytes);
            }
        }
    }

    /// Runs `f` with the spinners hidden, for what writes on the terminal itself (a child
    /// process such as `kind create cluster`).
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bars {
            Some(bars) => bars.suspend(f),
            None => f(),
        }
    }

    /// Starts a step named `what`: on a terminal its spinner shows at once.
    pub(crate) fn step(&self, what: impl Into<String>) -> Step {
        let what = what.into();
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(spinner_style());
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Step { out: self.clone(), what, start: Instant::now(), bar }
    }
}

/// `  ⠙ what: detail                      3.2 s`: the message takes the width left, cut to fit.
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("  {spinner} {wide_msg} {clock}").expect("a valid template").with_key(
        "clock",
        |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&format_ticking(s.elapsed()));
        },
    )
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Sets this process's progress output from the facts (once, at start); returns its mode.
pub(crate) fn init(facts: &Facts) -> Mode {
    OUTPUT.get_or_init(|| Output::new(decide(facts))).mode()
}

/// This process's progress output (plain lines until [`init`] says otherwise).
pub(crate) fn output() -> &'static Output {
    OUTPUT.get_or_init(|| Output::new(Mode::Plain))
}

/// Whether `--quiet` is in force.
pub(crate) fn quiet() -> bool {
    output().mode() == Mode::Quiet
}

/// Runs `f` with the spinners hidden (see [`Output::suspend`]).
pub(crate) fn suspend<R>(f: impl FnOnce() -> R) -> R {
    output().suspend(f)
}

/// Prints a line of progress on stderr, as `eprintln!` would, but above any spinner and not
/// under `--quiet`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::progress::output().say(&format!($($arg)*))
    };
}
pub(crate) use say;

/// One step of a command: a spinner while it runs (on a terminal), then `  what: outcome (time)`.
/// Dropped without [`Step::done`] (an error), it leaves no line: the error says what failed.
pub(crate) struct Step {
    out: Output,
    what: String,
    start: Instant,
    bar: Option<ProgressBar>,
}

impl Step {
    /// Starts timing a step (and its spinner).
    pub(crate) fn start(what: impl Into<String>) -> Step {
        output().step(what)
    }

    /// Says what the step is doing now, beside its spinner; nothing off a terminal.
    pub(crate) fn detail(&self, text: impl std::fmt::Display) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}: {text}", self.what));
        }
    }

    /// Whether [`Step::detail`] shows anywhere (a spinner on a terminal), so that a step can
    /// skip gathering what only the spinner would show.
    pub(crate) fn shows_detail(&self) -> bool {
        self.bar.is_some()
    }

    /// A line under the step (not `--quiet`), e.g. `    applied 015_x.sql`.
    pub(crate) fn note(&self, text: impl std::fmt::Display) {
        self.out.say(&format!("    {text}"));
    }

    /// An observer for the engine's events during this step: what the step waits for and
    /// what it is applying shows beside the spinner (see [`show`]).
    pub(crate) fn observer(&self) -> Observer {
        let (mode, out, bar, what) = (self.out.mode, self.out.clone(), self.bar.clone(), self.what.clone());
        Observer::new(move |event| match show(mode, event) {
            Some(Show::Detail(text)) => {
                if let Some(bar) = &bar {
                    bar.set_message(format!("{what}: {text}"));
                }
            }
            Some(Show::Note(text)) => out.say(&format!("    {text}")),
            None => {}
        })
    }

    /// Ends the step: its spinner gives way to the done line with its outcome and time.
    pub(crate) fn done(mut self, outcome: impl std::fmt::Display) {
        let line = done_line(&self.what, &outcome.to_string(), self.start.elapsed());
        self.out.say(&line);
        self.clear();
    }

    fn clear(&mut self) {
        if let (Some(bar), Some(bars)) = (self.bar.take(), &self.out.bars) {
            bar.finish_and_clear();
            bars.remove(&bar);
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.clear();
    }
}

/// tracing's writer: each record whole, above the spinners (see [`Output::log`]).
pub(crate) struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogRecord;

    fn make_writer(&'a self) -> LogRecord {
        LogRecord(Vec::new())
    }
}

/// One log record, written out when tracing is done with it.
pub(crate) struct LogRecord(Vec<u8>);

impl std::io::Write for LogRecord {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogRecord {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            output().log(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::InMemoryTerm;

    fn facts(quiet: bool, terminal: bool, term: Option<&str>, no_color: Option<&str>) -> Facts {
        Facts {
            quiet,
            stderr_is_terminal: terminal,
            term: term.map(str::to_string),
            no_color: no_color.map(str::to_string),
        }
    }

    #[test]
    fn a_spinner_needs_a_terminal_that_redraws_and_quiet_wins() {
        assert_eq!(decide(&facts(false, true, Some("xterm-256color"), None)), Mode::Live);
        assert_eq!(decide(&facts(false, true, None, None)), Mode::Live, "no TERM (a terminal all the same)");
        assert_eq!(decide(&facts(false, false, Some("xterm"), None)), Mode::Plain, "a pipe or a file");
        assert_eq!(decide(&facts(false, true, Some("dumb"), None)), Mode::Plain);
        assert_eq!(decide(&facts(false, true, Some("xterm"), Some("1"))), Mode::Plain, "NO_COLOR");
        assert_eq!(decide(&facts(false, true, Some("xterm"), Some(""))), Mode::Live, "an empty NO_COLOR is unset");
        assert_eq!(decide(&facts(true, true, Some("xterm"), None)), Mode::Quiet);
        assert_eq!(decide(&facts(true, false, None, Some("1"))), Mode::Quiet);
    }

    #[test]
    fn done_lines_keep_their_shape_and_say_the_time_for_people() {
        let ms = Duration::from_millis;
        assert_eq!(
            done_line("migrations (audit)", "3 applied, 0 already applied", ms(12)),
            "  migrations (audit): 3 applied, 0 already applied (12 ms)"
        );
        assert_eq!(done_line("connect", "", ms(999)), "  connect (999 ms)");
        assert_eq!(done_line("cluster e2e", "created", ms(1000)), "  cluster e2e: created (1.0 s)");
        assert_eq!(done_line("ready", "pod p", ms(59_949)), "  ready: pod p (59.9 s)");
        assert_eq!(done_line("ready", "pod p", ms(125_400)), "  ready: pod p (2 min 05 s)");
        assert_eq!(format_ticking(ms(40)), "0.0 s");
        assert_eq!(format_ticking(ms(3_250)), "3.2 s");
        assert_eq!(format_ticking(ms(61_000)), "1 min 01 s");
    }

    #[test]
    fn a_terminal_shows_what_a_step_does_now_and_a_log_shows_only_lock_waits() {
        let waiting = Event::LockWaiting {
            lock: "the migration lock".into(),
            holder: "pid 7 (psql, idle: \"\")".into(),
            timeout: Duration::from_secs(120),
        };
        let applying = Event::Applying { index: 1, total: 2, version: 1, name: "001_a.sql".into(), statements: 1 };
        let applied = Event::Applied { index: 1, total: 2, name: "001_a.sql".into(), duration: Duration::ZERO };
        let text = waiting.to_string();
        assert_eq!(show(Mode::Live, &waiting), Some(Show::Detail(text.clone())));
        assert_eq!(show(Mode::Plain, &waiting), Some(Show::Note(text)));
        assert_eq!(show(Mode::Quiet, &waiting), None);
        assert_eq!(show(Mode::Live, &applying), Some(Show::Detail("applying 001_a.sql (1 of 2, 1 statement)".into())));
        assert_eq!(show(Mode::Plain, &applying), None, "no line per migration in a log");
        assert_eq!(show(Mode::Live, &applied), None, "the next one replaces it");
    }

    /// Waits until the virtual terminal shows `want` (the spinner draws from its own thread).
    fn until_shown(term: &InMemoryTerm, want: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let shown = term.contents();
            if want(&shown) || start.elapsed() > Duration::from_secs(5) {
                return shown;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn on_a_terminal_lines_and_logs_go_above_the_spinner_and_the_done_line_replaces_it() {
        let term = InMemoryTerm::new(10, 80);
        let out = Output::drawn_on(ProgressDrawTarget::term_like(Box::new(term.clone())));
        out.say("backend: local");
        let step = out.step("migrations (audit)");
        step.observer().notify(&Event::Applying {
            index: 2,
            total: 300,
            version: 2,
            name: "002_b.sql".into(),
            statements: 4,
        });
        let shown = until_shown(&term, |s| s.contains("002_b.sql"));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "backend: local", "{shown}");
        assert!(
            lines[1].starts_with("  ")
                && lines[1].contains("migrations (audit): applying 002_b.sql (2 of 300, 4 statements)"),
            "{shown}"
        );
        assert!(lines[1].trim_end().ends_with(" s"), "the clock, at the right: {shown}");

        // a log record mid-step: above the spinner, which stays whole on the last line
        out.log(b" WARN a warning from the library\n");
        let shown = until_shown(&term, |s| s.contains("WARN"));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[..2], ["backend: local", " WARN a warning from the library"], "{shown}");
        assert!(lines[2].contains("migrations (audit): applying 002_b.sql"), "{shown}");
        assert_eq!(lines.len(), 3, "{shown}");

        step.done("300 applied, 0 already applied");
        let shown = until_shown(&term, |s| s.contains("300 applied"));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "the spinner is gone: {shown}");
        assert!(lines[2].starts_with("  migrations (audit): 300 applied, 0 already applied ("), "{shown}");
    }

    #[test]
    fn a_step_that_fails_leaves_no_spinner_behind() {
        let term = InMemoryTerm::new(10, 80);
        let out = Output::drawn_on(ProgressDrawTarget::term_like(Box::new(term.clone())));
        out.say("backend: local");
        let step = out.step("local PostgreSQL");
        until_shown(&term, |s| s.contains("local PostgreSQL"));
        drop(step);
        assert_eq!(until_shown(&term, |s| !s.contains("local PostgreSQL")), "backend: local");
    }
}

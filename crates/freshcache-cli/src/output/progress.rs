//! Progress of long commands: a bar on a terminal, plain lines otherwise (or nothing on a pipe
//! where the command never printed progress), never with `--json`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// How a long command reports progress on stderr.
pub(crate) enum Progress {
    /// A bar redrawn in place: stderr is a terminal and the result is not `--json`.
    Bar(ProgressBar),
    /// One plain line per step, for logs and pipes.
    Lines,
    /// Nothing.
    Off,
}

impl Progress {
    /// A bar of `len` steps on a terminal without `--json`; otherwise plain lines when
    /// `lines` is true, else nothing.
    pub(crate) fn new(len: u64, json: bool, lines: bool) -> Self {
        use std::io::IsTerminal as _;
        if std::io::stderr().is_terminal() && !json {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template("[{pos}/{len}] {wide_bar} {msg}") {
                bar.set_style(style);
            }
            Progress::Bar(bar)
        } else if lines {
            Progress::Lines
        } else {
            Progress::Off
        }
    }

    /// Removes the bar, if one was drawn.
    pub(crate) fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Cleanup's phases: the bar's position and message, or one line per phase.
pub(crate) fn progress(p: &Progress, phase: Phase) {
    let (step, text) = match phase {
        Phase::Expired => (1, "removing expired entries…"),
        Phase::SizeLimit => (2, "enforcing the size limit…"),
        Phase::Repair => (3, "repairing rows and files…"),
        _ => (3, "done"),
    };
    match p {
        Progress::Bar(bar) => {
            bar.set_position(step - 1);
            bar.set_message(text);
        }
        Progress::Lines if text == "done" => eprintln!("{text}"),
        Progress::Lines => eprintln!("[{step}/3] {text}"),
        Progress::Off => {}
    }
}

/// One warmed item: the bar advances (failures are printed above it), or one line per item.
pub(crate) fn warm_progress(p: &Progress, done: usize, total: usize, r: &WarmResult) {
    let status = match r.status {
        WarmStatus::Fresh => "fresh",
        WarmStatus::Loaded => "loaded",
        _ => "FAILED",
    };
    let line = match &r.reason {
        Some(why) => format!("[{done}/{total}] {} {status}: {why}", r.key),
        None => format!("[{done}/{total}] {} {status}", r.key),
    };
    match p {
        Progress::Bar(bar) => {
            if r.status == WarmStatus::Failed {
                bar.println(line);
            }
            bar.set_position(done as u64);
            bar.set_message(format!("{} {status}", r.key));
        }
        Progress::Lines => eprintln!("{line}"),
        Progress::Off => {}
    }
}

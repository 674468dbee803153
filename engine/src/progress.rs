//! Progress bars on stderr (indicatif), drawn only when stderr is a terminal, shared by
//! all workers of a process; and, for a process that `synpref launch` started, the
//! same progress as machine-readable lines (`ProgressLine`) that the launcher sums over
//! its processes into one bar.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The environment variable `synpref launch` sets in its processes: with the value
/// `lines`, progress goes to stderr as `ProgressLine`s instead of bars.
pub const PROGRESS_ENV: &str = "SYNPREF_PROGRESS";

/// How often a process in `lines` mode reports a bar's position.
const LINE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// One report of a bar's state: `synpref-progress<TAB>message<TAB>position<TAB>length`
/// (length 0: unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressLine {
    pub message: String,
    pub position: u64,
    pub length: u64,
    pub unit: String,
}

impl ProgressLine {
    const PREFIX: &'static str = "synpref-progress\t";

    pub fn format(&self) -> String {
        format!(
            "{}{}\t{}\t{}\t{}",
            Self::PREFIX,
            self.message.replace(['\t', '\n'], " "),
            self.position,
            self.length,
            self.unit.replace(['\t', '\n'], " ")
        )
    }

    /// The report a line of a process's stderr holds, if it is one.
    pub fn parse(line: &str) -> Option<ProgressLine> {
        let mut f = line.strip_prefix(Self::PREFIX)?.split('\t');
        Some(ProgressLine {
            message: f.next()?.to_string(),
            position: f.next()?.parse().ok()?,
            length: f.next()?.parse().ok()?,
            unit: f.next()?.to_string(),
        })
    }
}

fn lines_mode() -> bool {
    std::env::var(PROGRESS_ENV).is_ok_and(|v| v == "lines")
}

/// A progress bar counting `unit`s towards `total` (0: unknown).
pub fn bar(message: &str, total: u64, unit: &str) -> ProgressBar {
    if lines_mode() {
        return reported_bar(message, total, unit);
    }
    let pb = ProgressBar::with_draw_target(
        if total > 0 { Some(total) } else { None },
        ProgressDrawTarget::stderr(),
    );
    let template = if total > 0 {
        format!("{{msg:>10}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})")
    } else {
        format!("{{msg:>10}} {{spinner}} {{human_pos}} {unit} ({{per_sec}})")
    };
    pb.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// A hidden bar whose state a thread prints as `ProgressLine`s until the bar is
/// finished or dropped.
fn reported_bar(message: &str, total: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        if total > 0 { Some(total) } else { None },
        ProgressDrawTarget::hidden(),
    );
    pb.set_message(message.to_string());
    let weak = pb.downgrade();
    let unit = unit.to_string();
    std::thread::spawn(move || {
        let mut last = None;
        loop {
            std::thread::sleep(LINE_INTERVAL);
            let Some(pb) = weak.upgrade() else { break };
            let line = ProgressLine {
                message: pb.message(),
                position: pb.position(),
                length: pb.length().unwrap_or(0),
                unit: unit.clone(),
            };
            if last.as_ref() != Some(&line) {
                eprintln!("{}", line.format());
                last = Some(line);
            }
            if pb.is_finished() {
                break;
            }
        }
    });
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_reads_back_as_written_and_other_lines_are_not_progress() {
        let line = ProgressLine {
            message: "curate\tx".into(),
            position: 12,
            length: 100,
            unit: "pairs".into(),
        };
        let back = ProgressLine::parse(&line.format()).unwrap();
        assert_eq!(
            (back.message.as_str(), back.position, back.length),
            ("curate x", 12, 100)
        );
        assert_eq!(ProgressLine::parse("synpref: error: x"), None);
        assert_eq!(
            ProgressLine::parse("synpref-progress\tcurate\tx\t1\tp"),
            None
        );
    }
}

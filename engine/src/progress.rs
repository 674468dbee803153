//! Progress bars on stderr (indicatif), drawn only when stderr is a terminal, shared by
//! all workers of a process.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar counting `unit`s towards `total` (0: unknown).
pub fn bar(message: &str, total: u64, unit: &str) -> ProgressBar {
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

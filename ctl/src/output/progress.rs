//! Convergence progress like `docker service create`: an overall line, one line per slot with a
//! progress bar, and a verify line. On a terminal the block is redrawn in place; otherwise each
//! line is printed once whenever it changes, so logs stay readable.

use std::io::{IsTerminal, Write};

use shoal_proto::v1::TaskState;

use crate::commands::converge::{Slot, Snapshot, Verdict};

/// Width of the progress bar, in '=' characters.
const BAR: usize = 50;

/// Docker's step number of a state on the way to running (out of 9).
fn step(state: TaskState) -> usize {
    match state {
        TaskState::TaskNew => 1,
        TaskState::TaskPending => 3,
        TaskState::TaskAssigned => 4,
        TaskState::TaskAccepted => 5,
        TaskState::TaskPreparing => 6,
        TaskState::TaskStarting => 8,
        _ => 9,
    }
}

/// `[=====>     ]` for `current` out of `total` steps.
pub fn bar(current: usize, total: usize) -> String {
    let filled = (current * 100 / total.max(1) / 2).min(BAR);
    format!("[{}>{}]", "=".repeat(filled), " ".repeat(BAR - filled))
}

/// One slot's line: `1/3: running   [=====...>]`, or its error while it has one.
pub fn slot_line(slot: &Slot) -> String {
    let Some(state) = slot.state else {
        return format!("{}: {:<9} {}", slot.label, "new", bar(1, 9));
    };
    if state.is_terminal() {
        let why = slot.why();
        return format!("{}: {:<9} {why}", slot.label, state.display_name())
            .trim_end()
            .to_string();
    }
    if state != TaskState::TaskRunning && !slot.err.is_empty() {
        return format!("{}: {}", slot.label, slot.err);
    }
    format!(
        "{}: {:<9} {}",
        slot.label,
        state.display_name(),
        bar(step(state), 9)
    )
}

/// The whole block for one poll.
pub fn lines(snap: &Snapshot, verdict: &Verdict) -> Vec<String> {
    let mut out = vec![format!(
        "overall progress: {} out of {} tasks",
        snap.running, snap.desired
    )];
    out.extend(snap.slots.iter().map(slot_line));
    match verdict {
        Verdict::Verifying => {
            out.push("verify: Waiting 1 seconds to verify that tasks are stable...".into())
        }
        Verdict::Converged => out.push("verify: Service converged".into()),
        Verdict::Converging | Verdict::Failed(_) => {}
    }
    out
}

/// Redraws the block in place (terminals).
#[derive(Debug, Default)]
pub struct Redraw {
    last: Vec<String>,
}

impl Redraw {
    /// Writes `block` over the previously drawn one.
    pub fn render(&mut self, out: &mut impl Write, block: &[String]) -> std::io::Result<()> {
        if block == self.last.as_slice() {
            return Ok(());
        }
        let drawn = self.last.len();
        let mut s = String::new();
        if drawn > 0 {
            s.push_str(&format!("\x1b[{drawn}A"));
        }
        for line in block {
            s.push_str("\x1b[2K");
            s.push_str(line);
            s.push('\n');
        }
        // Clear what is left of a taller previous block, then come back.
        let extra = drawn.saturating_sub(block.len());
        for _ in 0..extra {
            s.push_str("\x1b[2K\n");
        }
        if extra > 0 {
            s.push_str(&format!("\x1b[{extra}A"));
        }
        self.last = block.to_vec();
        out.write_all(s.as_bytes())?;
        out.flush()
    }
}

/// Prints each line once when it changes (pipes, files, CI logs).
#[derive(Debug, Default)]
pub struct Plain {
    last: Vec<String>,
}

impl Plain {
    /// Writes the lines of `block` that differ from the previous block.
    pub fn render(&mut self, out: &mut impl Write, block: &[String]) -> std::io::Result<()> {
        for (i, line) in block.iter().enumerate() {
            if self.last.get(i) != Some(line) {
                writeln!(out, "{line}")?;
            }
        }
        self.last = block.to_vec();
        out.flush()
    }
}

/// Progress output on stdout, redrawn on a terminal and plain otherwise.
#[derive(Debug)]
pub enum Progress {
    /// stdout is a terminal.
    Tty(Redraw),
    /// stdout is a pipe or a file.
    Plain(Plain),
}

impl Progress {
    /// Picks the renderer for the current stdout.
    pub fn new() -> Self {
        if std::io::stdout().is_terminal() {
            Progress::Tty(Redraw::default())
        } else {
            Progress::Plain(Plain::default())
        }
    }

    /// Draws the state of one poll.
    pub fn draw(&mut self, snap: &Snapshot, verdict: &Verdict) -> std::io::Result<()> {
        self.draw_lines(&lines(snap, verdict))
    }

    /// Draws a block made elsewhere (an update's progress).
    pub fn draw_lines(&mut self, block: &[String]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            Progress::Tty(r) => r.render(&mut out, block),
            Progress::Plain(p) => p.render(&mut out, block),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(label: &str, state: Option<TaskState>) -> Slot {
        Slot {
            label: label.into(),
            task_id: "t".into(),
            state,
            err: String::new(),
            message: String::new(),
            exit_code: 0,
            ended: 0,
        }
    }

    #[test]
    fn bars() {
        assert_eq!(bar(9, 9), format!("[{}>]", "=".repeat(50)));
        assert_eq!(bar(0, 9), format!("[>{}]", " ".repeat(50)));
        assert_eq!(bar(6, 9).len(), 53);
    }

    #[test]
    fn slot_lines() {
        assert_eq!(
            slot_line(&slot("1/3", Some(TaskState::TaskRunning))),
            format!("1/3: running   [{}>]", "=".repeat(50))
        );
        assert!(
            slot_line(&slot("2/3", Some(TaskState::TaskPreparing))).starts_with("2/3: preparing [")
        );
        let mut pending = slot("3/3", Some(TaskState::TaskPending));
        pending.err = "no suitable node (1 node not available)".into();
        assert_eq!(
            slot_line(&pending),
            "3/3: no suitable node (1 node not available)"
        );
        let mut failed = slot("1/1", Some(TaskState::TaskFailed));
        failed.exit_code = 1;
        assert_eq!(slot_line(&failed), "1/1: failed    exit code 1");
    }

    #[test]
    fn block_and_renderers() {
        let snap = Snapshot {
            slots: vec![slot("1/1", Some(TaskState::TaskRunning))],
            running: 1,
            desired: 1,
        };
        let block = lines(&snap, &Verdict::Converged);
        assert_eq!(block[0], "overall progress: 1 out of 1 tasks");
        assert_eq!(block[2], "verify: Service converged");

        let mut plain = Plain::default();
        let mut buf = Vec::new();
        plain
            .render(&mut buf, &["a".into(), "b".into()])
            .expect("write");
        plain
            .render(&mut buf, &["a".into(), "c".into()])
            .expect("write");
        assert_eq!(String::from_utf8_lossy(&buf), "a\nb\nc\n");

        let mut redraw = Redraw::default();
        let mut buf = Vec::new();
        redraw
            .render(&mut buf, &["a".into(), "b".into()])
            .expect("write");
        redraw
            .render(&mut buf, &["a".into(), "b".into()])
            .expect("write");
        redraw.render(&mut buf, &["c".into()]).expect("write");
        assert_eq!(
            String::from_utf8_lossy(&buf),
            "\x1b[2Ka\n\x1b[2Kb\n\x1b[2A\x1b[2Kc\n\x1b[2K\n\x1b[1A"
        );
    }
}

//! Everything shoalctl prints: tables, JSON, convergence progress, and the small formatting rules
//! (state names, "5 seconds ago", truncated IDs) docker users expect.

pub mod json;
pub mod progress;
pub mod rollout;
pub mod table;

use std::io::Write;

use shoal_proto::v1::{NodeAvailability, NodeState, RestartCondition, ServiceMode, TaskState};

/// Length of a truncated ID, as docker prints them.
pub const SHORT_ID: usize = 12;

/// Writes text to stdout; a closed pipe (`| head`) ends the program quietly in `main`.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Prints one item a line (the IDs of `--quiet`).
pub fn print_lines<T: std::fmt::Display>(
    items: impl IntoIterator<Item = T>,
) -> std::io::Result<()> {
    let mut out = String::new();
    for item in items {
        out.push_str(&item.to_string());
        out.push('\n');
    }
    print(&out)
}

/// Prints the rows of a listing: a JSON object a line, or a table with these headers.
pub fn print_rows<R>(
    rows: &[R],
    format: crate::cli::Format,
    headers: &[&str],
    json: impl Fn(&R) -> serde_json::Value,
    cells: impl Fn(&R) -> Vec<String>,
) -> std::io::Result<()> {
    let out = match format {
        crate::cli::Format::Json => rows.iter().map(|r| json::line(&json(r))).collect(),
        crate::cli::Format::Table => {
            let mut t = table::Table::new(headers);
            rows.iter().for_each(|r| t.row(cells(r)));
            t.render()
        }
    };
    print(&out)
}

/// The first 12 characters of an ID unless `no_trunc`.
pub fn short_id(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        id.get(..SHORT_ID).unwrap_or(id)
    }
}

/// Upper-cases the first letter ("running" -> "Running").
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Lower-case task state name from its wire value ("running"); unknown values print as a number.
pub fn task_state_name(state: i32) -> String {
    TaskState::try_from(state)
        .map(|s| s.display_name().to_string())
        .unwrap_or_else(|_| format!("state({state})"))
}

/// Docker's `units.HumanDuration`: "Less than a second", "5 seconds", "About a minute", ...
pub fn human_duration(ns: i64) -> String {
    let secs = ns.max(0) / 1_000_000_000;
    let minutes = secs / 60;
    let hours = (ns.max(0) as f64 / 3.6e12).round() as i64;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", secs / 3600 / 24 / 365)
    }
}

/// `service ps`'s CURRENT STATE: "Running 5 seconds ago".
pub fn current_state(state: i32, since_ns: i64, now_ns: i64) -> String {
    let ago = if since_ns > 0 {
        human_duration(now_ns - since_ns).to_lowercase()
    } else {
        "less than a second".into()
    };
    format!("{} {ago} ago", capitalize(&task_state_name(state)))
}

/// Docker's truncation of a task error for `service ps`: 30 characters with an ellipsis, quoted.
pub fn task_error(err: &str, no_trunc: bool) -> String {
    const MAX: usize = 30;
    if err.is_empty() {
        return String::new();
    }
    if !no_trunc && err.chars().count() > MAX {
        let head: String = err.chars().take(MAX - 1).collect();
        format!("\"{head}…\"")
    } else {
        format!("\"{err}\"")
    }
}

/// "replicated" | "global".
pub fn mode_name(mode: i32) -> &'static str {
    match ServiceMode::try_from(mode) {
        Ok(ServiceMode::ModeGlobal) => "global",
        _ => "replicated",
    }
}

/// "any" | "on-failure" | "none", as docker spells restart conditions.
pub fn restart_condition_name(c: i32) -> &'static str {
    match RestartCondition::try_from(c) {
        Ok(RestartCondition::RestartOnFailure) => "on-failure",
        Ok(RestartCondition::RestartNone) => "none",
        _ => "any",
    }
}

/// "ready" | "down" | "disconnected" | "unknown".
pub fn node_state_name(state: i32) -> &'static str {
    match NodeState::try_from(state) {
        Ok(NodeState::NodeReady) => "ready",
        Ok(NodeState::NodeDown) => "down",
        Ok(NodeState::NodeDisconnected) => "disconnected",
        _ => "unknown",
    }
}

/// "active" | "pause" | "drain".
pub fn availability_name(a: i32) -> &'static str {
    match NodeAvailability::try_from(a) {
        Ok(NodeAvailability::AvailabilityPause) => "pause",
        Ok(NodeAvailability::AvailabilityDrain) => "drain",
        _ => "active",
    }
}

/// RFC 3339 with nanoseconds in UTC ("2026-11-23T10:00:00.123456789Z"); empty for 0.
pub fn rfc3339(ns: i64) -> String {
    if ns <= 0 {
        return String::new();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.unsigned_abs());
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(S / 2), "Less than a second");
        assert_eq!(human_duration(S), "1 second");
        assert_eq!(human_duration(5 * S), "5 seconds");
        assert_eq!(human_duration(90 * S), "About a minute");
        assert_eq!(human_duration(10 * 60 * S), "10 minutes");
        assert_eq!(human_duration(3600 * S), "About an hour");
        assert_eq!(human_duration(5 * 3600 * S), "5 hours");
        assert_eq!(human_duration(3 * 24 * 3600 * S), "3 days");
    }

    #[test]
    fn current_state_text() {
        let running = TaskState::TaskRunning as i32;
        assert_eq!(
            current_state(running, 10 * S, 15 * S),
            "Running 5 seconds ago"
        );
        assert_eq!(
            current_state(TaskState::TaskPending as i32, 10 * S, 10 * S),
            "Pending less than a second ago"
        );
    }

    #[test]
    fn ids_errors_and_names() {
        assert_eq!(short_id("abcdefghijklmnopqrstuvwxy", false), "abcdefghijkl");
        assert_eq!(short_id("abc", false), "abc");
        assert_eq!(short_id("abcdefghijklmnop", true), "abcdefghijklmnop");
        assert_eq!(task_error("", false), "");
        assert_eq!(task_error("boom", false), "\"boom\"");
        let long = "no suitable node (insufficient resources on 3 nodes)";
        assert_eq!(
            task_error(long, false),
            "\"no suitable node (insufficien…\""
        );
        assert_eq!(task_error(long, true), format!("\"{long}\""));
        assert_eq!(capitalize("shutdown"), "Shutdown");
        assert_eq!(mode_name(ServiceMode::ModeGlobal as i32), "global");
        assert_eq!(restart_condition_name(1), "on-failure");
        assert_eq!(node_state_name(NodeState::NodeReady as i32), "ready");
        assert_eq!(availability_name(2), "drain");
        assert_eq!(task_state_name(9999), "state(9999)");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "");
        assert_eq!(
            rfc3339(1_500_000_000 * S + 5),
            "2017-07-14T02:40:00.000000005Z"
        );
    }
}

//! The log driver and its rotation options (`--log-driver`, `--log-opt`).

use crate::v1::Driver;

use super::{err, SpecError};

/// The only log driver Shoal's agent writes (`--log-driver`).
pub const LOG_DRIVER: &str = "json-file";

/// The options the json-file log driver takes (`--log-opt KEY=VALUE`).
pub const LOG_OPTIONS: [&str; 2] = ["max-size", "max-file"];

/// A container log file is rotated past this size unless `--log-opt max-size` says otherwise.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10_000_000;

/// How many log files (the live one included) a container keeps unless `--log-opt max-file`
/// says otherwise.
pub const DEFAULT_LOG_MAX_FILE: u32 = 3;

/// Parses a log size as docker's json-file driver does (`units.FromHumanSize`): a number, optionally
/// with a fraction, then an optional unit b, k, m or g (case-insensitive, an optional trailing
/// "b" as in "10mb"); decimal multiples, so "10m" is 10,000,000 bytes. Zero is refused.
pub fn parse_log_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a size (a number with an optional unit b, k, m or g, e.g. 10m)");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        _ => return Err(bad()),
    };
    let bytes = (value * mult).round();
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    if bytes < 1.0 {
        return Err(format!("{s:?}: max-size must be a positive size"));
    }
    Ok(bytes as u64)
}

/// Parses `--log-opt max-file`: how many files a container's log is kept in, 1 or more.
pub fn parse_log_max_file(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("max-file must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("max-file {s:?} is not a whole number (1 or more)")),
    }
}

/// How a container's log file rotates: a new file past `max_size` bytes, `max_file` files kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// Bytes after which the log file is rotated.
    pub max_size: u64,
    /// Number of files kept, the one being written included.
    pub max_file: u32,
}

/// The log rotation a task's log driver asks for, with docker's defaults filled in (json-file,
/// 10m × 3); refuses other drivers and unknown options, naming the flag.
pub fn log_rotation(driver: Option<&Driver>) -> Result<LogRotation, SpecError> {
    let mut rotation = LogRotation {
        max_size: DEFAULT_LOG_MAX_SIZE,
        max_file: DEFAULT_LOG_MAX_FILE,
    };
    let Some(driver) = driver else {
        return Ok(rotation);
    };
    if !driver.name.is_empty() && driver.name != LOG_DRIVER {
        return Err(err(
            "--log-driver",
            format!(
                "unsupported log driver {:?} (only {LOG_DRIVER} is supported)",
                driver.name
            ),
        ));
    }
    let mut keys: Vec<&String> = driver.options.keys().collect();
    keys.sort();
    for key in keys {
        let value = &driver.options[key];
        match key.as_str() {
            "max-size" => {
                rotation.max_size = parse_log_size(value).map_err(|r| err("--log-opt", r))?
            }
            "max-file" => {
                rotation.max_file = parse_log_max_file(value).map_err(|r| err("--log-opt", r))?
            }
            other => {
                return Err(err(
                    "--log-opt",
                    format!(
                        "unknown option {other:?} of the {LOG_DRIVER} log driver (use {})",
                        LOG_OPTIONS.join(" or ")
                    ),
                ))
            }
        }
    }
    Ok(rotation)
}

//! Parsing of the sizes, CPU amounts and durations users type ("64M", "0.5", "5s").

/// A value that could not be parsed, with the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// A byte size such as "64M".
    #[error("invalid size {0:?}: expected a number with an optional unit b, k, m, g (e.g. 64M)")]
    Size(String),
    /// A CPU amount such as "0.5".
    #[error("invalid CPU amount {0:?}: expected a positive decimal number of CPUs (e.g. 0.5)")]
    Cpu(String),
    /// A duration such as "5s".
    #[error("invalid duration {0:?}: expected a number with a unit (e.g. 500ms, 5s, 1m)")]
    Duration(String),
}

/// Parses a docker-style byte size: "1024", "64m", "64M", "1.5g", "512k", "10MiB".
pub fn parse_bytes(s: &str) -> Result<i64, UnitError> {
    let err = || UnitError::Size(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as i64)
}

/// Parses a CPU amount ("0.5", "2") into nano CPUs.
pub fn parse_nano_cpus(s: &str) -> Result<i64, UnitError> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| UnitError::Cpu(s.to_string()))?;
    if !value.is_finite() || value <= 0.0 || value > 1.0e6 {
        return Err(UnitError::Cpu(s.to_string()));
    }
    Ok((value * 1e9).round() as i64)
}

/// Parses a duration ("5s", "300ms", "1m30s") into nanoseconds.
pub fn parse_duration_ns(s: &str) -> Result<i64, UnitError> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| UnitError::Duration(s.to_string()))?;
    i64::try_from(d.as_nanos()).map_err(|_| UnitError::Duration(s.to_string()))
}

/// Formats a byte count the way docker prints it ("64MiB").
pub fn format_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{}{}", v as i64, UNITS[i])
    } else {
        format!("{:.3}{}", v, UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64M"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_bytes("64m"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("1.5g"), Ok(1536 * 1024 * 1024));
        assert_eq!(parse_bytes("10MiB"), Ok(10 * 1024 * 1024));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("64Q").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("-5m").is_err());
    }

    #[test]
    fn cpus_and_durations() {
        assert_eq!(parse_nano_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_nano_cpus("2"), Ok(2_000_000_000));
        assert!(parse_nano_cpus("0").is_err());
        assert!(parse_nano_cpus("x").is_err());
        assert_eq!(parse_duration_ns("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration_ns("300ms"), Ok(300_000_000));
        assert!(parse_duration_ns("5").is_err());
        assert_eq!(format_bytes(64 * 1024 * 1024), "64MiB");
    }
}

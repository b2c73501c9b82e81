//! Validation of what users ask for: every error names the field, says why, and what to do.

use crate::v1::{ServiceMode, ServiceSpec};

/// A spec field that is not acceptable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The field as the user knows it ("--replicas", "name", "--constraint").
    pub field: String,
    /// Why it is refused and what to do.
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A comparison in a placement constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// One parsed placement constraint, e.g. `node.labels.zone==east`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Left side: `node.id`, `node.hostname`, `node.role`, `node.labels.K`, `engine.labels.K`.
    pub key: String,
    /// The comparison.
    pub op: ConstraintOp,
    /// Right side, compared case-sensitively (except `node.role` and `node.hostname`).
    pub value: String,
}

impl Constraint {
    /// Parses `KEY==VALUE` or `KEY!=VALUE`.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let (key, op, value) = if let Some((k, v)) = s.split_once("==") {
            (k, ConstraintOp::Eq, v)
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, ConstraintOp::Ne, v)
        } else {
            return Err(err(
                "--constraint",
                format!("{s:?} has no == or != (e.g. node.hostname==host1)"),
            ));
        };
        let key = key.trim();
        let value = value.trim();
        let known = matches!(key, "node.id" | "node.hostname" | "node.role")
            || key
                .strip_prefix("node.labels.")
                .is_some_and(|k| !k.is_empty())
            || key
                .strip_prefix("engine.labels.")
                .is_some_and(|k| !k.is_empty());
        if !known {
            return Err(err(
                "--constraint",
                format!(
                    "unknown key {key:?} (use node.id, node.hostname, node.role, node.labels.KEY or engine.labels.KEY)"
                ),
            ));
        }
        if value.is_empty() {
            return Err(err("--constraint", format!("{s:?} has an empty value")));
        }
        if key == "node.role" && !matches!(value, "manager" | "worker") {
            return Err(err(
                "--constraint",
                format!("node.role must be manager or worker, not {value:?}"),
            ));
        }
        Ok(Constraint {
            key: key.to_string(),
            op,
            value: value.to_string(),
        })
    }
}

/// Parses a placement preference `spread=KEY` into its key (`node.labels.K`, `engine.labels.K`,
/// `node.id`, `node.hostname` or `node.role`).
pub fn parse_placement_pref(pref: &str) -> Result<String, SpecError> {
    let key = pref
        .trim()
        .strip_prefix("spread=")
        .ok_or_else(|| {
            err(
                "--placement-pref",
                format!("{pref:?} is not spread=KEY (e.g. spread=node.labels.zone)"),
            )
        })?
        .trim();
    let known = ["node.labels.", "engine.labels."]
        .iter()
        .any(|prefix| key.strip_prefix(prefix).is_some_and(|k| !k.is_empty()))
        || matches!(key, "node.id" | "node.hostname" | "node.role");
    if !known {
        return Err(err(
            "--placement-pref",
            format!("unknown key {key:?} (use node.labels.KEY, engine.labels.KEY, node.id, node.hostname or node.role)"),
        ));
    }
    Ok(key.to_string())
}

/// Checks a service name the way docker does: 1-63 characters of letters, digits, `-` and `_`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(err("--name", "a service needs a name (--name NAME)"));
    }
    if name.len() > 63 {
        return Err(err("--name", "must be at most 63 characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_first {
        return Err(err(
            "--name",
            format!("{name:?} is not valid: use letters, digits, '-' and '_', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// Validates a whole service spec before anything is written.
pub fn validate_service(spec: &ServiceSpec) -> Result<(), SpecError> {
    validate_name(&spec.name)?;
    let task = spec
        .task
        .as_ref()
        .ok_or_else(|| err("task", "missing task template"))?;
    let container = task
        .container
        .as_ref()
        .ok_or_else(|| err("image", "missing container spec"))?;
    if container.image.trim().is_empty() {
        return Err(err("image", "an image is required (e.g. busybox:latest)"));
    }
    if container.image.chars().any(char::is_whitespace) {
        return Err(err(
            "image",
            format!("{:?} contains whitespace", container.image),
        ));
    }
    for e in &container.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(err("--env", format!("{e:?} is not KEY=VALUE"))),
        }
    }
    if spec.mode == ServiceMode::ModeGlobal as i32 && spec.replicas != 0 {
        return Err(err("--replicas", "cannot be used with --mode global"));
    }
    if ServiceMode::try_from(spec.mode).is_err() {
        return Err(err("--mode", "must be replicated or global"));
    }
    if let Some(res) = &task.resources {
        let lim = res.limits.unwrap_or_default();
        let rsv = res.reservations.unwrap_or_default();
        if lim.memory_bytes < 0 || rsv.memory_bytes < 0 || lim.nano_cpus < 0 || rsv.nano_cpus < 0 {
            return Err(err("resources", "must not be negative"));
        }
        if lim.memory_bytes > 0 && lim.memory_bytes < 4 * 1024 * 1024 {
            return Err(err("--limit-memory", "must be at least 4MiB"));
        }
        if lim.memory_bytes > 0 && rsv.memory_bytes > lim.memory_bytes {
            return Err(err("--reserve-memory", "must not exceed --limit-memory"));
        }
        if lim.nano_cpus > 0 && rsv.nano_cpus > lim.nano_cpus {
            return Err(err("--reserve-cpu", "must not exceed --limit-cpu"));
        }
        if res.pids_limit < 0 {
            return Err(err("--limit-pids", "must not be negative"));
        }
    }
    if container.stop_grace_period_ns < 0 {
        return Err(err("--stop-grace-period", "must not be negative"));
    }
    if let Some(r) = &task.restart {
        if r.delay_ns < 0 {
            return Err(err("--restart-delay", "must not be negative"));
        }
    }
    if let Some(p) = &task.placement {
        for c in &p.constraints {
            Constraint::parse(c)?;
        }
        for pref in &p.preferences {
            parse_placement_pref(pref)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ContainerSpec, TaskSpec};

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            replicas: 1,
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        assert!(validate_service(&spec("web")).is_ok());
        assert_eq!(validate_service(&spec("")).unwrap_err().field, "--name");
        assert_eq!(validate_service(&spec("-x")).unwrap_err().field, "--name");
        assert_eq!(validate_service(&spec("a b")).unwrap_err().field, "--name");
    }

    #[test]
    fn constraints() {
        let c = Constraint::parse("node.labels.zone==east").expect("valid");
        assert_eq!(c.key, "node.labels.zone");
        assert_eq!(c.op, ConstraintOp::Eq);
        assert_eq!(
            Constraint::parse("node.role!=manager").expect("valid").op,
            ConstraintOp::Ne
        );
        assert!(Constraint::parse("node.colour==red").is_err());
        assert!(Constraint::parse("node.hostname=a").is_err());
        assert!(Constraint::parse("node.role==boss").is_err());
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(crate::v1::Placement {
                constraints: vec!["bad".into()],
                ..Default::default()
            });
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--constraint");
    }

    #[test]
    fn placement_preferences_and_grace() {
        #[rustfmt::skip]
        let cases: [(&str, Result<&str, ()>); 6] = [
            ("spread=node.labels.zone", Ok("node.labels.zone")),
            (" spread= engine.labels.disk ", Ok("engine.labels.disk")),
            ("spread=node.hostname", Ok("node.hostname")),
            ("spread=node.labels.", Err(())),
            ("spread=node.colour", Err(())),
            ("binpack=node.labels.zone", Err(())),
        ];
        for (pref, want) in cases {
            let got = parse_placement_pref(pref).map_err(|e| {
                assert_eq!(e.field, "--placement-pref");
            });
            assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "{pref}");
        }
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(crate::v1::Placement {
                preferences: vec!["spread=zone".into()],
                ..Default::default()
            });
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--placement-pref");
        let mut s = spec("web");
        if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.stop_grace_period_ns = -1;
        }
        assert_eq!(
            validate_service(&s).unwrap_err().field,
            "--stop-grace-period"
        );
    }

    #[test]
    fn env_and_mode() {
        let mut s = spec("web");
        if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.env.push("NOEQUALS".into());
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--env");
        let mut s = spec("web");
        s.mode = ServiceMode::ModeGlobal as i32;
        assert_eq!(validate_service(&s).unwrap_err().field, "--replicas");
    }
}

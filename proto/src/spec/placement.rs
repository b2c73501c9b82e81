//! Placement: constraints (`node.labels.zone==east`) and preferences (`spread=KEY`).

use super::{err, SpecError};

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

//! Placement constraints and preferences matched against nodes; shared by the scheduler and the
//! global orchestrator so both agree on which nodes a service may use.

use shoal_proto::spec::{Constraint, ConstraintOp, SpecError};
use shoal_proto::v1::{Node, NodeRole};

/// A placement preference that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferenceError {
    /// Only `spread=KEY` exists.
    #[error("placement preference {0:?} is not spread=KEY (e.g. spread=node.labels.zone)")]
    NotSpread(String),
    /// The key is not one a node has.
    #[error("placement preference {pref:?}: unknown key {key:?} (use node.labels.KEY or engine.labels.KEY)")]
    UnknownKey {
        /// The preference as given.
        pref: String,
        /// The key after `spread=`.
        key: String,
    },
}

/// The value of a constraint or preference key on a node; `None` when the node lacks it
/// (a label it does not carry, or no description yet).
pub fn node_value<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    match key {
        "node.id" => Some(node.id.as_str()),
        "node.hostname" => node.description.as_ref().map(|d| d.hostname.as_str()),
        "node.role" => Some(match node.spec.as_ref().map(|s| s.role()) {
            Some(NodeRole::RoleManager) => "manager",
            _ => "worker",
        }),
        _ => {
            if let Some(label) = key.strip_prefix("node.labels.") {
                node.spec
                    .as_ref()
                    .and_then(|s| s.labels.get(label))
                    .map(String::as_str)
            } else if let Some(label) = key.strip_prefix("engine.labels.") {
                node.description
                    .as_ref()
                    .and_then(|d| d.engine_labels.get(label))
                    .map(String::as_str)
            } else {
                None
            }
        }
    }
}

/// Whether one constraint holds on a node. A missing label fails `==` and passes `!=`;
/// `node.hostname` and `node.role` compare case-insensitively, everything else exactly.
pub fn matches(c: &Constraint, node: &Node) -> bool {
    match node_value(node, &c.key) {
        Some(v) => {
            let equal = if matches!(c.key.as_str(), "node.hostname" | "node.role") {
                v.eq_ignore_ascii_case(&c.value)
            } else {
                v == c.value
            };
            equal == (c.op == ConstraintOp::Eq)
        }
        None => c.op == ConstraintOp::Ne,
    }
}

/// Whether every constraint holds on a node.
pub fn matches_all(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| matches(c, node))
}

/// Parses a service's constraint strings.
pub fn parse_all(constraints: &[String]) -> Result<Vec<Constraint>, SpecError> {
    constraints.iter().map(|c| Constraint::parse(c)).collect()
}

/// Parses `spread=KEY` placement preferences into their keys, in order (outermost first).
pub fn parse_preferences(prefs: &[String]) -> Result<Vec<String>, PreferenceError> {
    prefs
        .iter()
        .map(|p| {
            let key = p
                .trim()
                .strip_prefix("spread=")
                .ok_or_else(|| PreferenceError::NotSpread(p.clone()))?
                .trim();
            let known = ["node.labels.", "engine.labels."]
                .iter()
                .any(|prefix| key.strip_prefix(prefix).is_some_and(|k| !k.is_empty()))
                || matches!(key, "node.id" | "node.hostname" | "node.role");
            if known {
                Ok(key.to_string())
            } else {
                Err(PreferenceError::UnknownKey {
                    pref: p.clone(),
                    key: key.to_string(),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{NodeDescription, NodeSpec};

    fn node() -> Node {
        Node {
            id: "n1".into(),
            spec: Some(NodeSpec {
                role: NodeRole::RoleManager as i32,
                labels: [("zone".to_string(), "east".to_string())].into(),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: "Host1".into(),
                engine_labels: [("disk".to_string(), "ssd".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn constraint_table() {
        let n = node();
        let cases = [
            ("node.id==n1", true),
            ("node.id==n2", false),
            ("node.id!=n2", true),
            ("node.hostname==host1", true),
            ("node.hostname!=HOST1", false),
            ("node.role==manager", true),
            ("node.role==worker", false),
            ("node.role!=worker", true),
            ("node.labels.zone==east", true),
            ("node.labels.zone==East", false),
            ("node.labels.zone!=west", true),
            ("node.labels.rack==r1", false),
            ("node.labels.rack!=r1", true),
            ("engine.labels.disk==ssd", true),
            ("engine.labels.disk!=ssd", false),
            ("engine.labels.gpu==yes", false),
            ("engine.labels.gpu!=yes", true),
        ];
        for (expr, want) in cases {
            let c = Constraint::parse(expr).expect("valid constraint");
            assert_eq!(matches(&c, &n), want, "{expr}");
        }
    }

    #[test]
    fn worker_role_is_the_default() {
        let n = Node {
            id: "n".into(),
            ..Default::default()
        };
        let c = Constraint::parse("node.role==worker").expect("valid");
        assert!(matches(&c, &n));
        let c = Constraint::parse("node.hostname==x").expect("valid");
        assert!(!matches(&c, &n), "no description means no hostname");
    }

    #[test]
    fn all_must_hold() {
        let n = node();
        let cs = parse_all(&["node.role==manager".into(), "node.labels.zone==east".into()])
            .expect("valid");
        assert!(matches_all(&cs, &n));
        let cs = parse_all(&["node.role==manager".into(), "node.labels.zone==west".into()])
            .expect("valid");
        assert!(!matches_all(&cs, &n));
        assert!(matches_all(&[], &n));
        assert!(parse_all(&["bogus".into()]).is_err());
    }

    #[test]
    fn preferences_table() {
        let cases: [(&str, Result<&str, ()>); 5] = [
            ("spread=node.labels.zone", Ok("node.labels.zone")),
            ("spread=engine.labels.disk", Ok("engine.labels.disk")),
            (" spread= node.hostname ", Ok("node.hostname")),
            ("binpack=node.labels.zone", Err(())),
            ("spread=node.colour", Err(())),
        ];
        for (pref, want) in cases {
            let got = parse_preferences(&[pref.to_string()]);
            match want {
                Ok(key) => assert_eq!(got, Ok(vec![key.to_string()]), "{pref}"),
                Err(()) => assert!(got.is_err(), "{pref}"),
            }
        }
    }
}

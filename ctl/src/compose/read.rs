//! Reading compose files: YAML with positions in syntax errors, `<<:` merge keys applied, `x-`
//! extensions dropped, keys Shoal cannot honour turned into warnings, and typed decoding whose
//! errors name the key path (`services.web.ports[1]`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

use super::interpolate::key_text;

/// Why a file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file (or standard input) could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file as named.
        file: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML does not parse.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file as named.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The YAML parses but is not what compose expects at `path`.
    #[error("{file}: {path}: {message}")]
    Shape {
        /// The file as named.
        file: String,
        /// The key path ("services.web.ports[1]").
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An `env_file` line is not `KEY=VALUE`.
    #[error("{file}:{line}: invalid environment line {text:?}: expected KEY=VALUE")]
    EnvLine {
        /// The env file.
        file: String,
        /// 1-based line.
        line: usize,
        /// The line.
        text: String,
    },
}

/// One compose file's text and where it came from.
pub struct Source {
    /// The name errors use ("docker-compose.yml", "-" for standard input).
    pub name: String,
    /// The directory relative paths are resolved against.
    pub dir: PathBuf,
    /// The YAML text.
    pub text: String,
}

/// Reads `path`, or standard input for "-".
pub fn read_source(path: &Path) -> Result<Source, ReadError> {
    let name = path.display().to_string();
    let io = |source| ReadError::Io {
        file: name.clone(),
        source,
    };
    if name == "-" {
        let text = std::io::read_to_string(std::io::stdin()).map_err(io)?;
        let dir = std::env::current_dir().map_err(io)?;
        return Ok(Source { name, dir, text });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(io)?.join(path)
    };
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok(Source { name, dir, text })
}

/// Parses one file: a mapping at the top, `<<:` merges applied, `x-` keys dropped.
pub fn parse(file: &str, text: &str) -> Result<Value, ReadError> {
    let mut v: Value = serde_norway::from_str(text).map_err(|e| syntax(file, &e))?;
    v.apply_merge().map_err(|e| syntax(file, &e))?;
    if v.is_null() {
        v = Value::Mapping(Mapping::new());
    }
    let Some(top) = v.as_mapping_mut() else {
        return Err(ReadError::Shape {
            file: file.into(),
            path: "(top level)".into(),
            message: "a compose file must be a mapping (services: ...)".into(),
        });
    };
    // `<<:` can appear anywhere below the top (services, deploy blocks); apply it there too.
    for (_, section) in top.iter_mut() {
        apply_merge_deep(section).map_err(|e| syntax(file, &e))?;
    }
    drop_extensions(top);
    for section in ["services", "networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Mapping(entries)) = top.get_mut(section) {
            for (_, entry) in entries.iter_mut() {
                if let Value::Mapping(m) = entry {
                    drop_extensions(m);
                }
            }
        }
    }
    Ok(v)
}

fn apply_merge_deep(v: &mut Value) -> Result<(), serde_norway::Error> {
    v.apply_merge()?;
    match v {
        Value::Mapping(m) => {
            for (_, c) in m.iter_mut() {
                apply_merge_deep(c)?;
            }
        }
        Value::Sequence(s) => {
            for c in s.iter_mut() {
                apply_merge_deep(c)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn drop_extensions(m: &mut Mapping) {
    m.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
}

fn syntax(file: &str, e: &serde_norway::Error) -> ReadError {
    let full = e.to_string();
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    // The parser appends the position itself; it is already in front.
    let message = match full.find(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    ReadError::Syntax {
        file: file.into(),
        line,
        column,
        message,
    }
}

/// Parses `.env`/`env_file` text: `KEY=VALUE` lines, `#` comments, `export ` prefixes, quoted
/// values; a line with a key alone is returned with `None` (take it from the environment).
pub fn parse_env_text(file: &str, text: &str) -> Result<Vec<(String, Option<String>)>, ReadError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let bad = || ReadError::EnvLine {
            file: file.into(),
            line: i + 1,
            text: raw.into(),
        };
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
            None => (line, None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            let inner = &v[1..v.len() - 1];
            return if q == '"' {
                inner.replace("\\n", "\n").replace("\\\"", "\"")
            } else {
                inner.to_string()
            };
        }
    }
    // An unquoted value ends at an inline comment.
    match v.find(" #") {
        Some(i) => v[..i].trim_end().to_string(),
        None => v.to_string(),
    }
}

/// Service keys the conversion honours.
const SUPPORTED: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "networks",
    "volumes",
    "tmpfs",
    "secrets",
    "configs",
    "healthcheck",
    "labels",
    "hostname",
    "user",
    "working_dir",
    "stop_grace_period",
    "stop_signal",
    "cap_add",
    "cap_drop",
    "group_add",
    "devices",
    "sysctls",
    "extra_hosts",
    "ulimits",
    "logging",
    "init",
    "read_only",
    "privileged",
    "restart",
    "depends_on",
    "deploy",
];

/// Compose keys stack deploy cannot honour (swarm's unsupported and forbidden lists, and the
/// Compose Specification's container-only keys).
const UNSUPPORTED: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cgroup",
    "cgroup_parent",
    "cgroupns_mode",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "expose",
    "extends",
    "external_links",
    "ipc",
    "isolation",
    "links",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "post_start",
    "pre_stop",
    "profiles",
    "pull_policy",
    "runtime",
    "scale",
    "security_opt",
    "shm_size",
    "stdin_open",
    "storage_opt",
    "tty",
    "userns_mode",
    "uts",
    "volume_driver",
    "volumes_from",
];

const DEPLOY_KEYS: &[&str] = &[
    "mode",
    "replicas",
    "endpoint_mode",
    "labels",
    "resources",
    "placement",
    "update_config",
    "rollback_config",
    "restart_policy",
];

const TOP_KEYS: &[&str] = &[
    "version", "services", "networks", "volumes", "secrets", "configs",
];

/// Removes the keys the model does not take, with a warning for each.
pub fn prune_keys(v: &mut Value, warnings: &mut Vec<String>) {
    let Some(top) = v.as_mapping_mut() else {
        return;
    };
    top.retain(|k, _| {
        let key = key_text(k);
        let keep = TOP_KEYS.contains(&key.as_str());
        // `name:` is the compose project's name; the stack's name replaces it.
        if !keep && key != "name" {
            warnings.push(format!("top-level key `{key}` is not supported; ignored"));
        }
        keep
    });
    let Some(Value::Mapping(services)) = top.get_mut("services") else {
        return;
    };
    for (name, svc) in services.iter_mut() {
        let name = key_text(name);
        if svc.is_null() {
            *svc = Value::Mapping(Mapping::new());
        }
        let Some(m) = svc.as_mapping_mut() else {
            continue;
        };
        m.retain(|k, _| {
            let key = key_text(k);
            if SUPPORTED.contains(&key.as_str()) {
                return true;
            }
            if UNSUPPORTED.contains(&key.as_str()) {
                warnings.push(format!(
                    "service {name}: key `{key}` is not supported by stack deploy; ignored"
                ));
            } else {
                warnings.push(format!("service {name}: unknown key `{key}`; ignored"));
            }
            false
        });
        if let Some(Value::Mapping(d)) = m.get_mut("deploy") {
            d.retain(|k, _| {
                let key = key_text(k);
                let keep = DEPLOY_KEYS.contains(&key.as_str());
                if !keep {
                    warnings.push(format!(
                        "service {name}: key `deploy.{key}` is not supported by stack deploy; ignored"
                    ));
                }
                keep
            });
        }
    }
}

/// Decodes `v` as `T`; on failure, narrows the value down to the first key or item that fails
/// so the error names its path.
pub fn decode<T: DeserializeOwned>(file: &str, prefix: &str, v: &Value) -> Result<T, ReadError> {
    match serde_norway::from_value::<T>(v.clone()) {
        Ok(t) => Ok(t),
        Err(e) => {
            let mut path: Vec<Seg> = Vec::new();
            let mut cur = v.clone();
            let mut message = e.to_string();
            loop {
                let next = match &cur {
                    Value::Mapping(m) => m.iter().find_map(|(k, val)| {
                        let mut one = Mapping::new();
                        one.insert(k.clone(), val.clone());
                        let err = try_wrapped::<T>(&path, Value::Mapping(one))?;
                        Some((Seg::Key(k.clone()), val.clone(), err))
                    }),
                    Value::Sequence(s) => s.iter().enumerate().find_map(|(i, val)| {
                        let err = try_wrapped::<T>(&path, Value::Sequence(vec![val.clone()]))?;
                        Some((Seg::Index(i), val.clone(), err))
                    }),
                    _ => None,
                };
                match next {
                    Some((seg, val, err)) => {
                        path.push(seg);
                        cur = val;
                        message = err;
                    }
                    None => break,
                }
            }
            Err(ReadError::Shape {
                file: file.into(),
                path: render_path(prefix, &path),
                message,
            })
        }
    }
}

#[derive(Clone)]
enum Seg {
    Key(Value),
    Index(usize),
}

/// The error of decoding `leaf` placed at `path` inside an otherwise empty document, if any.
fn try_wrapped<T: DeserializeOwned>(path: &[Seg], leaf: Value) -> Option<String> {
    let mut v = leaf;
    // `leaf` is the container of the candidate, so it sits at `path` itself.
    for seg in path.iter().rev() {
        v = match seg {
            Seg::Key(k) => {
                let mut m = Mapping::new();
                m.insert(k.clone(), v);
                Value::Mapping(m)
            }
            Seg::Index(_) => Value::Sequence(vec![v]),
        };
    }
    serde_norway::from_value::<T>(v)
        .err()
        .map(|e| e.to_string())
}

fn render_path(prefix: &str, path: &[Seg]) -> String {
    let mut out = prefix.to_string();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_text(k));
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        "(top level)".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::model::ComposeFile;

    #[test]
    fn syntax_error_names_file_line_column() {
        let err = parse("stack.yml", "services:\n  web:\n    image: [a\n").unwrap_err();
        let ReadError::Syntax { line, column, .. } = &err else {
            panic!("{err}")
        };
        assert!(*line >= 3, "{err}");
        assert!(*column >= 1, "{err}");
        assert!(err.to_string().starts_with("stack.yml:"), "{err}");
        let msg = err.to_string();
        assert_eq!(msg.matches(" line ").count(), 0, "{msg}");
        let err = parse("a.yml", "a: b\n  c: d\n").unwrap_err();
        assert!(err.to_string().starts_with("a.yml:2:"), "{err}");
    }

    #[test]
    fn merge_keys_and_extensions() {
        let v = parse(
            "f",
            r#"
x-common: &common
  image: base
  deploy: {replicas: 2}
services:
  a:
    <<: *common
    x-note: hi
  b:
    <<: *common
    image: other
"#,
        )
        .unwrap();
        assert!(v.get("x-common").is_none());
        assert_eq!(v["services"]["a"]["image"], "base");
        assert!(v["services"]["a"].get("x-note").is_none());
        assert_eq!(v["services"]["b"]["image"], "other");
        assert_eq!(v["services"]["b"]["deploy"]["replicas"], 2);
    }

    #[test]
    fn env_text() {
        let got = parse_env_text(
            ".env",
            "# c\nA=1\nexport B=\"two words\"\nC='x#y'\nD=v # note\nE\n\nF=\n",
        )
        .unwrap();
        let want: Vec<(String, Option<String>)> = vec![
            ("A".into(), Some("1".into())),
            ("B".into(), Some("two words".into())),
            ("C".into(), Some("x#y".into())),
            ("D".into(), Some("v".into())),
            ("E".into(), None),
            ("F".into(), Some(String::new())),
        ];
        assert_eq!(got, want);
        assert!(parse_env_text("e", "A B=1\n").is_err());
    }

    #[test]
    fn prune_warns() {
        let mut v = parse(
            "f",
            "services:\n  web:\n    image: x\n    build: .\n    frobnicate: 1\n    deploy: {replicas: 1, weird: 2}\nfoo: 1\n",
        )
        .unwrap();
        let mut w = Vec::new();
        prune_keys(&mut v, &mut w);
        assert!(w.contains(
            &"service web: key `build` is not supported by stack deploy; ignored".to_string()
        ));
        assert!(w.contains(&"service web: unknown key `frobnicate`; ignored".to_string()));
        assert!(w.iter().any(|m| m.contains("deploy.weird")));
        assert!(w.iter().any(|m| m.contains("`foo`")));
        assert!(v["services"]["web"].get("build").is_none());
    }

    #[test]
    fn decode_error_names_path() {
        let v = parse(
            "f.yml",
            "services:\n  web:\n    image: x\n    ports: [\"80\", {target: [1]}]\n",
        )
        .unwrap();
        let err = decode::<ComposeFile>("f.yml", "", &v).unwrap_err();
        assert!(
            err.to_string().starts_with("f.yml: services.web.ports[1]"),
            "{err}"
        );
        let v = parse("f.yml", "services:\n  web:\n    deploy: {replicas: many}\n").unwrap();
        let err = decode::<ComposeFile>("f.yml", "", &v).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.yml: services.web.deploy.replicas"),
            "{err}"
        );
    }
}

//! What a service puts into its containers' filesystems: `--mount` (bind, volume, tmpfs),
//! `--secret` and `--config` files, and where each lands; also the templates of hostname, env
//! values and mount sources, and `depends_on`. Every target is absolute and given once across
//! mounts, secrets and configs, so the agent never has to pick a winner.

use std::collections::HashSet;

use super::{err, SpecError};
use crate::limits::{CONFIG_MAX_BYTES, SECRET_MAX_BYTES};
use crate::template;
use crate::v1::{
    ConfigReference, ContainerSpec, DependencyCondition, Mount, MountType, SecretReference,
    ServiceSpec,
};

/// Where secrets without an absolute target are mounted (docker's default).
pub const SECRETS_DIR: &str = "/run/secrets";

/// Bind propagation modes `--mount type=bind,bind-propagation=...` accepts (empty: rprivate).
pub const BIND_PROPAGATIONS: [&str; 6] = [
    "rprivate", "private", "rshared", "shared", "rslave", "slave",
];

/// The only volume driver there is (an empty driver means it too).
pub const LOCAL_VOLUME_DRIVER: &str = "local";

/// Longest secret or config name (docker's limit).
pub const MAX_DATA_NAME_CHARS: usize = 64;

/// The path a secret appears at in the container: its target name under [`SECRETS_DIR`] (the
/// secret's name when none is given), or the target itself when it is absolute.
pub fn secret_target(r: &SecretReference) -> String {
    let name = r.file.as_ref().map_or("", |f| f.name.as_str());
    let name = if name.is_empty() {
        source_name(&r.secret_name, &r.secret_id)
    } else {
        name
    };
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("{SECRETS_DIR}/{name}")
    }
}

/// The path a config appears at in the container: its target, `/NAME` by default; a relative
/// target is taken from the root, as docker does.
pub fn config_target(r: &ConfigReference) -> String {
    let name = r.file.as_ref().map_or("", |f| f.name.as_str());
    let name = if name.is_empty() {
        source_name(&r.config_name, &r.config_id)
    } else {
        name
    };
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

fn source_name<'a>(name: &'a str, id: &'a str) -> &'a str {
    if name.is_empty() {
        id
    } else {
        name
    }
}

/// Checks a secret or config name as docker does: 1 to [`MAX_DATA_NAME_CHARS`] letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit. `kind` is "secret" or "config".
pub fn validate_data_name(kind: &str, name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(err("name", format!("a {kind} needs a name")));
    }
    if name.chars().count() > MAX_DATA_NAME_CHARS {
        return Err(err(
            "name",
            format!(
                "{kind} name {} is longer than {MAX_DATA_NAME_CHARS} characters",
                super::preview(name)
            ),
        ));
    }
    let inner_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !inner_ok || !ends_ok {
        return Err(err(
            "name",
            format!(
                "{kind} name {name:?} is not valid: use letters, digits, '-', '_' and '.', \
                 starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// Checks the data of a secret or config: not empty, at most [`SECRET_MAX_BYTES`] or
/// [`CONFIG_MAX_BYTES`]. `kind` is "secret" or "config".
pub fn validate_data(kind: &str, data: &[u8]) -> Result<(), SpecError> {
    if data.is_empty() {
        return Err(err("data", format!("{kind} data must not be empty")));
    }
    let limit = if kind == "secret" {
        SECRET_MAX_BYTES
    } else {
        CONFIG_MAX_BYTES
    };
    if data.len() > limit {
        return Err(err(
            "data",
            format!(
                "{kind} data is {} KiB: {kind}s are limited to {} KiB",
                data.len().div_ceil(1024),
                limit / 1024
            ),
        ));
    }
    Ok(())
}

/// Checks mounts, secret and config files, templates and dependencies of a service spec.
pub(super) fn validate_files(spec: &ServiceSpec, c: &ContainerSpec) -> Result<(), SpecError> {
    check_template("--hostname", &c.hostname)?;
    for e in &c.env {
        let value = e.split_once('=').map_or("", |(_, v)| v);
        check_template("--env", value)?;
    }
    let mut targets: HashSet<String> = HashSet::new();
    let mut claim = |field: &str, target: String| {
        if targets.insert(target.clone()) {
            Ok(())
        } else {
            Err(err(
                field,
                format!("target {target} is given more than once (mounts, secrets and configs share the container's paths)"),
            ))
        }
    };
    for m in &c.mounts {
        validate_mount(m)?;
        claim("--mount", clean(&m.target))?;
    }
    for r in &c.secrets {
        if r.secret_name.is_empty() && r.secret_id.is_empty() {
            return Err(err(
                "--secret",
                "a secret reference needs a source (source=NAME)",
            ));
        }
        let target = secret_target(r);
        check_file("--secret", &target, r.file.as_ref())?;
        claim("--secret", clean(&target))?;
    }
    for r in &c.configs {
        if r.config_name.is_empty() && r.config_id.is_empty() {
            return Err(err(
                "--config",
                "a config reference needs a source (source=NAME)",
            ));
        }
        let target = config_target(r);
        check_file("--config", &target, r.file.as_ref())?;
        claim("--config", clean(&target))?;
    }
    validate_depends_on(spec)
}

/// A target compared without trailing or doubled slashes ("/data/" and "/data" are one).
fn clean(target: &str) -> String {
    let parts: Vec<&str> = target.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

fn check_template(field: &str, s: &str) -> Result<(), SpecError> {
    template::check(s).map_err(|e| err(field, e.to_string()))
}

/// A secret's or config's path, owner and mode.
fn check_file(
    field: &str,
    target: &str,
    file: Option<&crate::v1::FileTarget>,
) -> Result<(), SpecError> {
    if target.split('/').any(|p| p == "..") {
        return Err(err(
            field,
            format!("target {target:?} must not contain \"..\""),
        ));
    }
    if target.ends_with('/') || clean(target) == "/" {
        return Err(err(field, format!("target {target:?} must name a file")));
    }
    let Some(f) = file else { return Ok(()) };
    for (what, id) in [("uid", &f.uid), ("gid", &f.gid)] {
        if !id.is_empty() && id.parse::<u32>().is_err() {
            return Err(err(field, format!("{what} {id:?} must be a number")));
        }
    }
    if f.mode > 0o7777 {
        return Err(err(field, format!("mode {:o} is not a file mode", f.mode)));
    }
    Ok(())
}

/// One `--mount`: an absolute target, a source that fits its type, options of its type only.
pub fn validate_mount(m: &Mount) -> Result<(), SpecError> {
    let field = "--mount";
    let Ok(kind) = MountType::try_from(m.r#type) else {
        return Err(err(
            field,
            format!("mount type {} is not bind, volume or tmpfs", m.r#type),
        ));
    };
    if m.target.is_empty() {
        return Err(err(field, "a mount needs a target (target=/PATH)"));
    }
    if !m.target.starts_with('/') {
        return Err(err(
            field,
            format!("target {:?} must be an absolute path", m.target),
        ));
    }
    check_template(field, &m.source)?;
    match kind {
        MountType::MountBind => {
            if m.source.is_empty() {
                return Err(err(
                    field,
                    "a bind mount needs a source (source=/HOST/PATH)",
                ));
            }
            // Templates expand to names, never to a leading '/', so this holds after expansion.
            if !m.source.starts_with('/') {
                return Err(err(
                    field,
                    format!("bind source {:?} must be an absolute path", m.source),
                ));
            }
        }
        MountType::MountVolume => {
            if !m.source.is_empty() && !m.source.contains("{{") && !is_volume_name(&m.source) {
                return Err(err(
                    field,
                    format!(
                        "volume name {:?} is not valid: use letters, digits, '_', '.' and '-', \
                         starting with a letter or digit, at least 2 characters",
                        m.source
                    ),
                ));
            }
        }
        MountType::MountTmpfs => {
            if !m.source.is_empty() {
                return Err(err(field, "a tmpfs mount takes no source"));
            }
        }
    }
    if let Some(b) = &m.bind_options {
        if !b.propagation.is_empty() {
            if kind != MountType::MountBind {
                return Err(err(field, "bind-propagation is only valid with type=bind"));
            }
            if !BIND_PROPAGATIONS.contains(&b.propagation.as_str()) {
                return Err(err(
                    field,
                    format!(
                        "bind-propagation {:?} is not one of {}",
                        b.propagation,
                        BIND_PROPAGATIONS.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(v) = &m.volume_options {
        let driver = v.driver_config.as_ref();
        let only = |opt: &str| err(field, format!("{opt} is only valid with type=volume"));
        if kind != MountType::MountVolume {
            if v.no_copy {
                return Err(only("volume-nocopy"));
            }
            if !v.labels.is_empty() {
                return Err(only("volume-label"));
            }
            if driver.is_some_and(|d| !d.name.is_empty()) {
                return Err(only("volume-driver"));
            }
            if driver.is_some_and(|d| !d.options.is_empty()) {
                return Err(only("volume-opt"));
            }
        }
        if let Some(d) = driver {
            if !d.name.is_empty() && d.name != LOCAL_VOLUME_DRIVER {
                return Err(err(
                    field,
                    format!(
                        "volume driver {:?} is not supported: only {LOCAL_VOLUME_DRIVER:?}",
                        d.name
                    ),
                ));
            }
        }
        super::validate_labels("volume-label", v.labels.iter())?;
    }
    if let Some(t) = &m.tmpfs_options {
        if kind != MountType::MountTmpfs {
            if t.size_bytes != 0 {
                return Err(err(field, "tmpfs-size is only valid with type=tmpfs"));
            }
            if t.mode != 0 {
                return Err(err(field, "tmpfs-mode is only valid with type=tmpfs"));
            }
        }
        if t.size_bytes < 0 {
            return Err(err(field, "tmpfs-size must not be negative"));
        }
        if t.mode > 0o7777 {
            return Err(err(
                field,
                format!("tmpfs-mode {:o} is not a file mode", t.mode),
            ));
        }
    }
    Ok(())
}

/// A named volume: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, as docker's local driver.
pub fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `depends_on`: named services, not the service itself, each once, with a known condition.
fn validate_depends_on(spec: &ServiceSpec) -> Result<(), SpecError> {
    let field = "depends_on";
    let mut seen = HashSet::new();
    for d in &spec.depends_on {
        if d.service.is_empty() {
            return Err(err(field, "a dependency needs a service name"));
        }
        if d.service == spec.name {
            return Err(err(
                field,
                format!("service {} cannot depend on itself", spec.name),
            ));
        }
        if !seen.insert(d.service.as_str()) {
            return Err(err(
                field,
                format!("service {} is listed more than once", d.service),
            ));
        }
        if DependencyCondition::try_from(d.condition).is_err() {
            return Err(err(
                field,
                format!("condition {} of {} is not known", d.condition, d.service),
            ));
        }
    }
    Ok(())
}

//! The compose loader behind `stack deploy` and `stack config`: reads compose files (the Compose
//! Specification as swarm stack files use it), merges overrides, interpolates variables and turns
//! the result into the specs `stack deploy` writes, named as `docker stack deploy` names them.

mod convert;
mod interpolate;
mod merge;
mod model;
mod read;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_norway::Value;
use shoal_proto::v1::{ConfigSpec, NetworkSpec, SecretSpec, ServiceSpec};

use convert::Resolved;
// For the stack commands (ls/rm filter on the namespace label).
pub use convert::NAMESPACE_LABEL;
use interpolate::Interpolator;
use model::ComposeFile;
use read::ReadError;

/// Where the loader reads from.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The compose files, in order (`-c FILE -c OVERRIDE`); "-" is standard input.
    pub files: Vec<PathBuf>,
    /// The process's environment (`std::env::vars()`); `load` adds the `.env` beside the first
    /// file for the keys this lacks, never overriding it.
    pub env: BTreeMap<String, String>,
}

/// A compose error, naming the file, line and column when the YAML has them.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ComposeError {
    /// "compose.yml:12:5: services.web.ports[0]: invalid port \"x\""
    pub message: String,
}

/// A loaded, merged and interpolated project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The merged file after interpolation, as YAML (`stack config` prints it).
    pub yaml: String,
    /// Unset variables and keys Shoal cannot honour ("service web: key `build` is not supported
    /// by stack deploy; ignored"), for stderr.
    pub warnings: Vec<String>,
    /// The compose model (private to the loader).
    pub(crate) model: ComposeFile,
    /// What the files point at (env files, secret and config contents), read by `load`.
    pub(crate) resolved: Resolved,
}

/// A network, secret or config the stack uses.
#[derive(Debug, Clone)]
pub enum Resource<S> {
    /// Created by the stack (named STACK_NAME unless `name:` is set), labelled with the stack.
    Create(S),
    /// `external: true`: must exist already; this is its name.
    External(String),
}

/// What `stack deploy` writes for one stack.
#[derive(Debug, Clone)]
pub struct StackPlan {
    /// The stack's name.
    pub stack: String,
    /// Networks, STACK_default included when a service uses no network of its own.
    pub networks: Vec<Resource<NetworkSpec>>,
    /// Secrets, STACK_NAME unless `name:` or external.
    pub secrets: Vec<Resource<SecretSpec>>,
    /// Configs, STACK_NAME unless `name:` or external.
    pub configs: Vec<Resource<ConfigSpec>>,
    /// Services named STACK_SERVICE, labelled `com.docker.stack.namespace=STACK`, with their
    /// networks, secrets and configs referenced by name (shoalctl resolves them to ids), and
    /// depends_on filled with the full service names.
    pub services: Vec<ServiceSpec>,
    /// Loader and conversion warnings.
    pub warnings: Vec<String>,
}

impl From<ReadError> for ComposeError {
    fn from(e: ReadError) -> Self {
        ComposeError {
            message: e.to_string(),
        }
    }
}

impl From<convert::ConvertError> for ComposeError {
    fn from(e: convert::ConvertError) -> Self {
        ComposeError {
            message: e.to_string(),
        }
    }
}

fn error(message: String) -> ComposeError {
    ComposeError { message }
}

/// Loads, merges and interpolates the files; `.env` beside the first file (or in the current
/// directory for standard input) adds the variables `opts.env` lacks. Every file is checked on
/// its own first, so shape errors name the file they are in.
pub fn load(opts: &LoadOptions) -> Result<Project, ComposeError> {
    if opts.files.is_empty() {
        return Err(error("no compose file given (-c FILE)".into()));
    }
    let sources = opts
        .files
        .iter()
        .map(|f| read::read_source(f))
        .collect::<Result<Vec<_>, _>>()?;
    load_sources(&sources, &opts.env)
}

/// `load` once the files are read (tests feed text directly).
fn load_sources(
    sources: &[read::Source],
    process_env: &BTreeMap<String, String>,
) -> Result<Project, ComposeError> {
    let first = sources
        .first()
        .ok_or_else(|| error("no compose file given (-c FILE)".into()))?;
    let dir = first.dir.clone();
    let mut env = process_env.clone();
    let dotenv = dir.join(".env");
    if dotenv.is_file() {
        let name = dotenv.display().to_string();
        let text = std::fs::read_to_string(&dotenv).map_err(|source| ReadError::Io {
            file: name.clone(),
            source,
        })?;
        for (k, v) in read::parse_env_text(&name, &text)? {
            env.entry(k).or_insert(v.unwrap_or_default());
        }
    }

    let mut warnings = Vec::new();
    let mut interp = Interpolator::new(&env);
    let mut merged: Option<Value> = None;
    for src in sources {
        let mut v = read::parse(&src.name, &src.text)?;
        interp.value(&mut v, "").map_err(|(path, e)| {
            error(format!(
                "{}: {}: {e}",
                src.name,
                if path.is_empty() {
                    "(top level)"
                } else {
                    &path
                }
            ))
        })?;
        let mut check = v.clone();
        read::prune_keys(&mut check, &mut Vec::new());
        read::decode::<ComposeFile>(&src.name, "", &check)?;
        match &mut merged {
            None => merged = Some(v),
            Some(m) => merge::merge_files(m, v),
        }
    }
    warnings.extend(interp.warnings());
    let mut merged = merged.unwrap_or(Value::Null);
    read::prune_keys(&mut merged, &mut warnings);
    let model: ComposeFile = read::decode(&first.name, "", &merged)?;

    for (name, svc) in &model.services {
        if svc.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            return Err(error(format!(
                "{}: invalid image reference for service {name}: no image specified",
                first.name
            )));
        }
    }
    let mut resolved = resolve(&model, &dir, &env, &first.name)?;
    resolved.files = sources
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let yaml = print(&model)?;
    Ok(Project {
        yaml,
        warnings,
        model,
        resolved,
    })
}

/// The model as YAML for `stack config`: keys in order, and every `$` written `$$` so that the
/// output, interpolated already, loads again unchanged.
fn print(model: &ComposeFile) -> Result<String, ComposeError> {
    fn escape(v: &mut Value) {
        match v {
            Value::String(s) => *s = s.replace('$', "$$"),
            Value::Sequence(seq) => seq.iter_mut().for_each(escape),
            Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| escape(v)),
            Value::Tagged(t) => escape(&mut t.value),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    let fail = |e: serde_norway::Error| error(format!("cannot print the merged file: {e}"));
    let mut v = serde_norway::to_value(model).map_err(fail)?;
    escape(&mut v);
    serde_norway::to_string(&v).map_err(fail)
}

/// Reads what the model points at: env files, secret and config contents.
fn resolve(
    model: &ComposeFile,
    dir: &Path,
    env: &BTreeMap<String, String>,
    file: &str,
) -> Result<Resolved, ComposeError> {
    let mut res = Resolved {
        dir: dir.to_path_buf(),
        home: env.get("HOME").cloned(),
        ..Default::default()
    };
    for (name, svc) in &model.services {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        let mut set = |k: String, v: Option<String>| {
            // `K` alone takes the value from the environment, and is left out when unset.
            match v.or_else(|| env.get(&k).cloned()) {
                Some(v) => {
                    vars.insert(k, v);
                }
                None => {
                    vars.remove(&k);
                }
            }
        };
        for f in svc.env_file.as_ref().map(|e| e.items()).unwrap_or_default() {
            let path = dir.join(&f);
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| {
                error(format!(
                    "{file}: services.{name}.env_file: cannot read {shown}: {e}"
                ))
            })?;
            for (k, v) in read::parse_env_text(&shown, &text)? {
                set(k, v);
            }
        }
        for (k, v) in svc
            .environment
            .as_ref()
            .map(|e| e.entries())
            .unwrap_or_default()
        {
            set(k, v);
        }
        res.env.insert(
            name.clone(),
            vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
    }
    for (kind, defs, out) in [
        ("secrets", &model.secrets, &mut res.secrets),
        ("configs", &model.configs, &mut res.configs),
    ] {
        for (key, def) in defs {
            if model::external_name(def.external.as_ref(), def.name.as_deref(), key).is_some() {
                continue;
            }
            let path = format!("{kind}.{key}");
            let data = if let Some(f) = &def.file {
                let p = dir.join(f);
                std::fs::read(&p).map_err(|e| {
                    error(format!(
                        "{file}: {path}.file: cannot read {}: {e}",
                        p.display()
                    ))
                })?
            } else if let Some(var) = &def.environment {
                env.get(var)
                    .ok_or_else(|| {
                        error(format!(
                            "{file}: {path}.environment: variable {var} is not set"
                        ))
                    })?
                    .clone()
                    .into_bytes()
            } else if let Some(c) = &def.content {
                c.clone().into_bytes()
            } else {
                return Err(error(format!(
                    "{file}: {path}: needs file, environment or content, or external: true"
                )));
            };
            out.insert(key.clone(), data);
        }
    }
    Ok(res)
}

/// Turns a project into what `stack deploy NAME` writes: every spec checked as the manager
/// will check it; errors name the file(s) and the key path or the service.
pub fn plan(project: &Project, stack: &str) -> Result<StackPlan, ComposeError> {
    let mut plan =
        convert::plan(&project.model, &project.resolved, stack).map_err(|e| match e {
            convert::ConvertError::StackName(_) => ComposeError::from(e),
            other => error(format!("{}: {other}", project.resolved.files)),
        })?;
    let mut warnings = project.warnings.clone();
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    Ok(plan)
}

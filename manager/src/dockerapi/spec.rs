//! docker's `ServiceSpec`/`TaskSpec` JSON ⇄ Shoal's `ServiceSpec`: every field docker sends is
//! either carried into Shoal's spec (and shown back by inspect) or refused with a 400 naming it;
//! zero values and empty objects the CLI always sends are accepted as unset.
//!
//! The parser walks the JSON by hand (no serde structs) so that an unknown key is refused by its
//! full path ("TaskTemplate.ContainerSpec.Foo") instead of being dropped, and `Healthcheck` (Go's
//! spelling, what the CLI sends) and `HealthCheck` (swagger's) are both read.
//!
//! A sub-object that is present and not null becomes `Some` in Shoal's spec and is written back
//! whenever it is `Some`, so docker → Shoal → docker → Shoal gives the spec it started with.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{json, Map, Value};
use shoal_proto::v1::{
    update_config, ConfigReference, ContainerSpec, Driver, EndpointSpec, FileTarget, HealthConfig,
    Mount, MountType, NetworkAttachmentConfig, PortConfig, Privileges, ResourceRequirements,
    Resources, RestartCondition, RestartPolicy, SeccompOpts, SecretReference, ServiceMode,
    ServiceSpec, TaskSpec, Ulimit, UpdateConfig,
};

use super::error::ApiError;

type Obj = Map<String, Value>;

/// Swarm's default stop grace period (10 s).
const DEFAULT_STOP_GRACE_NS: i64 = 10_000_000_000;
/// Swarm's default restart delay (5 s).
const DEFAULT_RESTART_DELAY_NS: i64 = 5_000_000_000;
/// Swarm's default update/rollback monitor (5 s).
const DEFAULT_MONITOR_NS: i64 = 5_000_000_000;

// ------------------------------------------------------------------------------------------------
// Reading JSON strictly
// ------------------------------------------------------------------------------------------------

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Whether a JSON value is docker's "unset": null, false, 0, "", [], or an object of such.
pub(super) fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// `v` as an object whose keys are all in `known` (absent or null: `None`).
fn object<'a>(
    path: &str,
    v: Option<&'a Value>,
    known: &[&str],
) -> Result<Option<&'a Obj>, ApiError> {
    let o = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::field(path, "must be a JSON object")),
    };
    if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::field(
            &join(path, k),
            "unknown field: Shoal does not know it and will not drop it silently; remove it",
        ));
    }
    Ok(Some(o))
}

/// The array at `key` (absent or null: empty).
fn array<'a>(o: &'a Obj, path: &str, key: &str) -> Result<&'a [Value], ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::field(&join(path, key), "must be a JSON array")),
    }
}

fn string(o: &Obj, path: &str, key: &str) -> Result<String, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::field(&join(path, key), "must be a string")),
    }
}

fn boolean(o: &Obj, path: &str, key: &str) -> Result<bool, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::field(&join(path, key), "must be true or false")),
    }
}

fn int(o: &Obj, path: &str, key: &str) -> Result<i64, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::field(&join(path, key), "must be an integer")),
        Some(_) => Err(ApiError::field(&join(path, key), "must be an integer")),
    }
}

fn uint(o: &Obj, path: &str, key: &str) -> Result<u64, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| ApiError::field(&join(path, key), "must be a non-negative integer")),
        Some(_) => Err(ApiError::field(
            &join(path, key),
            "must be a non-negative integer",
        )),
    }
}

fn uint32(o: &Obj, path: &str, key: &str) -> Result<u32, ApiError> {
    u32::try_from(uint(o, path, key)?)
        .map_err(|_| ApiError::field(&join(path, key), "is out of range"))
}

fn float(o: &Obj, path: &str, key: &str) -> Result<f64, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| ApiError::field(&join(path, key), "must be a number")),
        Some(_) => Err(ApiError::field(&join(path, key), "must be a number")),
    }
}

fn strings(o: &Obj, path: &str, key: &str) -> Result<Vec<String>, ApiError> {
    array(o, path, key)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                ApiError::field(&format!("{}[{i}]", join(path, key)), "must be a string")
            })
        })
        .collect()
}

fn string_map(o: &Obj, path: &str, key: &str) -> Result<HashMap<String, String>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(HashMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::field(
                    &join(&join(path, key), k),
                    "must be a string",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::field(
            &join(path, key),
            "must be a JSON object of strings",
        )),
    }
}

/// Refuses `key` unless it holds docker's zero value.
fn zero_only(o: &Obj, path: &str, key: &str, why: &str) -> Result<(), ApiError> {
    match o.get(key) {
        Some(v) if !is_zero(v) => Err(ApiError::field(&join(path, key), why)),
        _ => Ok(()),
    }
}

// ------------------------------------------------------------------------------------------------
// docker → Shoal
// ------------------------------------------------------------------------------------------------

const SERVICE_KEYS: &[&str] = &[
    "Name",
    "Labels",
    "TaskTemplate",
    "Mode",
    "UpdateConfig",
    "RollbackConfig",
    "Networks",
    "EndpointSpec",
];

/// Converts a docker `ServiceSpec` (a `POST /services/create` or `/update` body) into Shoal's.
/// Network targets and secret/config names are passed as given: the control API resolves them.
pub fn service_spec_from_docker(body: &Value) -> Result<ServiceSpec, ApiError> {
    let o = object("", Some(body), SERVICE_KEYS)?.ok_or_else(|| {
        ApiError::bad_request("the request body must be a ServiceSpec JSON object")
    })?;
    zero_only(
        o,
        "",
        "Networks",
        "the service-level Networks field is deprecated and not supported; use TaskTemplate.Networks",
    )?;
    let (mode, replicas) = mode_from_docker(o.get("Mode"))?;
    Ok(ServiceSpec {
        name: string(o, "", "Name")?,
        labels: string_map(o, "", "Labels")?,
        task: Some(task_spec_from_docker(
            "TaskTemplate",
            o.get("TaskTemplate"),
        )?),
        mode: mode as i32,
        replicas,
        endpoint: endpoint_from_docker(o.get("EndpointSpec"))?,
        update: update_config_from_docker("UpdateConfig", o.get("UpdateConfig"))?,
        rollback: update_config_from_docker("RollbackConfig", o.get("RollbackConfig"))?,
        depends_on: Vec::new(),
    })
}

fn mode_from_docker(v: Option<&Value>) -> Result<(ServiceMode, u64), ApiError> {
    let Some(o) = object(
        "Mode",
        v,
        &["Replicated", "Global", "ReplicatedJob", "GlobalJob"],
    )?
    else {
        return Ok((ServiceMode::ModeReplicated, 1));
    };
    for job in ["ReplicatedJob", "GlobalJob"] {
        if o.get(job).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::field(
                &join("Mode", job),
                "Shoal has no jobs (services run until removed); use Replicated or Global",
            ));
        }
    }
    let global = object("Mode.Global", o.get("Global"), &[])?;
    let replicated = object("Mode.Replicated", o.get("Replicated"), &["Replicas"])?;
    match (global, replicated) {
        (Some(_), Some(_)) => Err(ApiError::field(
            "Mode",
            "give either Replicated or Global, not both",
        )),
        (Some(_), None) => Ok((ServiceMode::ModeGlobal, 0)),
        (None, Some(r)) => match r.get("Replicas") {
            None | Some(Value::Null) => Ok((ServiceMode::ModeReplicated, 1)),
            Some(_) => Ok((
                ServiceMode::ModeReplicated,
                uint(r, "Mode.Replicated", "Replicas")?,
            )),
        },
        (None, None) => Ok((ServiceMode::ModeReplicated, 1)),
    }
}

fn task_spec_from_docker(path: &str, v: Option<&Value>) -> Result<TaskSpec, ApiError> {
    let Some(o) = object(
        path,
        v,
        &[
            "ContainerSpec",
            "PluginSpec",
            "NetworkAttachmentSpec",
            "Resources",
            "RestartPolicy",
            "Placement",
            "Networks",
            "LogDriver",
            "ForceUpdate",
            "Runtime",
        ],
    )?
    else {
        return Err(ApiError::field(path, "is required (with a ContainerSpec)"));
    };
    zero_only(
        o,
        path,
        "PluginSpec",
        "Shoal runs containers only, not plugins",
    )?;
    zero_only(
        o,
        path,
        "NetworkAttachmentSpec",
        "Shoal runs containers only, not network attachments",
    )?;
    match string(o, path, "Runtime")?.as_str() {
        "" | "container" => {}
        other => {
            return Err(ApiError::field(
                &join(path, "Runtime"),
                format!("{other:?}: Shoal runs containers only (\"container\")"),
            ))
        }
    }
    let container =
        container_spec_from_docker(&join(path, "ContainerSpec"), o.get("ContainerSpec"))?
            .ok_or_else(|| {
                ApiError::field(&join(path, "ContainerSpec"), "is required (with an Image)")
            })?;
    Ok(TaskSpec {
        container: Some(container),
        resources: resources_from_docker(&join(path, "Resources"), o.get("Resources"))?,
        restart: restart_from_docker(&join(path, "RestartPolicy"), o.get("RestartPolicy"))?,
        placement: placement_from_docker(&join(path, "Placement"), o.get("Placement"))?,
        networks: array(o, path, "Networks")?
            .iter()
            .enumerate()
            .map(|(i, n)| network_from_docker(&format!("{}[{i}]", join(path, "Networks")), n))
            .collect::<Result<_, _>>()?,
        log_driver: driver_from_docker(&join(path, "LogDriver"), o.get("LogDriver"))?
            .filter(|d| !d.name.is_empty() || !d.options.is_empty()),
        force_update: uint(o, path, "ForceUpdate")?,
    })
}

const CONTAINER_KEYS: &[&str] = &[
    "Image",
    "Labels",
    "Command",
    "Args",
    "Hostname",
    "Env",
    "Dir",
    "User",
    "Groups",
    "Privileges",
    "Init",
    "StopSignal",
    "StopGracePeriod",
    "Healthcheck",
    "HealthCheck",
    "TTY",
    "OpenStdin",
    "ReadOnly",
    "Mounts",
    "Hosts",
    "DNSConfig",
    "Secrets",
    "Configs",
    "Isolation",
    "Sysctls",
    "CapabilityAdd",
    "CapabilityDrop",
    "Ulimits",
    "OomScoreAdj",
];

fn container_spec_from_docker(
    path: &str,
    v: Option<&Value>,
) -> Result<Option<ContainerSpec>, ApiError> {
    let Some(o) = object(path, v, CONTAINER_KEYS)? else {
        return Ok(None);
    };
    zero_only(
        o,
        path,
        "TTY",
        "Shoal does not allocate terminals; remove --tty",
    )?;
    zero_only(o, path, "OpenStdin", "Shoal does not attach stdin to tasks")?;
    zero_only(
        o,
        path,
        "DNSConfig",
        "Shoal's tasks use the cluster's DNS; custom nameservers, search domains and options are not supported",
    )?;
    zero_only(
        o,
        path,
        "OomScoreAdj",
        "Shoal does not set the OOM score of tasks",
    )?;
    match string(o, path, "Isolation")?.as_str() {
        "" | "default" => {}
        other => {
            return Err(ApiError::field(
                &join(path, "Isolation"),
                format!("{other:?}: only the default (Linux namespaces) is supported"),
            ))
        }
    }
    let healthcheck = match (o.get("Healthcheck"), o.get("HealthCheck")) {
        (Some(a), Some(b)) if !a.is_null() && !b.is_null() => {
            return Err(ApiError::field(
                &join(path, "Healthcheck"),
                "given twice (Healthcheck and HealthCheck); give one",
            ))
        }
        (Some(a), _) if !a.is_null() => healthcheck_from_docker(&join(path, "Healthcheck"), a)?,
        (_, Some(b)) => healthcheck_from_docker(&join(path, "HealthCheck"), b)?,
        _ => None,
    };
    let stop_grace = match o.get("StopGracePeriod") {
        None | Some(Value::Null) => 0,
        Some(_) => int(o, path, "StopGracePeriod")?,
    };
    Ok(Some(ContainerSpec {
        image: string(o, path, "Image")?,
        command: strings(o, path, "Command")?,
        args: strings(o, path, "Args")?,
        env: strings(o, path, "Env")?,
        dir: string(o, path, "Dir")?,
        user: string(o, path, "User")?,
        hostname: string(o, path, "Hostname")?,
        stop_grace_period_ns: stop_grace,
        insecure_registries: Vec::new(),
        groups: strings(o, path, "Groups")?,
        privileges: privileges_from_docker(&join(path, "Privileges"), o.get("Privileges"))?,
        capability_add: strings(o, path, "CapabilityAdd")?,
        capability_drop: strings(o, path, "CapabilityDrop")?,
        privileged: false,
        devices: Vec::new(),
        read_only: boolean(o, path, "ReadOnly")?,
        ulimits: array(o, path, "Ulimits")?
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let p = format!("{}[{i}]", join(path, "Ulimits"));
                let u = object(&p, Some(u), &["Name", "Soft", "Hard"])?.unwrap_or(&EMPTY);
                Ok(Ulimit {
                    name: string(u, &p, "Name")?,
                    soft: int(u, &p, "Soft")?,
                    hard: int(u, &p, "Hard")?,
                })
            })
            .collect::<Result<_, ApiError>>()?,
        sysctls: string_map(o, path, "Sysctls")?,
        init: boolean(o, path, "Init")?,
        stop_signal: string(o, path, "StopSignal")?,
        healthcheck,
        secrets: array(o, path, "Secrets")?
            .iter()
            .enumerate()
            .map(|(i, s)| secret_from_docker(&format!("{}[{i}]", join(path, "Secrets")), s))
            .collect::<Result<_, _>>()?,
        configs: array(o, path, "Configs")?
            .iter()
            .enumerate()
            .map(|(i, c)| config_from_docker(&format!("{}[{i}]", join(path, "Configs")), c))
            .collect::<Result<_, _>>()?,
        mounts: array(o, path, "Mounts")?
            .iter()
            .enumerate()
            .map(|(i, m)| mount_from_docker(&format!("{}[{i}]", join(path, "Mounts")), m))
            .collect::<Result<_, _>>()?,
        registry_auth: None,
        labels: string_map(o, path, "Labels")?,
        // hosts(5) lines, "IP NAME [ALIAS...]", as swarm stores them (checked by the control API).
        hosts: strings(o, path, "Hosts")?,
    }))
}

static EMPTY: std::sync::LazyLock<Obj> = std::sync::LazyLock::new(Map::new);

fn healthcheck_from_docker(path: &str, v: &Value) -> Result<Option<HealthConfig>, ApiError> {
    let Some(o) = object(
        path,
        Some(v),
        &[
            "Test",
            "Interval",
            "Timeout",
            "StartPeriod",
            "StartInterval",
            "Retries",
        ],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(HealthConfig {
        test: strings(o, path, "Test")?,
        interval_ns: int(o, path, "Interval")?,
        timeout_ns: int(o, path, "Timeout")?,
        start_period_ns: int(o, path, "StartPeriod")?,
        start_interval_ns: int(o, path, "StartInterval")?,
        retries: i32::try_from(int(o, path, "Retries")?)
            .map_err(|_| ApiError::field(&join(path, "Retries"), "is out of range"))?,
    }))
}

fn privileges_from_docker(path: &str, v: Option<&Value>) -> Result<Option<Privileges>, ApiError> {
    let Some(o) = object(
        path,
        v,
        &[
            "CredentialSpec",
            "SELinuxContext",
            "Seccomp",
            "AppArmor",
            "NoNewPrivileges",
        ],
    )?
    else {
        return Ok(None);
    };
    zero_only(
        o,
        path,
        "CredentialSpec",
        "credential specs are Windows-only",
    )?;
    zero_only(
        o,
        path,
        "SELinuxContext",
        "Shoal does not set SELinux labels",
    )?;
    if let Some(a) = object(&join(path, "AppArmor"), o.get("AppArmor"), &["Mode"])? {
        let p = join(path, "AppArmor");
        match string(a, &p, "Mode")?.as_str() {
            "" | "default" => {}
            other => {
                return Err(ApiError::field(
                    &join(&p, "Mode"),
                    format!(
                        "{other:?}: Shoal does not manage AppArmor profiles (only \"default\")"
                    ),
                ))
            }
        }
    }
    let seccomp = match object(
        &join(path, "Seccomp"),
        o.get("Seccomp"),
        &["Mode", "Profile"],
    )? {
        None => None,
        Some(s) => {
            let p = join(path, "Seccomp");
            let profile = match s.get("Profile") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| {
                    ApiError::field(&join(&p, "Profile"), format!("not base64: {e}"))
                })?,
                Some(_) => return Err(ApiError::field(&join(&p, "Profile"), "must be base64")),
            };
            Some(SeccompOpts {
                mode: string(s, &p, "Mode")?,
                profile,
            })
        }
    };
    Ok(Some(Privileges {
        seccomp,
        no_new_privileges: boolean(o, path, "NoNewPrivileges")?,
    }))
}

fn file_target_from_docker(path: &str, v: Option<&Value>) -> Result<Option<FileTarget>, ApiError> {
    let Some(o) = object(path, v, &["Name", "UID", "GID", "Mode"])? else {
        return Ok(None);
    };
    Ok(Some(FileTarget {
        name: string(o, path, "Name")?,
        uid: string(o, path, "UID")?,
        gid: string(o, path, "GID")?,
        mode: uint32(o, path, "Mode")?,
    }))
}

fn secret_from_docker(path: &str, v: &Value) -> Result<SecretReference, ApiError> {
    let o = object(path, Some(v), &["File", "SecretID", "SecretName"])?.unwrap_or(&EMPTY);
    Ok(SecretReference {
        secret_id: string(o, path, "SecretID")?,
        secret_name: string(o, path, "SecretName")?,
        file: file_target_from_docker(&join(path, "File"), o.get("File"))?,
    })
}

fn config_from_docker(path: &str, v: &Value) -> Result<ConfigReference, ApiError> {
    let o = object(
        path,
        Some(v),
        &["File", "Runtime", "ConfigID", "ConfigName"],
    )?
    .unwrap_or(&EMPTY);
    zero_only(
        o,
        path,
        "Runtime",
        "runtime configs (Windows credential specs) are not supported; give File",
    )?;
    Ok(ConfigReference {
        config_id: string(o, path, "ConfigID")?,
        config_name: string(o, path, "ConfigName")?,
        file: file_target_from_docker(&join(path, "File"), o.get("File"))?,
    })
}

fn mount_from_docker(path: &str, v: &Value) -> Result<Mount, ApiError> {
    let o = object(
        path,
        Some(v),
        &[
            "Type",
            "Source",
            "Target",
            "ReadOnly",
            "Consistency",
            "BindOptions",
            "VolumeOptions",
            "TmpfsOptions",
            "ClusterOptions",
            "ImageOptions",
        ],
    )?
    .unwrap_or(&EMPTY);
    let kind = match string(o, path, "Type")?.as_str() {
        "bind" => MountType::MountBind,
        "volume" => MountType::MountVolume,
        "tmpfs" => MountType::MountTmpfs,
        other => {
            return Err(ApiError::field(
                &join(path, "Type"),
                format!("{other:?}: Shoal mounts bind, volume and tmpfs only"),
            ))
        }
    };
    match string(o, path, "Consistency")?.as_str() {
        "" | "default" | "consistent" => {}
        other => {
            return Err(ApiError::field(
                &join(path, "Consistency"),
                format!("{other:?}: only the default consistency exists on Linux"),
            ))
        }
    }
    zero_only(
        o,
        path,
        "ClusterOptions",
        "Shoal has no cluster (CSI) volumes",
    )?;
    zero_only(o, path, "ImageOptions", "Shoal does not mount images")?;
    let bind_options = match object(
        &join(path, "BindOptions"),
        o.get("BindOptions"),
        &[
            "Propagation",
            "NonRecursive",
            "CreateMountpoint",
            "ReadOnlyNonRecursive",
            "ReadOnlyForceRecursive",
        ],
    )? {
        None => None,
        Some(b) => {
            let p = join(path, "BindOptions");
            for k in [
                "NonRecursive",
                "CreateMountpoint",
                "ReadOnlyNonRecursive",
                "ReadOnlyForceRecursive",
            ] {
                zero_only(
                    b,
                    &p,
                    k,
                    "not supported: Shoal's bind mounts are recursive and need an existing source",
                )?;
            }
            Some(shoal_proto::v1::BindOptions {
                propagation: string(b, &p, "Propagation")?,
            })
        }
    };
    let volume_options = match object(
        &join(path, "VolumeOptions"),
        o.get("VolumeOptions"),
        &["NoCopy", "Labels", "DriverConfig", "Subpath"],
    )? {
        None => None,
        Some(vo) => {
            let p = join(path, "VolumeOptions");
            zero_only(vo, &p, "Subpath", "Shoal mounts whole volumes (no subpath)")?;
            Some(shoal_proto::v1::VolumeOptions {
                no_copy: boolean(vo, &p, "NoCopy")?,
                labels: string_map(vo, &p, "Labels")?,
                driver_config: driver_from_docker(
                    &join(&p, "DriverConfig"),
                    vo.get("DriverConfig"),
                )?,
            })
        }
    };
    let tmpfs_options = match object(
        &join(path, "TmpfsOptions"),
        o.get("TmpfsOptions"),
        &["SizeBytes", "Mode", "Options"],
    )? {
        None => None,
        Some(t) => {
            let p = join(path, "TmpfsOptions");
            zero_only(
                t,
                &p,
                "Options",
                "extra tmpfs options are not supported (SizeBytes and Mode are)",
            )?;
            Some(shoal_proto::v1::TmpfsOptions {
                size_bytes: int(t, &p, "SizeBytes")?,
                mode: uint32(t, &p, "Mode")?,
            })
        }
    };
    Ok(Mount {
        r#type: kind as i32,
        source: string(o, path, "Source")?,
        target: string(o, path, "Target")?,
        read_only: boolean(o, path, "ReadOnly")?,
        bind_options,
        volume_options,
        tmpfs_options,
    })
}

fn resources_from_docker(
    path: &str,
    v: Option<&Value>,
) -> Result<Option<ResourceRequirements>, ApiError> {
    let Some(o) = object(
        path,
        v,
        &["Limits", "Reservations", "SwapBytes", "MemorySwappiness"],
    )?
    else {
        return Ok(None);
    };
    zero_only(o, path, "SwapBytes", "Shoal does not limit swap separately")?;
    zero_only(
        o,
        path,
        "MemorySwappiness",
        "Shoal does not set memory swappiness",
    )?;
    let mut pids_limit = 0;
    let limits = match object(
        &join(path, "Limits"),
        o.get("Limits"),
        &["NanoCPUs", "MemoryBytes", "Pids"],
    )? {
        None => None,
        Some(l) => {
            let p = join(path, "Limits");
            pids_limit = int(l, &p, "Pids")?;
            Some(Resources {
                nano_cpus: int(l, &p, "NanoCPUs")?,
                memory_bytes: int(l, &p, "MemoryBytes")?,
            })
        }
    };
    let reservations = match object(
        &join(path, "Reservations"),
        o.get("Reservations"),
        &["NanoCPUs", "MemoryBytes", "GenericResources"],
    )? {
        None => None,
        Some(r) => {
            let p = join(path, "Reservations");
            zero_only(
                r,
                &p,
                "GenericResources",
                "Shoal has no generic resources (GPUs etc.)",
            )?;
            Some(Resources {
                nano_cpus: int(r, &p, "NanoCPUs")?,
                memory_bytes: int(r, &p, "MemoryBytes")?,
            })
        }
    };
    Ok(Some(ResourceRequirements {
        limits,
        reservations,
        pids_limit,
    }))
}

fn restart_from_docker(path: &str, v: Option<&Value>) -> Result<Option<RestartPolicy>, ApiError> {
    let Some(o) = object(path, v, &["Condition", "Delay", "MaxAttempts", "Window"])? else {
        return Ok(None);
    };
    let condition = match string(o, path, "Condition")?.as_str() {
        "" | "any" => RestartCondition::RestartAny,
        "on-failure" => RestartCondition::RestartOnFailure,
        "none" => RestartCondition::RestartNone,
        other => {
            return Err(ApiError::field(
                &join(path, "Condition"),
                format!("{other:?}: use none, on-failure or any"),
            ))
        }
    };
    Ok(Some(RestartPolicy {
        condition: condition as i32,
        delay_ns: int(o, path, "Delay")?,
        max_attempts: uint(o, path, "MaxAttempts")?,
        window_ns: int(o, path, "Window")?,
    }))
}

fn placement_from_docker(
    path: &str,
    v: Option<&Value>,
) -> Result<Option<shoal_proto::v1::Placement>, ApiError> {
    let Some(o) = object(
        path,
        v,
        &["Constraints", "Preferences", "MaxReplicas", "Platforms"],
    )?
    else {
        return Ok(None);
    };
    // The CLI copies the platforms of the image's manifest list here (from
    // `/distribution/{image}/json`); the scheduler places tasks only on nodes of one of them.
    let platforms = array(o, path, "Platforms")?
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let pp = format!("{}[{i}]", join(path, "Platforms"));
            let po = object(&pp, Some(p), &["Architecture", "OS"])?.unwrap_or(&EMPTY);
            Ok(shoal_proto::v1::Platform {
                architecture: string(po, &pp, "Architecture")?,
                os: string(po, &pp, "OS")?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let preferences = array(o, path, "Preferences")?
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let pp = format!("{}[{i}]", join(path, "Preferences"));
            let po = object(&pp, Some(p), &["Spread"])?.unwrap_or(&EMPTY);
            let spread = object(
                &join(&pp, "Spread"),
                po.get("Spread"),
                &["SpreadDescriptor"],
            )?
            .ok_or_else(|| {
                ApiError::field(&join(&pp, "Spread"), "is required (the only preference)")
            })?;
            Ok(format!(
                "spread={}",
                string(spread, &join(&pp, "Spread"), "SpreadDescriptor")?
            ))
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Some(shoal_proto::v1::Placement {
        constraints: strings(o, path, "Constraints")?,
        max_replicas_per_node: uint(o, path, "MaxReplicas")?,
        preferences,
        platforms,
    }))
}

fn network_from_docker(path: &str, v: &Value) -> Result<NetworkAttachmentConfig, ApiError> {
    let o = object(path, Some(v), &["Target", "Aliases", "DriverOpts"])?.unwrap_or(&EMPTY);
    zero_only(
        o,
        path,
        "DriverOpts",
        "per-attachment driver options are not supported",
    )?;
    Ok(NetworkAttachmentConfig {
        target: string(o, path, "Target")?,
        aliases: strings(o, path, "Aliases")?,
    })
}

fn driver_from_docker(path: &str, v: Option<&Value>) -> Result<Option<Driver>, ApiError> {
    let Some(o) = object(path, v, &["Name", "Options"])? else {
        return Ok(None);
    };
    Ok(Some(Driver {
        name: string(o, path, "Name")?,
        options: string_map(o, path, "Options")?,
    }))
}

fn update_config_from_docker(
    path: &str,
    v: Option<&Value>,
) -> Result<Option<UpdateConfig>, ApiError> {
    let Some(o) = object(
        path,
        v,
        &[
            "Parallelism",
            "Delay",
            "FailureAction",
            "Monitor",
            "MaxFailureRatio",
            "Order",
        ],
    )?
    else {
        return Ok(None);
    };
    let failure_action = match string(o, path, "FailureAction")?.as_str() {
        "" | "pause" => update_config::FailureAction::Pause,
        "continue" => update_config::FailureAction::Continue,
        "rollback" => update_config::FailureAction::Rollback,
        other => {
            return Err(ApiError::field(
                &join(path, "FailureAction"),
                format!("{other:?}: use pause, continue or rollback"),
            ))
        }
    };
    let order = match string(o, path, "Order")?.as_str() {
        "" | "stop-first" => update_config::Order::StopFirst,
        "start-first" => update_config::Order::StartFirst,
        other => {
            return Err(ApiError::field(
                &join(path, "Order"),
                format!("{other:?}: use stop-first or start-first"),
            ))
        }
    };
    Ok(Some(UpdateConfig {
        parallelism: uint(o, path, "Parallelism")?,
        delay_ns: int(o, path, "Delay")?,
        failure_action: failure_action as i32,
        monitor_ns: int(o, path, "Monitor")?,
        max_failure_ratio: float(o, path, "MaxFailureRatio")? as f32,
        order: order as i32,
    }))
}

fn endpoint_from_docker(v: Option<&Value>) -> Result<Option<EndpointSpec>, ApiError> {
    let path = "EndpointSpec";
    let Some(o) = object(path, v, &["Mode", "Ports"])? else {
        return Ok(None);
    };
    Ok(Some(EndpointSpec {
        mode: string(o, path, "Mode")?,
        ports: array(o, path, "Ports")?
            .iter()
            .enumerate()
            .map(|(i, p)| port_from_docker(&format!("EndpointSpec.Ports[{i}]"), p))
            .collect::<Result<_, _>>()?,
    }))
}

fn port_from_docker(path: &str, v: &Value) -> Result<PortConfig, ApiError> {
    let o = object(
        path,
        Some(v),
        &[
            "Name",
            "Protocol",
            "TargetPort",
            "PublishedPort",
            "PublishMode",
        ],
    )?
    .unwrap_or(&EMPTY);
    Ok(PortConfig {
        name: string(o, path, "Name")?,
        protocol: string(o, path, "Protocol")?,
        target_port: uint32(o, path, "TargetPort")?,
        published_port: uint32(o, path, "PublishedPort")?,
        publish_mode: string(o, path, "PublishMode")?,
    })
}

// ------------------------------------------------------------------------------------------------
// Shoal → docker
// ------------------------------------------------------------------------------------------------

/// Inserts `key: value` unless `value` is docker's zero (as Go's `omitempty`).
fn put(o: &mut Obj, key: &str, value: Value) {
    if !is_zero(&value) {
        o.insert(key.to_string(), value);
    }
}

fn labels_json(m: &HashMap<String, String>) -> Value {
    let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
    json!(sorted)
}

/// Shoal's `ServiceSpec` as docker's JSON. `insert_defaults` fills in swarm's defaults for what
/// the spec leaves unset (`?insertDefaults=true`, `service inspect`); they are not stored.
/// Registry credentials are never written.
pub fn service_spec_to_docker(spec: &ServiceSpec, insert_defaults: bool) -> Value {
    let mut o = Obj::new();
    o.insert("Name".into(), json!(spec.name));
    o.insert("Labels".into(), labels_json(&spec.labels));
    o.insert(
        "TaskTemplate".into(),
        task_spec_to_docker(spec.task.as_ref(), insert_defaults),
    );
    let mode = if spec.mode == ServiceMode::ModeGlobal as i32 {
        json!({ "Global": {} })
    } else {
        json!({ "Replicated": { "Replicas": spec.replicas } })
    };
    o.insert("Mode".into(), mode);
    let default_update = insert_defaults.then(UpdateConfig::default);
    if let Some(u) = spec.update.as_ref().or(default_update.as_ref()) {
        o.insert(
            "UpdateConfig".into(),
            update_config_to_docker(u, insert_defaults),
        );
    }
    if let Some(u) = spec.rollback.as_ref().or(default_update.as_ref()) {
        o.insert(
            "RollbackConfig".into(),
            update_config_to_docker(u, insert_defaults),
        );
    }
    match &spec.endpoint {
        Some(e) => {
            let mut eo = Obj::new();
            let mode = if e.mode.is_empty() && insert_defaults {
                "vip"
            } else {
                e.mode.as_str()
            };
            put(&mut eo, "Mode", json!(mode));
            if !e.ports.is_empty() {
                eo.insert(
                    "Ports".into(),
                    Value::Array(e.ports.iter().map(port_to_docker).collect()),
                );
            }
            o.insert("EndpointSpec".into(), Value::Object(eo));
        }
        None if insert_defaults => {
            o.insert("EndpointSpec".into(), json!({ "Mode": "vip" }));
        }
        None => {}
    }
    Value::Object(o)
}

/// A `PortConfig` as docker's JSON (also a task's `PortStatus` and a service's `Endpoint.Ports`).
pub fn port_to_docker(p: &PortConfig) -> Value {
    let mut o = Obj::new();
    put(&mut o, "Name", json!(p.name));
    put(&mut o, "Protocol", json!(p.protocol));
    put(&mut o, "TargetPort", json!(p.target_port));
    put(&mut o, "PublishedPort", json!(p.published_port));
    put(&mut o, "PublishMode", json!(p.publish_mode));
    Value::Object(o)
}

/// f32 → the shortest decimal JSON number that reads back as the same f32 (0.1, not
/// 0.10000000149011612).
fn f32_json(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn update_config_to_docker(u: &UpdateConfig, insert_defaults: bool) -> Value {
    let mut o = Obj::new();
    let parallelism = if insert_defaults && u == &UpdateConfig::default() {
        1
    } else {
        u.parallelism
    };
    o.insert("Parallelism".into(), json!(parallelism));
    put(&mut o, "Delay", json!(u.delay_ns));
    let action = match update_config::FailureAction::try_from(u.failure_action) {
        Ok(update_config::FailureAction::Continue) => "continue",
        Ok(update_config::FailureAction::Rollback) => "rollback",
        _ => "pause",
    };
    o.insert("FailureAction".into(), json!(action));
    let monitor = if insert_defaults && u.monitor_ns == 0 {
        DEFAULT_MONITOR_NS
    } else {
        u.monitor_ns
    };
    put(&mut o, "Monitor", json!(monitor));
    o.insert("MaxFailureRatio".into(), f32_json(u.max_failure_ratio));
    let order = match update_config::Order::try_from(u.order) {
        Ok(update_config::Order::StartFirst) => "start-first",
        _ => "stop-first",
    };
    o.insert("Order".into(), json!(order));
    Value::Object(o)
}

/// Shoal's `TaskSpec` as docker's `TaskTemplate` (`ContainerSpec` always present: the CLI
/// dereferences it).
pub fn task_spec_to_docker(task: Option<&TaskSpec>, insert_defaults: bool) -> Value {
    let default_task = TaskSpec::default();
    let task = task.unwrap_or(&default_task);
    let mut o = Obj::new();
    o.insert(
        "ContainerSpec".into(),
        container_spec_to_docker(task.container.as_ref(), insert_defaults),
    );
    match &task.resources {
        Some(r) => {
            o.insert("Resources".into(), resources_to_docker(r));
        }
        None if insert_defaults => {
            o.insert(
                "Resources".into(),
                json!({ "Limits": {}, "Reservations": {} }),
            );
        }
        None => {}
    }
    match &task.restart {
        Some(r) => {
            let mut ro = Obj::new();
            let condition = match RestartCondition::try_from(r.condition) {
                Ok(RestartCondition::RestartNone) => "none",
                Ok(RestartCondition::RestartOnFailure) => "on-failure",
                _ => "any",
            };
            ro.insert("Condition".into(), json!(condition));
            let delay = if insert_defaults && r.delay_ns == 0 {
                DEFAULT_RESTART_DELAY_NS
            } else {
                r.delay_ns
            };
            put(&mut ro, "Delay", json!(delay));
            ro.insert("MaxAttempts".into(), json!(r.max_attempts));
            put(&mut ro, "Window", json!(r.window_ns));
            o.insert("RestartPolicy".into(), Value::Object(ro));
        }
        None if insert_defaults => {
            o.insert(
                "RestartPolicy".into(),
                json!({ "Condition": "any", "Delay": DEFAULT_RESTART_DELAY_NS, "MaxAttempts": 0 }),
            );
        }
        None => {}
    }
    match &task.placement {
        Some(p) => {
            let mut po = Obj::new();
            put(&mut po, "Constraints", json!(p.constraints));
            let prefs: Vec<Value> = p
                .preferences
                .iter()
                .filter_map(|s| s.strip_prefix("spread="))
                .map(|d| json!({ "Spread": { "SpreadDescriptor": d } }))
                .collect();
            put(&mut po, "Preferences", Value::Array(prefs));
            put(&mut po, "MaxReplicas", json!(p.max_replicas_per_node));
            let platforms: Vec<Value> = p
                .platforms
                .iter()
                .map(|pl| {
                    let mut v = Obj::new();
                    put(&mut v, "Architecture", json!(pl.architecture));
                    put(&mut v, "OS", json!(pl.os));
                    Value::Object(v)
                })
                .collect();
            put(&mut po, "Platforms", Value::Array(platforms));
            o.insert("Placement".into(), Value::Object(po));
        }
        None if insert_defaults => {
            o.insert("Placement".into(), json!({}));
        }
        None => {}
    }
    if !task.networks.is_empty() {
        let nets = task
            .networks
            .iter()
            .map(|n| {
                let mut no = Obj::new();
                no.insert("Target".into(), json!(n.target));
                put(&mut no, "Aliases", json!(n.aliases));
                Value::Object(no)
            })
            .collect();
        o.insert("Networks".into(), Value::Array(nets));
    }
    if let Some(d) = &task.log_driver {
        o.insert("LogDriver".into(), driver_to_docker(d));
    }
    o.insert("ForceUpdate".into(), json!(task.force_update));
    o.insert("Runtime".into(), json!("container"));
    Value::Object(o)
}

fn driver_to_docker(d: &Driver) -> Value {
    let mut o = Obj::new();
    o.insert("Name".into(), json!(d.name));
    if !d.options.is_empty() {
        o.insert("Options".into(), labels_json(&d.options));
    }
    Value::Object(o)
}

fn resources_to_docker(r: &ResourceRequirements) -> Value {
    let mut o = Obj::new();
    if r.limits.is_some() || r.pids_limit != 0 {
        let mut lo = Obj::new();
        if let Some(l) = &r.limits {
            put(&mut lo, "NanoCPUs", json!(l.nano_cpus));
            put(&mut lo, "MemoryBytes", json!(l.memory_bytes));
        }
        put(&mut lo, "Pids", json!(r.pids_limit));
        o.insert("Limits".into(), Value::Object(lo));
    }
    if let Some(res) = &r.reservations {
        let mut ro = Obj::new();
        put(&mut ro, "NanoCPUs", json!(res.nano_cpus));
        put(&mut ro, "MemoryBytes", json!(res.memory_bytes));
        o.insert("Reservations".into(), Value::Object(ro));
    }
    Value::Object(o)
}

fn file_target_to_docker(f: &FileTarget) -> Value {
    json!({ "Name": f.name, "UID": f.uid, "GID": f.gid, "Mode": f.mode })
}

fn container_spec_to_docker(c: Option<&ContainerSpec>, insert_defaults: bool) -> Value {
    let default_container = ContainerSpec::default();
    let c = c.unwrap_or(&default_container);
    let mut o = Obj::new();
    o.insert("Image".into(), json!(c.image));
    if !c.labels.is_empty() {
        o.insert("Labels".into(), labels_json(&c.labels));
    }
    put(&mut o, "Command", json!(c.command));
    put(&mut o, "Args", json!(c.args));
    put(&mut o, "Hostname", json!(c.hostname));
    put(&mut o, "Env", json!(c.env));
    put(&mut o, "Dir", json!(c.dir));
    put(&mut o, "User", json!(c.user));
    put(&mut o, "Groups", json!(c.groups));
    if let Some(p) = &c.privileges {
        let mut po = Obj::new();
        if let Some(s) = &p.seccomp {
            let mut so = Obj::new();
            put(&mut so, "Mode", json!(s.mode));
            if !s.profile.is_empty() {
                so.insert(
                    "Profile".into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(&s.profile)),
                );
            }
            po.insert("Seccomp".into(), Value::Object(so));
        }
        po.insert("NoNewPrivileges".into(), json!(p.no_new_privileges));
        o.insert("Privileges".into(), Value::Object(po));
    }
    o.insert("Init".into(), json!(c.init));
    put(&mut o, "StopSignal", json!(c.stop_signal));
    let grace = if insert_defaults && c.stop_grace_period_ns == 0 {
        DEFAULT_STOP_GRACE_NS
    } else {
        c.stop_grace_period_ns
    };
    put(&mut o, "StopGracePeriod", json!(grace));
    if let Some(h) = &c.healthcheck {
        let mut ho = Obj::new();
        put(&mut ho, "Test", json!(h.test));
        put(&mut ho, "Interval", json!(h.interval_ns));
        put(&mut ho, "Timeout", json!(h.timeout_ns));
        put(&mut ho, "StartPeriod", json!(h.start_period_ns));
        put(&mut ho, "StartInterval", json!(h.start_interval_ns));
        put(&mut ho, "Retries", json!(h.retries));
        o.insert("Healthcheck".into(), Value::Object(ho));
    }
    put(&mut o, "ReadOnly", json!(c.read_only));
    if !c.mounts.is_empty() {
        o.insert(
            "Mounts".into(),
            Value::Array(c.mounts.iter().map(mount_to_docker).collect()),
        );
    }
    if !c.secrets.is_empty() {
        let secrets = c
            .secrets
            .iter()
            .map(|s| {
                let mut so = Obj::new();
                if let Some(f) = &s.file {
                    so.insert("File".into(), file_target_to_docker(f));
                }
                so.insert("SecretID".into(), json!(s.secret_id));
                so.insert("SecretName".into(), json!(s.secret_name));
                Value::Object(so)
            })
            .collect();
        o.insert("Secrets".into(), Value::Array(secrets));
    }
    if !c.configs.is_empty() {
        let configs = c
            .configs
            .iter()
            .map(|s| {
                let mut so = Obj::new();
                if let Some(f) = &s.file {
                    so.insert("File".into(), file_target_to_docker(f));
                }
                so.insert("ConfigID".into(), json!(s.config_id));
                so.insert("ConfigName".into(), json!(s.config_name));
                Value::Object(so)
            })
            .collect();
        o.insert("Configs".into(), Value::Array(configs));
    }
    if !c.sysctls.is_empty() {
        o.insert("Sysctls".into(), labels_json(&c.sysctls));
    }
    put(&mut o, "Hosts", json!(c.hosts));
    put(&mut o, "CapabilityAdd", json!(c.capability_add));
    put(&mut o, "CapabilityDrop", json!(c.capability_drop));
    if !c.ulimits.is_empty() {
        let ulimits = c
            .ulimits
            .iter()
            .map(|u| json!({ "Name": u.name, "Soft": u.soft, "Hard": u.hard }))
            .collect();
        o.insert("Ulimits".into(), Value::Array(ulimits));
    }
    if insert_defaults {
        o.insert("Isolation".into(), json!("default"));
    }
    Value::Object(o)
}

fn mount_to_docker(m: &Mount) -> Value {
    let mut o = Obj::new();
    let kind = match MountType::try_from(m.r#type) {
        Ok(MountType::MountVolume) => "volume",
        Ok(MountType::MountTmpfs) => "tmpfs",
        _ => "bind",
    };
    o.insert("Type".into(), json!(kind));
    put(&mut o, "Source", json!(m.source));
    o.insert("Target".into(), json!(m.target));
    put(&mut o, "ReadOnly", json!(m.read_only));
    if let Some(b) = &m.bind_options {
        let mut bo = Obj::new();
        put(&mut bo, "Propagation", json!(b.propagation));
        o.insert("BindOptions".into(), Value::Object(bo));
    }
    if let Some(v) = &m.volume_options {
        let mut vo = Obj::new();
        put(&mut vo, "NoCopy", json!(v.no_copy));
        if !v.labels.is_empty() {
            vo.insert("Labels".into(), labels_json(&v.labels));
        }
        if let Some(d) = &v.driver_config {
            vo.insert("DriverConfig".into(), driver_to_docker(d));
        }
        o.insert("VolumeOptions".into(), Value::Object(vo));
    }
    if let Some(t) = &m.tmpfs_options {
        let mut to = Obj::new();
        put(&mut to, "SizeBytes", json!(t.size_bytes));
        put(&mut to, "Mode", json!(t.mode));
        o.insert("TmpfsOptions".into(), Value::Object(to));
    }
    Value::Object(o)
}

/// Carries over what a docker spec cannot express from the stored spec into one a docker
/// client sent (read-modify-write must not undo `shoalctl`'s settings): `--privileged`,
/// devices, insecure registries and `depends_on`.
pub fn keep_shoal_only_fields(stored: &ServiceSpec, sent: &mut ServiceSpec) {
    sent.depends_on.clone_from(&stored.depends_on);
    let Some(old) = stored.task.as_ref().and_then(|t| t.container.as_ref()) else {
        return;
    };
    if let Some(c) = sent.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.privileged = old.privileged;
        c.devices.clone_from(&old.devices);
        c.insecure_registries.clone_from(&old.insecure_registries);
    }
}

/// Settles a spec a docker client sent for an update against the stored one: what docker cannot
/// express is kept ([`keep_shoal_only_fields`]), and each part (task template, endpoint, update
/// and rollback configs) that the client sent back unchanged keeps the stored form exactly, so
/// a representation difference (an empty object for an unset one) never looks like a change of
/// the task template, which would replace every task on `docker service scale`.
pub fn settle_update(stored: &ServiceSpec, sent: &mut ServiceSpec) {
    keep_shoal_only_fields(stored, sent);
    let Ok(mut as_docker_sees_it) =
        service_spec_from_docker(&service_spec_to_docker(stored, false))
    else {
        return;
    };
    keep_shoal_only_fields(stored, &mut as_docker_sees_it);
    if sent.task == as_docker_sees_it.task {
        sent.task.clone_from(&stored.task);
    }
    if sent.endpoint == as_docker_sees_it.endpoint {
        sent.endpoint.clone_from(&stored.endpoint);
    }
    if sent.update == as_docker_sees_it.update {
        sent.update = stored.update;
    }
    if sent.rollback == as_docker_sees_it.rollback {
        sent.rollback = stored.rollback;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 20.10 CLI's `service create` body (research doc, appendix A).
    const CLI_CREATE: &str = r#"{"Name":"s1","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"nginx:alpine","Init":false,"DNSConfig":{}},"Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0},"Mode":{"Replicated":{"Replicas":2}},"EndpointSpec":{"Mode":"vip"}}"#;

    /// A stack deploy body: network by name, a secret by id and name.
    const STACK_CREATE: &str = r#"{"Name":"demo_web","Labels":{"com.docker.stack.image":"nginx:alpine","com.docker.stack.namespace":"demo"},"TaskTemplate":{"ContainerSpec":{"Image":"nginx:alpine@sha256:0123","Labels":{"com.docker.stack.namespace":"demo"},"Privileges":{"CredentialSpec":null,"SELinuxContext":null},"Secrets":[{"File":{"Name":"s1","UID":"0","GID":"0","Mode":292},"SecretID":"abc","SecretName":"demo_s1"}],"Isolation":"default"},"Resources":{},"RestartPolicy":{"Condition":"any","MaxAttempts":0},"Placement":{"Platforms":[{"Architecture":"amd64","OS":"linux"}]},"Networks":[{"Target":"demo_front","Aliases":["web"]}],"ForceUpdate":0,"Runtime":"container"},"Mode":{"Replicated":{"Replicas":1}},"UpdateConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},"RollbackConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8080,"PublishMode":"ingress"}]}}"#;

    /// Every field Shoal maps, set.
    fn rich() -> Value {
        json!({
            "Name": "rich",
            "Labels": {"a": "1", "b": ""},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox:1.36",
                    "Labels": {"c": "3"},
                    "Command": ["/bin/sh", "-c"],
                    "Args": ["sleep 1000"],
                    "Hostname": "{{.Task.Name}}",
                    "Env": ["A=1", "B=2"],
                    "Dir": "/tmp",
                    "User": "1000:1000",
                    "Groups": ["wheel", "10"],
                    "Privileges": {
                        "CredentialSpec": null, "SELinuxContext": null,
                        "Seccomp": {"Mode": "custom", "Profile": "eyJkZWZhdWx0QWN0aW9uIjoiU0NNUF9BQ1RfQUxMT1cifQ=="},
                        "AppArmor": {"Mode": "default"},
                        "NoNewPrivileges": true
                    },
                    "Init": true,
                    "StopGracePeriod": 20000000000i64,
                    "StopSignal": "SIGINT",
                    "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 10000000000i64,
                        "Timeout": 2000000000, "StartPeriod": 1000000000, "StartInterval": 500000000,
                        "Retries": 3},
                    "ReadOnly": true,
                    "Mounts": [
                        {"Type": "bind", "Source": "/srv", "Target": "/srv", "ReadOnly": true,
                         "BindOptions": {"Propagation": "rslave"}},
                        {"Type": "volume", "Source": "data", "Target": "/data",
                         "VolumeOptions": {"NoCopy": true, "Labels": {"v": "1"},
                            "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}}},
                        {"Type": "tmpfs", "Target": "/scratch",
                         "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}}
                    ],
                    "Secrets": [{"File": {"Name": "s", "UID": "0", "GID": "0", "Mode": 256},
                                 "SecretID": "sid", "SecretName": "s"}],
                    "Configs": [{"File": {"Name": "/c", "UID": "1", "GID": "1", "Mode": 292},
                                 "ConfigID": "cid", "ConfigName": "c"}],
                    "Isolation": "",
                    "Sysctls": {"net.core.somaxconn": "1024"},
                    "CapabilityAdd": ["CAP_NET_ADMIN"],
                    "CapabilityDrop": ["CAP_MKNOD"],
                    "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
                    "DNSConfig": {}, "Hosts": ["10.0.0.5 db alias"], "TTY": false, "OpenStdin": false
                },
                "Resources": {"Limits": {"NanoCPUs": 500000000, "MemoryBytes": 67108864, "Pids": 100},
                              "Reservations": {"NanoCPUs": 100000000, "MemoryBytes": 1048576}},
                "RestartPolicy": {"Condition": "on-failure", "Delay": 1000000000, "MaxAttempts": 3,
                                  "Window": 60000000000i64},
                "Placement": {"Constraints": ["node.role==worker"],
                              "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
                              "MaxReplicas": 2, "Platforms": []},
                "Networks": [{"Target": "netid1", "Aliases": ["x", "y"]}, {"Target": "netid2"}],
                "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m"}},
                "ForceUpdate": 4,
                "Runtime": "container"
            },
            "Mode": {"Replicated": {"Replicas": 3}},
            "UpdateConfig": {"Parallelism": 2, "Delay": 1000000000, "FailureAction": "rollback",
                             "Monitor": 3000000000i64, "MaxFailureRatio": 0.1, "Order": "start-first"},
            "RollbackConfig": {"Parallelism": 0, "FailureAction": "continue", "MaxFailureRatio": 0.5,
                               "Order": "stop-first"},
            "EndpointSpec": {"Mode": "dnsrr", "Ports": [
                {"Name": "http", "Protocol": "udp", "TargetPort": 53, "PublishedPort": 5353,
                 "PublishMode": "host"}]}
        })
    }

    fn round_trip(v: &Value) -> ServiceSpec {
        let spec = service_spec_from_docker(v).expect("accepted");
        let back = service_spec_to_docker(&spec, false);
        let again = service_spec_from_docker(&back).expect("our own output is accepted");
        assert_eq!(
            spec, again,
            "docker → shoal → docker → shoal changed the spec: {back}"
        );
        spec
    }

    #[test]
    fn cli_bodies_round_trip() {
        let s = round_trip(&serde_json::from_str(CLI_CREATE).expect("json"));
        assert_eq!(s.name, "s1");
        assert_eq!(s.replicas, 2);
        assert_eq!(
            s.task.and_then(|t| t.container).map(|c| c.image).as_deref(),
            Some("nginx:alpine")
        );
        let s = round_trip(&serde_json::from_str(STACK_CREATE).expect("json"));
        let t = s.task.expect("task");
        assert_eq!(t.networks[0].target, "demo_front");
        let c = t.container.expect("container");
        assert_eq!(c.secrets[0].secret_id, "abc");
        assert_eq!(c.secrets[0].secret_name, "demo_s1");
        assert_eq!(c.secrets[0].file.as_ref().map(|f| f.mode), Some(292));
        assert_eq!(s.endpoint.expect("endpoint").ports[0].published_port, 8080);
    }

    #[test]
    fn every_field_round_trips() {
        let s = round_trip(&rich());
        let t = s.task.clone().expect("task");
        let c = t.container.clone().expect("container");
        assert_eq!(c.stop_grace_period_ns, 20_000_000_000);
        assert_eq!(c.healthcheck.as_ref().map(|h| h.retries), Some(3));
        assert_eq!(
            c.privileges
                .as_ref()
                .and_then(|p| p.seccomp.as_ref())
                .map(|s| s.profile.clone()),
            Some(br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.to_vec())
        );
        assert_eq!(c.mounts.len(), 3);
        assert_eq!(
            t.placement.as_ref().map(|p| p.preferences.clone()),
            Some(vec!["spread=node.labels.zone".to_string()])
        );
        assert_eq!(t.resources.as_ref().map(|r| r.pids_limit), Some(100));
        assert_eq!(s.update.as_ref().map(|u| u.max_failure_ratio), Some(0.1));
        // The docker form shows the same values back.
        let out = service_spec_to_docker(&s, false);
        assert_eq!(out["UpdateConfig"]["MaxFailureRatio"], json!(0.1));
        assert_eq!(
            out["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Interval"],
            json!(10_000_000_000i64)
        );
        assert_eq!(
            out["TaskTemplate"]["Resources"]["Limits"]["Pids"],
            json!(100)
        );
        assert_eq!(out["Mode"], json!({"Replicated": {"Replicas": 3}}));
    }

    #[test]
    fn health_check_is_read_in_both_spellings() {
        let mut v = rich();
        let hc = v["TaskTemplate"]["ContainerSpec"]
            .as_object_mut()
            .and_then(|o| o.remove("Healthcheck"))
            .expect("healthcheck");
        v["TaskTemplate"]["ContainerSpec"]["HealthCheck"] = hc;
        let s = service_spec_from_docker(&v).expect("accepted");
        assert_eq!(
            s.task
                .and_then(|t| t.container)
                .and_then(|c| c.healthcheck)
                .map(|h| h.test),
            Some(vec!["CMD-SHELL".to_string(), "true".to_string()])
        );
    }

    fn refused(mutate: impl FnOnce(&mut Value)) -> String {
        let mut v = rich();
        mutate(&mut v);
        let e = service_spec_from_docker(&v).expect_err("refused");
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        e.message
    }

    #[test]
    fn what_shoal_cannot_do_is_refused_by_name() {
        let m = refused(|v| v["TaskTemplate"]["ContainerSpec"]["TTY"] = json!(true));
        assert!(m.starts_with("TaskTemplate.ContainerSpec.TTY: "), "{m}");
        let m = refused(|v| {
            v["TaskTemplate"]["ContainerSpec"]["DNSConfig"] = json!({"Nameservers": ["8.8.8.8"]})
        });
        assert!(
            m.starts_with("TaskTemplate.ContainerSpec.DNSConfig: "),
            "{m}"
        );
        let m = refused(|v| v["Mode"] = json!({"ReplicatedJob": {"MaxConcurrent": 1}}));
        assert!(m.starts_with("Mode.ReplicatedJob: "), "{m}");
        let m = refused(|v| v["TaskTemplate"]["ContainerSpec"]["Frobnicate"] = json!(1));
        assert!(
            m.starts_with("TaskTemplate.ContainerSpec.Frobnicate: unknown field"),
            "{m}"
        );
        let m = refused(|v| v["Bogus"] = json!({}));
        assert!(m.starts_with("Bogus: unknown field"), "{m}");
        let m = refused(|v| v["TaskTemplate"]["Runtime"] = json!("plugin"));
        assert!(m.starts_with("TaskTemplate.Runtime: "), "{m}");
        let m = refused(|v| v["TaskTemplate"]["ContainerSpec"]["Isolation"] = json!("hyperv"));
        assert!(
            m.starts_with("TaskTemplate.ContainerSpec.Isolation: "),
            "{m}"
        );
        let m =
            refused(|v| v["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Type"] = json!("npipe"));
        assert!(
            m.starts_with("TaskTemplate.ContainerSpec.Mounts[0].Type: "),
            "{m}"
        );
        let m = refused(|v| {
            v["TaskTemplate"]["ContainerSpec"]["Privileges"]["SELinuxContext"] =
                json!({"User": "u"})
        });
        assert!(
            m.starts_with("TaskTemplate.ContainerSpec.Privileges.SELinuxContext: "),
            "{m}"
        );
        let m = refused(|v| {
            v["TaskTemplate"]["Placement"]["Platforms"] =
                json!([{"OS": "linux", "Architecture": "amd64", "Variant": "v8"}])
        });
        assert!(
            m.starts_with("TaskTemplate.Placement.Platforms[0].Variant: "),
            "{m}"
        );
        let m = refused(|v| v["TaskTemplate"]["RestartPolicy"]["Condition"] = json!("always"));
        assert!(
            m.starts_with("TaskTemplate.RestartPolicy.Condition: "),
            "{m}"
        );
        let m = refused(|v| {
            v["TaskTemplate"]["Resources"]["Reservations"]["GenericResources"] =
                json!([{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}])
        });
        assert!(
            m.starts_with("TaskTemplate.Resources.Reservations.GenericResources: "),
            "{m}"
        );
        let m = refused(|v| v["Networks"] = json!([{"Target": "x"}]));
        assert!(m.starts_with("Networks: "), "{m}");
        let m = refused(|v| v["TaskTemplate"]["ContainerSpec"]["Env"] = json!("A=1"));
        assert!(m.starts_with("TaskTemplate.ContainerSpec.Env: "), "{m}");
        let m = refused(|v| {
            v["TaskTemplate"]["ContainerSpec"]
                .as_object_mut()
                .map(|o| o.remove("Image"));
            v["TaskTemplate"]
                .as_object_mut()
                .map(|o| o.remove("ContainerSpec"));
        });
        assert!(m.starts_with("TaskTemplate.ContainerSpec: "), "{m}");
    }

    #[test]
    fn insert_defaults_fills_swarms_defaults_only_in_the_output() {
        let s =
            service_spec_from_docker(&serde_json::from_str(CLI_CREATE).expect("json")).expect("ok");
        let out = service_spec_to_docker(&s, true);
        let t = &out["TaskTemplate"];
        assert_eq!(
            t["ContainerSpec"]["StopGracePeriod"],
            json!(10_000_000_000i64)
        );
        assert_eq!(
            t["RestartPolicy"],
            json!({"Condition": "any", "Delay": 5_000_000_000i64, "MaxAttempts": 0})
        );
        for key in ["UpdateConfig", "RollbackConfig"] {
            assert_eq!(
                out[key],
                json!({"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000i64,
                       "MaxFailureRatio": 0.0, "Order": "stop-first"}),
                "{key}"
            );
        }
        assert_eq!(out["EndpointSpec"]["Mode"], json!("vip"));
        assert!(t["Resources"].is_object() && t["Placement"].is_object());
        let plain = service_spec_to_docker(&s, false);
        assert!(plain.get("UpdateConfig").is_none());
        assert!(plain["TaskTemplate"].get("RestartPolicy").is_none());
        assert!(plain["TaskTemplate"]["ContainerSpec"]
            .get("StopGracePeriod")
            .is_none());
    }

    #[test]
    fn an_empty_spec_still_has_a_container_spec_and_a_mode() {
        let out = service_spec_to_docker(&ServiceSpec::default(), false);
        assert!(out["TaskTemplate"]["ContainerSpec"].is_object());
        assert!(out["Mode"]["Replicated"].is_object());
        let global = ServiceSpec {
            mode: ServiceMode::ModeGlobal as i32,
            ..Default::default()
        };
        assert_eq!(
            service_spec_to_docker(&global, false)["Mode"],
            json!({"Global": {}})
        );
    }

    #[test]
    fn shoal_only_fields_survive_a_docker_update() {
        let mut stored = service_spec_from_docker(&rich()).expect("ok");
        if let Some(c) = stored.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.privileged = true;
            c.insecure_registries = vec!["reg:5000".into()];
        }
        let mut sent =
            service_spec_from_docker(&service_spec_to_docker(&stored, false)).expect("ok");
        keep_shoal_only_fields(&stored, &mut sent);
        assert_eq!(sent, stored);
    }

    #[test]
    fn an_unchanged_task_template_keeps_its_stored_form() {
        // As shoalctl may store it: empty sub-objects where docker would have none, a
        // Shoal-only field, and registry credentials the control API never shows.
        let mut stored =
            service_spec_from_docker(&serde_json::from_str(CLI_CREATE).expect("json")).expect("ok");
        if let Some(t) = stored.task.as_mut() {
            t.log_driver = Some(Driver::default());
            t.placement = None;
            if let Some(c) = t.container.as_mut() {
                c.privileged = true;
                c.healthcheck = Some(HealthConfig::default());
            }
        }
        stored.update = Some(UpdateConfig::default());
        // `docker service scale s1=5`: GET, change the replicas, POST the whole spec back.
        let mut body = service_spec_to_docker(&stored, false);
        body["Mode"]["Replicated"]["Replicas"] = json!(5);
        let mut sent = service_spec_from_docker(&body).expect("ok");
        settle_update(&stored, &mut sent);
        assert_eq!(sent.task, stored.task);
        assert_eq!(sent.update, stored.update);
        assert_eq!(sent.replicas, 5);
        // A real change of the template is kept.
        body["TaskTemplate"]["ContainerSpec"]["Image"] = json!("nginx:1.27");
        let mut sent = service_spec_from_docker(&body).expect("ok");
        settle_update(&stored, &mut sent);
        let c = sent.task.and_then(|t| t.container).expect("container");
        assert_eq!(c.image, "nginx:1.27");
        assert!(c.privileged);
    }

    #[test]
    fn the_nulls_and_zeros_a_newer_cli_sends_are_accepted_as_unset() {
        let body = json!({
            "Name": "s2", "Labels": null,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "nginx:alpine@sha256:0123", "Labels": null, "Command": null,
                    "Args": null, "Env": null, "Init": false, "StopGracePeriod": null,
                    "Privileges": {"CredentialSpec": null, "SELinuxContext": null},
                    "Healthcheck": null, "Mounts": null, "Hosts": null, "DNSConfig": {},
                    "Isolation": "default", "TTY": false, "OpenStdin": false,
                    "OomScoreAdj": 0, "CapabilityAdd": null, "Sysctls": null, "Ulimits": null
                },
                "Resources": {"Limits": {}, "Reservations": {}},
                "Placement": {"Platforms": [{"Architecture": "amd64", "OS": "linux"},
                                            {"Architecture": "arm64", "OS": "linux"}]},
                "Networks": null, "LogDriver": null, "ForceUpdate": 0, "Runtime": ""
            },
            "Mode": {"Replicated": {"Replicas": null}},
            "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000i64,
                             "MaxFailureRatio": 0, "Order": "stop-first"},
            "EndpointSpec": {"Mode": "vip"}
        });
        let s = round_trip(&body);
        assert_eq!(s.replicas, 1);
        let t = s.task.expect("task");
        assert_eq!(t.log_driver, None);
        let c = t.container.expect("container");
        assert_eq!(c.healthcheck, None);
        assert_eq!(c.stop_grace_period_ns, 0);
    }
}

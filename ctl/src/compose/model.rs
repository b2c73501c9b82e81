//! The compose model as swarm stack files use it: serde types that accept every short and long
//! form the Compose Specification allows, and serialise back deterministically (`stack config`).
//!
//! Interpolation runs before these types see the file, so every number and boolean may arrive
//! as a string ("${REPLICAS:-2}"); the `Flex*` types accept both, as compose casts after
//! interpolating.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A whole (merged) compose file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ComposeFile {
    /// Optional and ignored, kept for `stack config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Scalar>,
    pub services: BTreeMap<String, Service>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Option<NetworkDef>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Option<VolumeDef>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileObjectDef>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileObjectDef>,
}

/// One service.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Service {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Command>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<MapOrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_file: Option<StringOrList>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<ServiceNetworks>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<StringOrList>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<MapOrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<Scalar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<MapOrList>,
    /// `extra_hosts`: `["NAME:IP", "NAME=IP"]` or `{NAME: IP}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_hosts: Option<MapOrList>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, UlimitDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<FlexBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<FlexBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<FlexBool>,
    /// The legacy restart policy; `deploy.restart_policy` wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<DependsOn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
}

/// A string scalar that may have been written as a number or a boolean.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scalar(pub String);

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Declares a number-or-string type that serialises as the number.
macro_rules! flex_number {
    ($name:ident, $ty:ty, $what:literal) => {
        #[doc = concat!("A ", $what, " written as a number or as a string (after interpolation).")]
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
        pub struct $name(pub $ty);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = Scalar::deserialize(d)?;
                s.0.trim()
                    .parse::<$ty>()
                    .map($name)
                    .map_err(|_| de::Error::custom(format!("{:?} is not {}", s.0, $what)))
            }
        }
    };
}

flex_number!(FlexU64, u64, "a non-negative integer");
flex_number!(FlexI64, i64, "an integer");
flex_number!(FlexF64, f64, "a number");

/// A boolean written as `true`/`false` or as a string ("true", "yes", "1"...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlexBool(pub bool);

impl Serialize for FlexBool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(self.0)
    }
}

impl<'de> Deserialize<'de> for FlexBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Scalar::deserialize(d)?;
        match s.0.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "1" => Ok(FlexBool(true)),
            "false" | "no" | "n" | "off" | "0" => Ok(FlexBool(false)),
            _ => Err(de::Error::custom(format!("{:?} is not a boolean", s.0))),
        }
    }
}

/// `command`/`entrypoint`: a string (split like a shell) or a list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Command {
    /// "python app.py --port 80"
    Shell(String),
    /// ["python", "app.py"]
    List(Vec<Scalar>),
}

/// A string or a list of strings (`env_file`, `tmpfs`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One item.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl StringOrList {
    /// The items, in order.
    pub fn items(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// `environment`, `labels`, `sysctls`: a map (values may be null) or a `K=V` list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum MapOrList {
    /// `K: V`; a null value means "take it from the environment" (environment only).
    Map(BTreeMap<String, Option<Scalar>>),
    /// `- K=V` or `- K`.
    List(Vec<String>),
}

impl MapOrList {
    /// The entries as (key, value) pairs; `K` alone and null values give `None`.
    pub fn entries(&self) -> Vec<(String, Option<String>)> {
        match self {
            MapOrList::Map(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|s| s.0.clone())))
                .collect(),
            MapOrList::List(l) => l
                .iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (e.clone(), None),
                })
                .collect(),
        }
    }
}

/// One `ports` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortEntry {
    /// `"8080:80/udp"`, `80`.
    Short(Scalar),
    /// `{target, published, protocol, mode}`.
    Long(PortLong),
}

/// The long form of a port.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct PortLong {
    pub target: Option<FlexU64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A service's `networks`: a list of names or a map with per-network settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ServiceNetworks {
    /// `- front`
    List(Vec<String>),
    /// `front: {aliases: [...]}` or `front:` (null).
    Map(BTreeMap<String, Option<ServiceNetwork>>),
}

impl ServiceNetworks {
    /// (network key, extra aliases), sorted by key.
    pub fn entries(&self) -> Vec<(String, Vec<String>)> {
        match self {
            ServiceNetworks::List(l) => {
                let mut v: Vec<_> = l.iter().map(|n| (n.clone(), Vec::new())).collect();
                v.sort();
                v.dedup();
                v
            }
            ServiceNetworks::Map(m) => m
                .iter()
                .map(|(k, v)| {
                    let aliases = v.as_ref().map(|n| n.aliases.clone()).unwrap_or_default();
                    (k.clone(), aliases)
                })
                .collect(),
        }
    }
}

/// One network of a service in the map form.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ServiceNetwork {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

/// One `volumes` entry of a service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum VolumeEntry {
    /// `data:/var/lib/x:ro`, `./conf:/etc/x`, `/cache`.
    Short(String),
    /// `{type, source, target, read_only, bind, volume, tmpfs}`.
    Long(VolumeLong),
}

/// The long form of a service volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct VolumeLong {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<FlexBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptsDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsDef>,
}

/// `bind:` options of a volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BindDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
}

/// `volume:` options of a volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct VolumeOptsDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nocopy: Option<FlexBool>,
}

/// `tmpfs:` options of a volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TmpfsDef {
    /// Bytes as a number, or "64m".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<Scalar>,
    /// Octal as a string ("1777") or a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Scalar>,
}

/// A service's secret or config reference.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum FileRef {
    /// `- db_password`
    Short(String),
    /// `{source, target, uid, gid, mode}`
    Long(FileRefLong),
}

/// The long form of a secret or config reference.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct FileRefLong {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<Scalar>,
    /// `0440` (a string to YAML 1.2, read as octal), `288`, or "0440".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Scalar>,
}

impl FileRef {
    /// The long form, whatever was written.
    pub fn long(&self) -> FileRefLong {
        match self {
            FileRef::Short(s) => FileRefLong {
                source: s.clone(),
                ..Default::default()
            },
            FileRef::Long(l) => l.clone(),
        }
    }
}

/// `healthcheck:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Healthcheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<Command>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<FlexU64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable: Option<FlexBool>,
}

/// One `ulimits` entry: `nofile: 1024` or `{soft, hard}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum UlimitDef {
    /// Soft and hard the same.
    Single(FlexI64),
    /// Separate limits.
    Pair {
        /// The soft limit.
        soft: FlexI64,
        /// The hard limit.
        hard: FlexI64,
    },
}

/// `logging:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Logging {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, Scalar>,
}

/// `depends_on`: a list of services or a map with conditions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DependsOn {
    /// `- db`
    List(Vec<String>),
    /// `db: {condition: service_healthy}`
    Map(BTreeMap<String, DependsOnLong>),
}

/// The long form of one dependency.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DependsOnLong {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<FlexBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<FlexBool>,
}

impl DependsOn {
    /// (service, condition), sorted by service.
    pub fn entries(&self) -> Vec<(String, String)> {
        let started = "service_started".to_string();
        let mut v: Vec<_> = match self {
            DependsOn::List(l) => l.iter().map(|s| (s.clone(), started.clone())).collect(),
            DependsOn::Map(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.condition.clone().unwrap_or(started.clone())))
                .collect(),
        };
        v.sort();
        v.dedup();
        v
    }
}

/// `deploy:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Deploy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<FlexU64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<MapOrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<DeployResources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartDef>,
}

/// `deploy.resources`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DeployResources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<ResourceDef>,
}

/// Limits or reservations.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ResourceDef {
    /// "0.5" or 0.5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Scalar>,
    /// "512M" or a byte count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<FlexI64>,
}

/// `deploy.placement`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct PlacementDef {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PreferenceDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<FlexU64>,
}

/// `- spread: node.labels.zone`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct PreferenceDef {
    pub spread: String,
}

/// `update_config` / `rollback_config`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct UpdateDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<FlexU64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<FlexF64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// `deploy.restart_policy`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RestartDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<FlexU64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// `external: true` or the legacy `external: {name: x}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum External {
    /// `external: true`
    Flag(FlexBool),
    /// `external: {name: real}`
    Named {
        /// The object's real name.
        name: String,
    },
}

/// A top-level network.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct NetworkDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, Option<Scalar>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachable: Option<FlexBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal: Option<FlexBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<MapOrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamDef>,
}

/// `ipam:` of a network.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct IpamDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamConfig>,
}

/// One `ipam.config` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct IpamConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A top-level volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct VolumeDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<MapOrList>,
}

/// A top-level secret or config.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct FileObjectDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Read relative to the project directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The name of an environment variable holding the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Inline content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<MapOrList>,
}

/// Whether an object is external, and under which name when it says so.
pub fn external_name(external: Option<&External>, name: Option<&str>, key: &str) -> Option<String> {
    match external {
        Some(External::Flag(FlexBool(true))) => Some(name.unwrap_or(key).to_string()),
        Some(External::Named { name: real }) => Some(real.clone()),
        _ => None,
    }
}

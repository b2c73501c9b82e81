//! `shoalctl secret|config create|ls|inspect|rm`: both are named immutable data and print the
//! same way (configs show their data in `inspect`, secrets never).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use shoal_proto::v1::{
    Config, ConfigSpec, CreateConfigRequest, CreateSecretRequest, GetConfigRequest,
    GetSecretRequest, ListConfigsRequest, ListSecretsRequest, RemoveConfigRequest,
    RemoveSecretRequest, Secret, SecretSpec, UpdateConfigRequest, UpdateSecretRequest,
};

use crate::cli::{DataCreateArgs, DataInspectArgs, DataLsArgs, DataRmArgs, Format};
use crate::client::{status, Control};
use crate::output::{self, json as js, table::Table};

// The manager refuses larger data with the same message.
use shoal_proto::limits::{CONFIG_MAX_BYTES, SECRET_MAX_BYTES};

/// Which of the two kinds of named data a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `secret ...`
    Secret,
    /// `config ...`
    Config,
}

impl Kind {
    /// "secret" | "config".
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }

    /// The size limit of the data.
    pub fn max_bytes(self) -> usize {
        match self {
            Kind::Secret => SECRET_MAX_BYTES,
            Kind::Config => CONFIG_MAX_BYTES,
        }
    }
}

/// A secret or config as both print.
#[derive(Debug, Clone, PartialEq)]
pub struct DataObject {
    /// Its ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Raft index of its last write.
    pub version: u64,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// Unix nanoseconds.
    pub updated_at: i64,
    /// The data (configs only; the manager never returns a secret's).
    pub data: Option<Vec<u8>>,
}

impl From<Secret> for DataObject {
    fn from(s: Secret) -> Self {
        let meta = s.meta.unwrap_or_default();
        let spec = s.spec.unwrap_or_default();
        DataObject {
            id: s.id,
            name: spec.name,
            labels: spec.labels,
            version: meta.version,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            data: None,
        }
    }
}

impl From<Config> for DataObject {
    fn from(c: Config) -> Self {
        let meta = c.meta.unwrap_or_default();
        let spec = c.spec.unwrap_or_default();
        DataObject {
            id: c.id,
            name: spec.name,
            labels: spec.labels,
            version: meta.version,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            data: Some(spec.data),
        }
    }
}

impl DataObject {
    /// The `inspect` document (docker's shape).
    pub fn inspect_json(&self) -> Value {
        let mut spec = json!({"Name": self.name, "Labels": self.labels});
        if let Some(data) = &self.data {
            spec["Data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
        }
        json!({
            "ID": self.id,
            "Version": {"Index": self.version},
            "CreatedAt": output::rfc3339(self.created_at),
            "UpdatedAt": output::rfc3339(self.updated_at),
            "Spec": spec,
        })
    }

    /// The `ls` row: ID, NAME, CREATED, UPDATED ("5 minutes ago").
    pub fn cells(&self, now_ns: i64) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            ago(self.created_at, now_ns),
            ago(self.updated_at, now_ns),
        ]
    }

    /// The `ls --format json` line (docker's field names).
    pub fn ls_json(&self, now_ns: i64) -> Value {
        let mut labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        json!({"ID": self.id, "Name": self.name, "Driver": "", "CreatedAt": ago(self.created_at, now_ns),
               "UpdatedAt": ago(self.updated_at, now_ns), "Labels": labels.join(",")})
    }
}

fn ago(ns: i64, now_ns: i64) -> String {
    if ns <= 0 {
        return String::new();
    }
    format!("{} ago", output::human_duration(now_ns - ns))
}

/// Refuses empty data and data over the kind's limit before anything is sent, with the words
/// of the manager's check (`shoal_proto::spec::validate_data` on the secrets branch).
pub fn check_size(kind: Kind, len: usize) -> Result<()> {
    let noun = kind.noun();
    if len == 0 {
        return Err(anyhow!("{noun} data must not be empty"));
    }
    let max = kind.max_bytes();
    if len > max {
        return Err(anyhow!(
            "{noun} data is {} KiB: {noun}s are limited to {} KiB",
            len.div_ceil(1024),
            max / 1024
        ));
    }
    Ok(())
}

/// Reads a file, or standard input for "-"; a file over the limit is refused by its size
/// without being read.
pub fn read_data(kind: Kind, file: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    if file.as_os_str() == "-" {
        // Far above any limit, so the message still says how large the input was.
        let cap = kind.max_bytes() as u64 * 16;
        std::io::stdin()
            .lock()
            .take(cap)
            .read_to_end(&mut data)
            .context("cannot read standard input")?;
    } else {
        let mut f =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("cannot read {}", file.display()))?
            .len();
        check_size(kind, usize::try_from(len).unwrap_or(usize::MAX).max(1))?;
        f.read_to_end(&mut data)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    check_size(kind, data.len())?;
    Ok(data)
}

/// Creates a secret or config; returns its ID.
pub async fn create_data(
    c: &mut Control,
    kind: Kind,
    name: &str,
    labels: HashMap<String, String>,
    data: Vec<u8>,
) -> Result<String> {
    check_size(kind, data.len())?;
    let id = match kind {
        Kind::Secret => c
            .create_secret(CreateSecretRequest {
                spec: Some(SecretSpec {
                    name: name.to_string(),
                    labels,
                    data,
                }),
            })
            .await
            .map_err(status)?
            .into_inner()
            .secret
            .map(|s| s.id),
        Kind::Config => c
            .create_config(CreateConfigRequest {
                spec: Some(ConfigSpec {
                    name: name.to_string(),
                    labels,
                    data,
                }),
            })
            .await
            .map_err(status)?
            .into_inner()
            .config
            .map(|s| s.id),
    };
    id.ok_or_else(|| anyhow!("the manager answered without the created {}", kind.noun()))
}

/// Sends the spec a stack wants for a secret or config that exists: its labels change, and the
/// manager refuses other data (`Ok(false)`), since the data are immutable.
pub async fn update_data(
    c: &mut Control,
    kind: Kind,
    name: &str,
    labels: HashMap<String, String>,
    data: Vec<u8>,
) -> Result<bool> {
    let name_or_id = name.to_string();
    let name = name.to_string();
    let sent = match kind {
        Kind::Secret => c
            .update_secret(UpdateSecretRequest {
                name_or_id,
                spec: Some(SecretSpec { name, labels, data }),
                version: 0,
            })
            .await
            .map(|_| ()),
        Kind::Config => c
            .update_config(UpdateConfigRequest {
                name_or_id,
                spec: Some(ConfigSpec { name, labels, data }),
                version: 0,
            })
            .await
            .map(|_| ()),
    };
    match sent {
        Ok(()) => Ok(true),
        Err(e) if e.code() == tonic::Code::InvalidArgument && e.message().contains("immutable") => {
            Ok(false)
        }
        Err(e) => Err(status(e)),
    }
}

/// `secret create` / `config create`: prints the new ID. `data` is the file's content when the
/// caller read it already.
pub async fn create(
    c: &mut Control,
    kind: Kind,
    a: &DataCreateArgs,
    data: Option<Vec<u8>>,
) -> Result<()> {
    let data = match data {
        Some(d) => d,
        None => read_data(kind, &a.file)?,
    };
    let id = create_data(c, kind, &a.name, a.label.iter().cloned().collect(), data).await?;
    output::print(&format!("{id}\n"))?;
    Ok(())
}

/// Every secret or config, by name.
pub async fn list(c: &mut Control, kind: Kind) -> Result<Vec<DataObject>> {
    let mut all: Vec<DataObject> = match kind {
        Kind::Secret => c
            .list_secrets(ListSecretsRequest {})
            .await
            .map_err(status)?
            .into_inner()
            .secrets
            .into_iter()
            .map(DataObject::from)
            .collect(),
        Kind::Config => c
            .list_configs(ListConfigsRequest {})
            .await
            .map_err(status)?
            .into_inner()
            .configs
            .into_iter()
            .map(DataObject::from)
            .collect(),
    };
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// `secret ls` / `config ls`.
pub async fn ls(c: &mut Control, kind: Kind, a: &DataLsArgs, format: Format) -> Result<()> {
    let all = list(c, kind).await?;
    let now = shoal_proto::now_ns();
    let mut out = String::new();
    if a.quiet {
        all.iter()
            .for_each(|o| out.push_str(&format!("{}\n", o.id)));
        return Ok(output::print(&out)?);
    }
    match format {
        Format::Json => all
            .iter()
            .for_each(|o| out.push_str(&js::line(&o.ls_json(now)))),
        Format::Table => {
            let mut t = Table::new(&["ID", "NAME", "CREATED", "UPDATED"]);
            all.iter().for_each(|o| t.row(o.cells(now)));
            out = t.render();
        }
    }
    Ok(output::print(&out)?)
}

/// Reads one secret or config by name or ID.
pub async fn get(c: &mut Control, kind: Kind, name: &str) -> Result<DataObject> {
    let found = match kind {
        Kind::Secret => c
            .get_secret(GetSecretRequest {
                name_or_id: name.to_string(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .secret
            .map(DataObject::from),
        Kind::Config => c
            .get_config(GetConfigRequest {
                name_or_id: name.to_string(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .config
            .map(DataObject::from),
    };
    found.ok_or_else(|| anyhow!("no such {}: {name}", kind.noun()))
}

/// `secret inspect` / `config inspect`: a JSON array of those found; an error names the others.
pub async fn inspect(c: &mut Control, kind: Kind, a: &DataInspectArgs) -> Result<()> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in &a.names {
        match get(c, kind, name).await {
            Ok(o) => docs.push(o.inspect_json()),
            Err(e) => errors.push(crate::error_chain(&e)),
        }
    }
    output::print(&js::pretty_array(docs))?;
    super::fail_if_any(errors)
}

/// Removes one secret or config by name or ID.
pub async fn remove(c: &mut Control, kind: Kind, name: &str) -> Result<()> {
    let name_or_id = name.to_string();
    match kind {
        Kind::Secret => c
            .remove_secret(RemoveSecretRequest { name_or_id })
            .await
            .map(|_| ()),
        Kind::Config => c
            .remove_config(RemoveConfigRequest { name_or_id })
            .await
            .map(|_| ()),
    }
    .map_err(status)
}

/// `secret rm` / `config rm`: removes each, printing its name; keeps going past failures (the
/// manager's refusal names the services using it).
pub async fn rm(c: &mut Control, kind: Kind, a: &DataRmArgs) -> Result<()> {
    super::remove_each(&a.names, async |name| {
        remove(c, kind, name)
            .await
            .map_err(|e| crate::error_chain(&e))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::Meta;

    #[test]
    fn size_limits_name_the_limit() {
        assert!(check_size(Kind::Secret, 10).is_ok());
        assert!(check_size(Kind::Secret, SECRET_MAX_BYTES).is_ok());
        let e = check_size(Kind::Secret, 600 * 1024)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "secret data is 600 KiB: secrets are limited to 500 KiB");
        let e = check_size(Kind::Config, CONFIG_MAX_BYTES + 1)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config data is 1001 KiB: configs are limited to 1000 KiB"
        );
        let e = check_size(Kind::Config, 0).unwrap_err().to_string();
        assert_eq!(e, "config data must not be empty");
    }

    #[test]
    fn inspect_shows_config_data_but_never_secret_data() {
        let meta = Some(Meta {
            version: 7,
            created_at: 1_500_000_000_000_000_000,
            updated_at: 1_500_000_000_000_000_000,
        });
        let secret = DataObject::from(Secret {
            id: "s1".into(),
            meta,
            spec: Some(SecretSpec {
                name: "pw".into(),
                labels: HashMap::new(),
                data: b"hunter2".to_vec(),
            }),
        });
        let doc = secret.inspect_json();
        assert_eq!(doc["Spec"]["Name"], "pw");
        assert_eq!(doc["Version"]["Index"], 7);
        assert!(doc["Spec"].get("Data").is_none());
        assert!(!doc.to_string().contains("hunter2"));
        let config = DataObject::from(Config {
            id: "c1".into(),
            meta,
            spec: Some(ConfigSpec {
                name: "conf".into(),
                labels: HashMap::new(),
                data: b"hello".to_vec(),
            }),
        });
        assert_eq!(config.inspect_json()["Spec"]["Data"], "aGVsbG8=");
        let now = 1_500_000_000_000_000_000 + 300 * 1_000_000_000;
        assert_eq!(
            config.cells(now),
            vec!["c1", "conf", "5 minutes ago", "5 minutes ago"]
        );
        assert_eq!(config.ls_json(now)["CreatedAt"], "5 minutes ago");
    }
}

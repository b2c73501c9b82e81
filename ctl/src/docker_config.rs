//! Registry credentials where docker keeps them: `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json` (`auths`, `credsStore`, `credHelpers`), read by
//! `--with-registry-auth` and written by `login`/`logout`.
//!
//! The file is kept as a JSON document so keys shoalctl does not know (`proxies`, `plugins`,
//! ...) survive a `login`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Map, Value};
use shoal_proto::v1::RegistryAuth;

/// Docker Hub's key in `auths`, as docker writes it.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Docker Hub's registry name as Shoal spells it (`RegistryAuth.server`).
pub use shoal_proto::registry::DOCKER_HUB;

/// What can go wrong with docker's config file.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    /// Neither DOCKER_CONFIG nor HOME is set.
    #[error("cannot find docker's config.json: neither DOCKER_CONFIG nor HOME is set")]
    NoHome,
    /// The file exists but cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON (or not an object).
    #[error("{path} is not a docker config file: {reason}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// An `auth` entry is not base64 of "user:password".
    #[error("{path}: the credentials of {registry} are not base64 \"user:password\"")]
    BadAuth {
        /// The config file.
        path: PathBuf,
        /// The `auths` key.
        registry: String,
    },
    /// The file cannot be written.
    #[error("cannot write {path}")]
    Write {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper {
        /// The helper's suffix ("pass", "secretservice").
        helper: String,
        /// The registry asked for.
        registry: String,
        /// Its output or exit status.
        reason: String,
    },
}

/// Where docker's config file is: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn config_path() -> Result<PathBuf, DockerConfigError> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
        .ok_or(DockerConfigError::NoHome)
}

/// The registry an image is pulled from, as docker normalises it: "docker.io" for
/// `redis:alpine` and `user/app`, else the first path component (`127.0.0.1:5000/demo:1`).
pub fn registry_of_image(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            normalize_registry(first)
        }
        _ => DOCKER_HUB.to_string(),
    }
}

/// One registry name for any of docker's spellings of it: `https://index.docker.io/v1/`,
/// `index.docker.io`, `registry-1.docker.io` and `docker.io` are all "docker.io";
/// `https://host:5000/v2/` is "host:5000" (the agent names registries the same way).
pub use shoal_proto::registry::normalize_server as normalize_registry;

/// The key `login` writes for a registry: docker's Hub URL, else HOST[:PORT].
pub fn auths_key(registry: &str) -> String {
    match normalize_registry(registry) {
        r if r == DOCKER_HUB => DOCKER_HUB_KEY.to_string(),
        r => r,
    }
}

/// Docker's config file, read as a JSON document.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// Reads the file at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, DockerConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(DockerConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(path, &text)
    }

    /// Parses the text of a config file (empty text: an empty config).
    pub fn parse(path: &Path, text: &str) -> Result<Self, DockerConfigError> {
        let doc = if text.trim().is_empty() {
            Map::new()
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(DockerConfigError::Parse {
                        path: path.to_path_buf(),
                        reason: "not a JSON object".into(),
                    })
                }
                Err(e) => {
                    return Err(DockerConfigError::Parse {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })
                }
            }
        };
        Ok(DockerConfig {
            path: path.to_path_buf(),
            doc,
        })
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.doc.get("auths").and_then(Value::as_object)
    }

    /// The credential helper for a registry: `credHelpers[registry]`, else `credsStore`.
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let wanted = normalize_registry(registry);
        let per_registry = self
            .doc
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| normalize_registry(k) == wanted)
                    .and_then(|(_, v)| v.as_str())
            });
        per_registry
            .or_else(|| self.doc.get("credsStore").and_then(Value::as_str))
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    }

    /// The `auths` entry of a registry, whichever of docker's key forms it is stored under.
    pub fn stored_auth(&self, registry: &str) -> Result<Option<RegistryAuth>, DockerConfigError> {
        let wanted = normalize_registry(registry);
        let Some((key, entry)) = self
            .auths()
            .and_then(|m| m.iter().find(|(k, _)| normalize_registry(k) == wanted))
        else {
            return Ok(None);
        };
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut auth = RegistryAuth {
            server: wanted.clone(),
            username: field("username"),
            password: field("password"),
            identity_token: field("identitytoken"),
            registry_token: field("registrytoken"),
        };
        let encoded = field("auth");
        if !encoded.is_empty() {
            let bad = || DockerConfigError::BadAuth {
                path: self.path.clone(),
                registry: key.clone(),
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(bytes).map_err(|_| bad())?;
            let (user, pass) = text.split_once(':').ok_or_else(bad)?;
            auth.username = user.to_string();
            auth.password = pass.to_string();
        }
        if auth.username.is_empty()
            && auth.password.is_empty()
            && auth.identity_token.is_empty()
            && auth.registry_token.is_empty()
        {
            // docker leaves `{}` behind when the credentials live in a helper.
            return Ok(None);
        }
        Ok(Some(auth))
    }

    /// Stores credentials for a registry under docker's key, replacing any entry of the same
    /// registry under another spelling.
    pub fn set_auth(&mut self, registry: &str, username: &str, password: &str) {
        let wanted = normalize_registry(registry);
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(m) = auths {
            m.retain(|k, _| normalize_registry(k) != wanted);
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut entry = Map::new();
            entry.insert("auth".into(), Value::String(encoded));
            m.insert(auths_key(registry), Value::Object(entry));
        }
    }

    /// Forgets a registry's credentials; false when there were none.
    pub fn remove_auth(&mut self, registry: &str) -> bool {
        let wanted = normalize_registry(registry);
        match self.doc.get_mut("auths") {
            Some(Value::Object(m)) => {
                let before = m.len();
                m.retain(|k, _| normalize_registry(k) != wanted);
                m.len() != before
            }
            _ => false,
        }
    }

    /// Writes the file back with mode 0600 (its directory 0700 when made), atomically.
    pub fn save(&self) -> Result<(), DockerConfigError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let err = |source| DockerConfigError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        let text = serde_json::to_string_pretty(&Value::Object(self.doc.clone()))
            .map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(err)
    }
}

/// The answer of `docker-credential-HELPER get`.
#[derive(Debug, serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Asks `docker-credential-HELPER get` for a registry's credentials; `Ok(None)` when the helper
/// is not installed or has none.
fn from_helper(helper: &str, registry: &str) -> Result<Option<RegistryAuth>, DockerConfigError> {
    let program = format!("docker-credential-{helper}");
    let server = auths_key(registry);
    let fail = |reason: String| DockerConfigError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    };
    let child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "WARNING: docker's config names the credential helper {program}, which is not \
                 installed; using the credentials in config.json, if any"
            );
            return Ok(None);
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // The helpers' own wording for "nothing stored".
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("{}: {text}", out.status)));
    }
    let answer: HelperAnswer =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    let mut auth = RegistryAuth {
        server: normalize_registry(registry),
        ..Default::default()
    };
    if answer.username == "<token>" {
        auth.identity_token = answer.secret;
    } else {
        auth.username = answer.username;
        auth.password = answer.secret;
    }
    Ok(Some(auth))
}

/// The credentials for a registry: its credential helper's, else the `auths` entry.
pub fn registry_auth(
    cfg: &DockerConfig,
    registry: &str,
) -> Result<Option<RegistryAuth>, DockerConfigError> {
    if let Some(helper) = cfg.helper_for(registry) {
        if let Some(auth) = from_helper(&helper, registry)? {
            return Ok(Some(auth));
        }
    }
    cfg.stored_auth(registry)
}

/// The credentials stored for the registry `image` is pulled from, if any.
pub fn registry_auth_for(image: &str) -> Result<Option<RegistryAuth>, DockerConfigError> {
    let cfg = DockerConfig::load(&config_path()?)?;
    registry_auth(&cfg, &registry_of_image(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> DockerConfig {
        DockerConfig::parse(Path::new("/x/config.json"), text).unwrap()
    }

    #[test]
    fn image_registries() {
        assert_eq!(registry_of_image("redis:alpine"), "docker.io");
        assert_eq!(registry_of_image("library/redis"), "docker.io");
        assert_eq!(registry_of_image("user/app:1"), "docker.io");
        assert_eq!(registry_of_image("docker.io/library/redis"), "docker.io");
        assert_eq!(registry_of_image("127.0.0.1:5000/demo:1"), "127.0.0.1:5000");
        assert_eq!(registry_of_image("localhost/demo"), "localhost");
        assert_eq!(
            registry_of_image("Reg.Example.com/a/b@sha256:00"),
            "reg.example.com"
        );
    }

    #[test]
    fn keys_in_every_docker_form() {
        for k in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
        ] {
            assert_eq!(normalize_registry(k), "docker.io", "{k}");
        }
        assert_eq!(normalize_registry("https://reg:5000/v2/"), "reg:5000");
        assert_eq!(normalize_registry("http://reg:5000"), "reg:5000");
        assert_eq!(auths_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(auths_key("http://reg:5000"), "reg:5000");
    }

    #[test]
    fn reads_auth_username_password_and_tokens() {
        let c = cfg(r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dTE6cDE="},
            "https://reg:5000": {"username": "u2", "password": "p2"},
            "tok.example.com": {"identitytoken": "refresh"},
            "helper.example.com": {}
        }, "proxies": {"default": {}}}"#);
        let hub = c.stored_auth("docker.io").unwrap().unwrap();
        assert_eq!(
            (
                hub.server.as_str(),
                hub.username.as_str(),
                hub.password.as_str()
            ),
            ("docker.io", "u1", "p1")
        );
        let r = c.stored_auth("reg:5000").unwrap().unwrap();
        assert_eq!((r.username.as_str(), r.password.as_str()), ("u2", "p2"));
        assert_eq!(
            c.stored_auth("tok.example.com")
                .unwrap()
                .unwrap()
                .identity_token,
            "refresh"
        );
        assert!(c.stored_auth("helper.example.com").unwrap().is_none());
        assert!(c.stored_auth("other:1").unwrap().is_none());
        let bad = cfg(r#"{"auths": {"r:1": {"auth": "!!!"}}}"#);
        assert!(matches!(
            bad.stored_auth("r:1"),
            Err(DockerConfigError::BadAuth { .. })
        ));
    }

    #[test]
    fn helpers_per_registry_then_store() {
        let c = cfg(r#"{"credsStore": "pass", "credHelpers": {"gcr.io": "gcloud"}}"#);
        assert_eq!(c.helper_for("gcr.io").as_deref(), Some("gcloud"));
        assert_eq!(c.helper_for("docker.io").as_deref(), Some("pass"));
        assert_eq!(cfg("{}").helper_for("docker.io"), None);
    }

    #[test]
    fn login_and_logout_keep_other_keys_and_write_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shoalctl-dockercfg-{}", std::process::id()));
        let path = dir.join("sub").join("config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths": {"index.docker.io": {"auth": "b2xkOm9sZA=="}, "keep:1": {"auth": "azpr"}}, "psFormat": "x"}"#,
        )
        .unwrap();
        let mut c = DockerConfig::load(&path).unwrap();
        c.set_auth("docker.io", "me", "secret:with:colons");
        c.save().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = DockerConfig::load(&path).unwrap();
        let hub = back.stored_auth("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("me", "secret:with:colons")
        );
        assert_eq!(back.doc["psFormat"], "x");
        assert!(back.doc["auths"].get("index.docker.io").is_none());
        assert!(back.doc["auths"].get(DOCKER_HUB_KEY).is_some());
        assert!(back.stored_auth("keep:1").unwrap().is_some());
        let mut back = back;
        assert!(back.remove_auth("https://index.docker.io/v1/"));
        assert!(!back.remove_auth("docker.io"));
        back.save().unwrap();
        assert!(DockerConfig::load(&path)
            .unwrap()
            .stored_auth("docker.io")
            .unwrap()
            .is_none());
        let _ = std::fs::remove_dir_all(&dir);
        // A missing file is an empty config.
        assert!(DockerConfig::load(&dir.join("none.json"))
            .unwrap()
            .stored_auth("docker.io")
            .unwrap()
            .is_none());
    }
}

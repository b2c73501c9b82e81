//! `shoalctl login|logout`: registry credentials checked against the registry's `/v2/` (basic
//! or Docker's bearer-token flow) and kept in docker's config.json.

use std::io::{BufRead, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::StatusCode;

use crate::cli::{LoginArgs, LogoutArgs};
use shoal_proto::registry::{is_loopback, parse_challenge, Challenge};

use crate::docker_config::{self, DockerConfig, DOCKER_HUB};
use crate::output;

/// Where Docker Hub's registry API answers (its `auths` key is the index URL).
const DOCKER_HUB_API: &str = "https://registry-1.docker.io";

/// How long one request to a registry may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where docker keeps a registry's extra CA certificates (`ca.crt`); shoalctl reads them too.
const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";

/// The base URLs to try for a registry, in order: Docker Hub's API host; `http://` as given;
/// https, then plain http for a loopback registry (as docker treats one as insecure); else
/// https only.
pub fn registry_endpoints(registry: &str) -> Vec<String> {
    let r = registry.trim().trim_end_matches('/');
    if docker_config::normalize_registry(r) == DOCKER_HUB {
        return vec![DOCKER_HUB_API.to_string()];
    }
    if let Some(host) = r.strip_prefix("http://") {
        return vec![format!("http://{}", host.split('/').next().unwrap_or(host))];
    }
    let host = docker_config::normalize_registry(r);
    if r.starts_with("https://") || !is_loopback(&host) {
        return vec![format!("https://{host}")];
    }
    vec![format!("https://{host}"), format!("http://{host}")]
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The registry said no to the credentials.
    #[error("unauthorized: incorrect username or password for {registry}")]
    Unauthorized {
        /// The registry.
        registry: String,
    },
    /// No endpoint answered.
    #[error("cannot reach the registry at {url}: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// An answer shoalctl does not understand.
    #[error("unexpected answer from {url}: {status}")]
    Unexpected {
        /// What was asked.
        url: String,
        /// HTTP status, or what was wrong with the body.
        status: String,
    },
}

/// The HTTP client for registries: the system's roots plus docker's per-registry `ca.crt`.
fn client(host: &str) -> Result<reqwest::Client> {
    // Whichever of the process's TLS users comes first installs the provider; later calls fail
    // harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
    let ca = Path::new(DOCKER_CERTS_DIR).join(host).join("ca.crt");
    if let Ok(pem) = std::fs::read(&ca) {
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
        builder = builder.tls_certs_merge([cert]);
    }
    builder.build().context("cannot build the HTTP client")
}

fn unreachable(url: &str, e: &reqwest::Error) -> LoginError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    LoginError::Unreachable {
        url: url.to_string(),
        reason,
    }
}

/// The token of a bearer-token answer (`token`, or OAuth2's `access_token`).
#[derive(Debug, serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

/// Checks credentials against one endpoint's `/v2/`.
async fn verify(
    http: &reqwest::Client,
    base: &str,
    registry: &str,
    user: &str,
    password: &str,
) -> Result<(), LoginError> {
    let url = format!("{base}/v2/");
    let first = http
        .get(&url)
        .send()
        .await
        .map_err(|e| unreachable(&url, &e))?;
    let unauthorized = || LoginError::Unauthorized {
        registry: registry.to_string(),
    };
    let unexpected = |url: &str, status: String| LoginError::Unexpected {
        url: url.to_string(),
        status,
    };
    if first.status().is_success() {
        return Ok(());
    }
    if first.status() != StatusCode::UNAUTHORIZED {
        return Err(unexpected(&url, first.status().to_string()));
    }
    let challenge = first
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_challenge)
        .unwrap_or(Challenge::Basic);
    // The second request, with the credentials: 401 or 403 now means they are wrong.
    let with_credentials = async |request: reqwest::RequestBuilder| -> Result<(), LoginError> {
        let r = request.send().await.map_err(|e| unreachable(&url, &e))?;
        match r.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(unauthorized()),
            s => Err(unexpected(&url, s.to_string())),
        }
    };
    match challenge {
        Challenge::Basic => with_credentials(http.get(&url).basic_auth(user, Some(password))).await,
        Challenge::Bearer {
            realm,
            service,
            scope,
        } => {
            let mut query: Vec<(&str, &str)> = vec![("account", user)];
            if let Some(s) = &service {
                query.push(("service", s));
            }
            if let Some(s) = &scope {
                query.push(("scope", s));
            }
            let r = http
                .get(&realm)
                .query(&query)
                .basic_auth(user, Some(password))
                .send()
                .await
                .map_err(|e| unreachable(&realm, &e))?;
            match r.status() {
                s if s.is_success() => {}
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(unauthorized()),
                s => return Err(unexpected(&realm, s.to_string())),
            }
            let answer: TokenAnswer = r
                .json()
                .await
                .map_err(|e| unexpected(&realm, format!("not a token answer: {e}")))?;
            let token = if answer.token.is_empty() {
                answer.access_token
            } else {
                answer.token
            };
            if token.is_empty() {
                return Err(unexpected(&realm, "no token in the answer".into()));
            }
            with_credentials(http.get(&url).bearer_auth(token)).await
        }
    }
}

/// Reads one line from standard input after a prompt on stderr.
fn prompt_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `login [REGISTRY] [-u USER] [-p PASS | --password-stdin]`: checks the credentials with the
/// registry, then saves them; prints "Login Succeeded".
pub async fn login(a: &LoginArgs) -> Result<()> {
    let registry = a.registry.clone().unwrap_or_else(|| DOCKER_HUB.to_string());
    if a.password_stdin && a.username.is_none() {
        return Err(anyhow!(
            "--password-stdin: give the user name with --username"
        ));
    }
    let username = match &a.username {
        Some(u) => u.clone(),
        None => prompt_line("Username: ")?,
    };
    if username.trim().is_empty() {
        return Err(anyhow!("--username: a user name is required"));
    }
    let password = if a.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut text)
            .context("--password-stdin: cannot read standard input")?;
        text.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = &a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        rpassword::prompt_password("Password: ").context("cannot read the password")?
    };
    if password.is_empty() {
        return Err(anyhow!("--password: a password is required"));
    }
    let host = docker_config::normalize_registry(&registry);
    let http = client(&host)?;
    let mut last: Option<LoginError> = None;
    for base in registry_endpoints(&registry) {
        match verify(&http, &base, &host, &username, &password).await {
            Ok(()) => {
                last = None;
                break;
            }
            // Only an unreachable endpoint moves on to the next (https -> http).
            Err(e @ LoginError::Unreachable { .. }) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = last {
        return Err(e.into());
    }
    let path = docker_config::config_path()?;
    let mut cfg = DockerConfig::load(&path)?;
    cfg.set_auth(&registry, &username, &password);
    cfg.save()?;
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        path.display()
    );
    output::print("Login Succeeded\n")?;
    Ok(())
}

/// `logout [REGISTRY]`: forgets the registry's credentials.
pub fn logout(a: &LogoutArgs) -> Result<()> {
    let registry = a.registry.clone().unwrap_or_else(|| DOCKER_HUB.to_string());
    let shown = docker_config::auths_key(&registry);
    let path = docker_config::config_path()?;
    let mut cfg = DockerConfig::load(&path)?;
    if !cfg.remove_auth(&registry) {
        output::print(&format!("Not logged in to {shown}\n"))?;
        return Ok(());
    }
    cfg.save()?;
    output::print(&format!("Removing login credentials for {shown}\n"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:a/b:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:5001/auth, service=reg"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5001/auth".into(),
                service: Some("reg".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn endpoints() {
        assert_eq!(registry_endpoints("docker.io"), vec![DOCKER_HUB_API]);
        assert_eq!(
            registry_endpoints("https://index.docker.io/v1/"),
            vec![DOCKER_HUB_API]
        );
        assert_eq!(
            registry_endpoints("reg.example.com:5000"),
            vec!["https://reg.example.com:5000"]
        );
        assert_eq!(
            registry_endpoints("http://10.0.0.5:5000"),
            vec!["http://10.0.0.5:5000"]
        );
        assert_eq!(
            registry_endpoints("127.0.0.1:5000"),
            vec!["https://127.0.0.1:5000", "http://127.0.0.1:5000"]
        );
        assert_eq!(
            registry_endpoints("localhost:5000"),
            vec!["https://localhost:5000", "http://localhost:5000"]
        );
        assert_eq!(
            registry_endpoints("https://127.0.0.1:5000"),
            vec!["https://127.0.0.1:5000"]
        );
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("10.1.1.1:5000"));
    }
}

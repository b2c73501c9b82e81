//! `shoalctl cluster docker-env`: sets up the docker CLI for the cluster's Docker Engine API
//! (served by managers started with `--docker-api-addr`), with admin.conf's credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use shoal_proto::config::AdminConfig;
use shoal_proto::secure_file;
use shoal_proto::v1::{ClusterStatusRequest, ManagerInfo};

use crate::cli::{DockerEnvArgs, Format};
use crate::client::ManagerChannel;
use crate::output;

/// What the docker CLI needs: its three environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEnv {
    /// `DOCKER_HOST`: "tcp://ADDR".
    pub host: String,
    /// `DOCKER_CERT_PATH`: the directory holding ca.pem, cert.pem and key.pem.
    pub cert_path: PathBuf,
}

/// `cluster docker-env [--dir DIR]`: writes the certificates, prints the exports.
pub async fn docker_env(
    explicit_config: Option<&Path>,
    channel: ManagerChannel,
    a: &DockerEnvArgs,
    format: Format,
) -> Result<()> {
    let managers = crate::client::cluster_admin(channel)
        .cluster_status(ClusterStatusRequest {})
        .await
        .map_err(crate::client::status)?
        .into_inner()
        .managers;
    let addr = docker_api_addr(&managers).ok_or_else(|| {
        anyhow!(
            "no manager serves the Docker Engine API: start the managers with --docker-api-addr IP:PORT (e.g. 0.0.0.0:2376)"
        )
    })?;
    let path = crate::client::find_config(explicit_config)?;
    let cfg = AdminConfig::load(&path)?;
    let dir = match &a.dir {
        Some(dir) => dir.clone(),
        None => default_dir(&path),
    };
    write_certs(&cfg, &dir)?;
    // DOCKER_CERT_PATH is read relative to the shell's directory: make it absolute.
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let env = DockerEnv {
        host: format!("tcp://{addr}"),
        cert_path: dir,
    };
    let text = match format {
        Format::Json => output::json::line(&env_json(&env)),
        Format::Table => exports(&env),
    };
    Ok(output::print(&text)?)
}

/// The address to give the docker CLI: the leader's Docker API address if it serves one, else
/// any reachable manager's. A wildcard listen address (0.0.0.0, [::]) becomes that manager's
/// own (gRPC) host with the Docker API's port.
pub fn docker_api_addr(managers: &[ManagerInfo]) -> Option<String> {
    let serving = |m: &&ManagerInfo| !m.docker_api_addr.is_empty();
    let chosen = managers
        .iter()
        .filter(serving)
        .find(|m| m.leader)
        .or_else(|| managers.iter().filter(serving).find(|m| m.reachable))?;
    Some(reachable_addr(&chosen.docker_api_addr, &chosen.addr))
}

/// `docker_api_addr` with a wildcard host replaced by the host part of `manager_addr`.
fn reachable_addr(docker_api_addr: &str, manager_addr: &str) -> String {
    let Ok(listen) = docker_api_addr.parse::<SocketAddr>() else {
        // A host name: the docker CLI resolves it as we would.
        return docker_api_addr.to_string();
    };
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    if let Ok(manager) = manager_addr.parse::<SocketAddr>() {
        return SocketAddr::new(manager.ip(), listen.port()).to_string();
    }
    match manager_addr.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => format!("{host}:{}", listen.port()),
        _ => listen.to_string(),
    }
}

/// Where the certificates go without --dir: `docker` beside admin.conf (~/.shoal/docker), or
/// `FILE.docker` beside a configuration file with another name, so two clusters' files never
/// share a directory.
pub fn default_dir(config: &Path) -> PathBuf {
    let parent = config.parent().unwrap_or(Path::new("."));
    match config.file_name().and_then(|n| n.to_str()) {
        Some("admin.conf") | None => parent.join("docker"),
        Some(name) => parent.join(format!("{name}.docker")),
    }
}

/// Writes ca.pem, cert.pem and key.pem into `dir` (made owner-only; key.pem 0600).
pub fn write_certs(cfg: &AdminConfig, dir: &Path) -> Result<()> {
    if cfg.cert.trim().is_empty() || cfg.key.trim().is_empty() {
        return Err(anyhow!(
            "the admin configuration has no client certificate: the Docker API accepts only admin certificates"
        ));
    }
    secure_file::ensure_private_dir(dir).with_context(|| format!("{}", dir.display()))?;
    secure_file::write_atomic(&dir.join("ca.pem"), cfg.ca_cert.as_bytes(), 0o644)?;
    secure_file::write_atomic(&dir.join("cert.pem"), cfg.cert.as_bytes(), 0o644)?;
    secure_file::write_private(&dir.join("key.pem"), cfg.key.as_bytes())?;
    Ok(())
}

/// The lines to `eval`.
pub fn exports(env: &DockerEnv) -> String {
    let path = env.cert_path.to_string_lossy();
    let path = shlex::try_quote(&path)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| path.into_owned());
    format!(
        "export DOCKER_HOST={}\nexport DOCKER_TLS_VERIFY=1\nexport DOCKER_CERT_PATH={path}\n# Run this command to configure your shell:\n# eval \"$(shoalctl cluster docker-env)\"\n",
        env.host
    )
}

/// The `--format json` object: the same variables.
pub fn env_json(env: &DockerEnv) -> serde_json::Value {
    serde_json::json!({
        "DOCKER_HOST": env.host,
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": env.cert_path.to_string_lossy(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn manager(addr: &str, docker: &str, leader: bool, reachable: bool) -> ManagerInfo {
        ManagerInfo {
            node_id: addr.into(),
            addr: addr.into(),
            leader,
            reachable,
            docker_api_addr: docker.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_leader_is_preferred_then_any_reachable_manager_serving_the_api() {
        let managers = [
            manager("10.0.0.1:4242", "10.0.0.1:2376", false, true),
            manager("10.0.0.2:4242", "10.0.0.2:2376", true, true),
        ];
        assert_eq!(docker_api_addr(&managers).as_deref(), Some("10.0.0.2:2376"));
        let managers = [
            manager("10.0.0.1:4242", "10.0.0.1:2376", false, false),
            manager("10.0.0.2:4242", "", true, true),
            manager("10.0.0.3:4242", "10.0.0.3:2376", false, true),
        ];
        assert_eq!(docker_api_addr(&managers).as_deref(), Some("10.0.0.3:2376"));
        let managers = [manager("10.0.0.2:4242", "", true, true)];
        assert_eq!(docker_api_addr(&managers), None);
    }

    #[test]
    fn a_wildcard_address_takes_the_managers_host() {
        assert_eq!(
            reachable_addr("0.0.0.0:2376", "10.0.0.1:4242"),
            "10.0.0.1:2376"
        );
        assert_eq!(
            reachable_addr("[::]:2376", "[fd00::1]:4242"),
            "[fd00::1]:2376"
        );
        assert_eq!(reachable_addr("0.0.0.0:2376", "m1.lan:4242"), "m1.lan:2376");
        assert_eq!(
            reachable_addr("10.0.0.9:2376", "10.0.0.1:4242"),
            "10.0.0.9:2376"
        );
    }

    #[test]
    fn the_default_dir_is_beside_the_configuration() {
        assert_eq!(
            default_dir(Path::new("/home/a/.shoal/admin.conf")),
            PathBuf::from("/home/a/.shoal/docker")
        );
        assert_eq!(
            default_dir(Path::new("/etc/prod.conf")),
            PathBuf::from("/etc/prod.conf.docker")
        );
    }

    #[test]
    fn exports_and_json_carry_the_three_variables() {
        let env = DockerEnv {
            host: "tcp://10.0.0.1:2376".into(),
            cert_path: PathBuf::from("/home/a b/.shoal/docker"),
        };
        let text = exports(&env);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "export DOCKER_HOST=tcp://10.0.0.1:2376");
        assert_eq!(lines[1], "export DOCKER_TLS_VERIFY=1");
        assert_eq!(
            lines[2],
            "export DOCKER_CERT_PATH='/home/a b/.shoal/docker'"
        );
        let json = env_json(&env);
        assert_eq!(json["DOCKER_HOST"], "tcp://10.0.0.1:2376");
        assert_eq!(json["DOCKER_TLS_VERIFY"], "1");
        assert_eq!(json["DOCKER_CERT_PATH"], "/home/a b/.shoal/docker");
    }

    #[test]
    fn the_certificates_are_written_owner_only() {
        let dir = std::env::temp_dir().join(format!("shoalctl-docker-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = AdminConfig {
            managers: vec![],
            ca_cert: "CA".into(),
            cert: "CERT".into(),
            key: "KEY".into(),
        };
        write_certs(&cfg, &dir.join("docker")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("docker")), 0o700);
        assert_eq!(mode(&dir.join("docker/key.pem")), 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.join("docker/ca.pem")).unwrap(),
            "CA"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("docker/cert.pem")).unwrap(),
            "CERT"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("docker/key.pem")).unwrap(),
            "KEY"
        );
        let no_cert = AdminConfig {
            cert: String::new(),
            ..cfg
        };
        assert!(write_certs(&no_cert, &dir.join("other")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

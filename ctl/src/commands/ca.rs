//! `shoalctl cluster ca|update|admin renew`: the root CA and its rotation, the lifetime of
//! certificates, and renewing the admin certificate shoalctl uses (also done by itself once that
//! certificate is past two thirds of its lifetime).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context as _, Result};
use serde_json::json;
use shoal_proto::config::AdminConfig;
use shoal_proto::pki;
use shoal_proto::v1::{
    GetClusterRequest, GetClusterResponse, RenewAdminCertificateRequest, RotateCaRequest,
    UpdateClusterRequest,
};

use crate::cli::{CaArgs, ClusterUpdateArgs, Format};
use crate::client::ManagerChannel;
use crate::output;

fn status_err(s: tonic::Status) -> anyhow::Error {
    crate::client::status(s)
}

/// Past this fraction of its lifetime, shoalctl renews its admin certificate by itself.
const AUTO_RENEW_FRACTION: f64 = 2.0 / 3.0;

/// Renews the admin certificate of the config at `path` through `channel` and writes the config
/// in place (cert, key and trusted CAs); returns when the new certificate expires.
async fn renew_admin_conf(path: &Path, channel: ManagerChannel) -> Result<SystemTime> {
    let (csr, key_pem) = pki::generate_csr("admin")?;
    let resp = crate::client::cluster_admin(channel)
        .renew_admin_certificate(RenewAdminCertificateRequest { csr_pem: csr })
        .await
        .map_err(status_err)?
        .into_inner();
    // Under the file's lock: a manager may be rewriting the same admin.conf (its data dir's).
    AdminConfig::update(path, |conf| {
        conf.cert = resp.cert_pem;
        conf.key = key_pem;
        conf.ca_cert = resp.ca_bundle_pem;
        true
    })
    .with_context(|| format!("writing the renewed certificate to {}", path.display()))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(resp.expires_at.max(0) as u64))
}

fn config_path(config: Option<&Path>) -> Result<PathBuf> {
    crate::client::find_config(config)
}

/// Renews the admin.conf at `path` during a rotation to CA `ca_fp`. A manager renews the
/// admin.conf of its own data dir by itself at the same moment: when this renewal is refused
/// because that already happened (the file now holds another certificate, from the new CA),
/// the file is as wanted.
async fn renew_during_rotation(path: &Path, channel: ManagerChannel, ca_fp: &str) -> Result<()> {
    let before = AdminConfig::load(path)?.cert;
    match renew_admin_conf(path, channel).await {
        Ok(_) => Ok(()),
        Err(e) => {
            // The manager's renewal may have won in the store a moment before it writes the
            // file: give it a few seconds to land.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let now = AdminConfig::load(path)?;
                let renewed_elsewhere = now.cert != before
                    && pki::find_in_bundle(&now.ca_cert, ca_fp)
                        .is_some_and(|ca| pki::issued_by(&now.cert, ca).unwrap_or(false));
                if renewed_elsewhere {
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connects with the renewed admin.conf. Right after a rotation started, a manager may not
/// trust the new CA yet (it applies the change a moment later): retry for a few seconds.
async fn connect_after_rotation(config: Option<&Path>) -> Result<ManagerChannel> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match crate::client::connect(config).await {
            Ok(c) => return Ok(c.channel),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing_free_debug(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// shoalctl has no logger: a retried failure is silent unless SHOAL_DEBUG is set.
fn tracing_free_debug(e: &anyhow::Error) {
    if std::env::var_os("SHOAL_DEBUG").is_some() {
        eprintln!("(retrying: {})", crate::error_chain(e));
    }
}

/// `cluster admin renew`.
pub async fn admin_renew(config: Option<&Path>, channel: ManagerChannel) -> Result<()> {
    let path = config_path(config)?;
    let expires = renew_admin_conf(&path, channel).await?;
    Ok(output::print(&format!(
        "Admin certificate of {} renewed; it expires at {}.\n",
        path.display(),
        humantime::format_rfc3339_seconds(expires)
    ))?)
}

/// Renews the admin certificate in use when it is past two thirds of its lifetime (best effort:
/// a failure is a warning, the command goes on with the current certificate).
/// Returns whether it renewed (the connection must then be made again: the old certificate is
/// no longer valid).
pub async fn renew_if_due(config: Option<&Path>, channel: ManagerChannel) -> bool {
    let Ok(path) = config_path(config) else {
        return false;
    };
    let Ok(conf) = AdminConfig::load(&path) else {
        return false;
    };
    let Ok(v) = pki::validity(&conf.cert) else {
        return false;
    };
    if SystemTime::now() < v.at_fraction(AUTO_RENEW_FRACTION) {
        return false;
    }
    match renew_admin_conf(&path, channel).await {
        Ok(_) => {
            eprintln!(
                "(renewed the admin certificate of {}: it was near its expiry)",
                path.display()
            );
            true
        }
        Err(e) => {
            eprintln!(
                "warning: the admin certificate of {} expires at {} and renewing it failed: {}",
                path.display(),
                humantime::format_rfc3339_seconds(v.not_after),
                crate::error_chain(&e)
            );
            false
        }
    }
}

/// `cluster update`.
pub async fn update(channel: ManagerChannel, a: &ClusterUpdateArgs) -> Result<()> {
    if a.cert_expiry.is_none() && a.autolock.is_none() {
        return Err(anyhow!(
            "nothing to update: give --cert-expiry and/or --autolock (see shoalctl cluster update --help)"
        ));
    }
    let resp = crate::client::cluster_admin(channel)
        .update_cluster(UpdateClusterRequest {
            cert_expiry_ns: a.cert_expiry,
            autolock: a.autolock,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let mut text = String::from("Cluster updated.\n");
    if !resp.unlock_key.is_empty() {
        text.push_str(&format!(
            "To unlock a manager after it restarts, run `shoalctl cluster unlock` and give it the following key:\n\n    {}\n\nStore this key somewhere safe (a password manager): without it a restarted manager cannot start.\n",
            resp.unlock_key
        ));
    }
    Ok(output::print(&text)?)
}

fn ca_json(c: &GetClusterResponse) -> serde_json::Value {
    json!({
        "ID": c.cluster_id,
        "CAFingerprint": c.ca_fingerprint,
        "NodeCertExpiry": output::human_duration(c.cert_expiry_ns),
        "NodeCertExpirySeconds": c.cert_expiry_ns / 1_000_000_000,
        "Autolock": c.autolock,
        "Rotation": c.rotation.as_ref().map(|r| json!({
            "StartedAt": output::rfc3339(r.started_at),
            "OldCAFingerprint": r.old_ca_fingerprint,
            "CertsTotal": r.certs_total,
            "CertsDone": r.certs_done,
            "Pending": r.pending,
        })),
    })
}

fn ca_text(c: &GetClusterResponse) -> String {
    let mut t = format!(
        "CA fingerprint:      {}\nCertificate expiry:  {}\nAutolock:            {}\n",
        c.ca_fingerprint,
        output::human_duration(c.cert_expiry_ns),
        c.autolock
    );
    match &c.rotation {
        Some(r) => t.push_str(&format!("Rotation:            {}\n", progress_line(r))),
        None => t.push_str("Rotation:            none under way\n"),
    }
    t
}

fn progress_line(r: &shoal_proto::v1::CaRotation) -> String {
    let mut line = format!(
        "{}/{} node certificates on the new CA",
        r.certs_done, r.certs_total
    );
    if !r.pending.is_empty() {
        let shown: Vec<&str> = r.pending.iter().take(5).map(String::as_str).collect();
        line.push_str(&format!(" (waiting for {}", shown.join(", ")));
        if r.pending.len() > shown.len() {
            line.push_str(&format!(" and {} more", r.pending.len() - shown.len()));
        }
        line.push(')');
    }
    line
}

async fn get_cluster(channel: ManagerChannel) -> Result<GetClusterResponse> {
    Ok(crate::client::cluster_admin(channel)
        .get_cluster(GetClusterRequest {})
        .await
        .map_err(status_err)?
        .into_inner())
}

/// `cluster ca [--rotate [-d]] [-q]`.
pub async fn ca(
    config: Option<&Path>,
    channel: ManagerChannel,
    a: &CaArgs,
    format: Format,
) -> Result<()> {
    if !a.rotate {
        let c = get_cluster(channel).await?;
        let text = match (a.quiet, format) {
            (true, _) => format!("{}\n", c.ca_fingerprint),
            (false, Format::Json) => output::json::line(&ca_json(&c)),
            (false, Format::Table) => ca_text(&c),
        };
        return Ok(output::print(&text)?);
    }
    let fp = crate::client::cluster_admin(channel.clone())
        .rotate_ca(RotateCaRequest {})
        .await
        .map_err(status_err)?
        .into_inner()
        .ca_fingerprint;
    eprintln!("CA rotation started: new root CA {fp}");
    // The admin.conf in use gets a certificate from the new CA at once; the old one was
    // replaced, so the rest of this command talks over a new connection.
    let path = config_path(config)?;
    renew_during_rotation(&path, channel, &fp).await?;
    eprintln!("{}: renewed under the new CA", path.display());
    if a.detach {
        println!("{fp}");
        return Ok(());
    }
    let channel = connect_after_rotation(config).await?;
    let mut last = String::new();
    loop {
        let c = get_cluster(channel.clone()).await?;
        if c.ca_fingerprint != fp {
            return Err(anyhow!(
                "the cluster's CA is now {}: another rotation replaced this one",
                c.ca_fingerprint
            ));
        }
        let Some(r) = c.rotation else {
            if last.is_empty() {
                // Done before the first look: say so rather than show nothing.
                eprintln!("all node certificates on the new CA");
            }
            break;
        };
        let line = progress_line(&r);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Done: trust only the new CA from now on (the renewal answer carries the trust of now).
    renew_during_rotation(&path, channel, &fp).await?;
    eprintln!("CA rotation complete: every node holds a certificate from the new CA, and the old CA is trusted nowhere.");
    println!("{fp}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::CaRotation;

    #[test]
    fn progress_names_the_nodes_it_waits_for() {
        let r = CaRotation {
            certs_total: 9,
            certs_done: 2,
            pending: (1..=7).map(|i| format!("h{i}")).collect(),
            ..Default::default()
        };
        assert_eq!(
            progress_line(&r),
            "2/9 node certificates on the new CA (waiting for h1, h2, h3, h4, h5 and 2 more)"
        );
    }
}

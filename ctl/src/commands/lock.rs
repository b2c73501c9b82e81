//! `shoalctl cluster unlock|unlock-key`: autolock.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use shoal_proto::pki;
use shoal_proto::v1::{UnlockKeyRequest, UnlockRequest};

use crate::cli::{Format, UnlockArgs, UnlockKeyArgs};
use crate::client::{self, ManagerChannel};

/// What an unlocked (normal) manager answers to `Unlock`.
const NOT_LOCKED: &str = "this manager is not locked";

/// `cluster unlock`: dials the managers of the admin configuration itself (a locked manager
/// answers nothing else).
pub async fn unlock(config: Option<&Path>, a: &UnlockArgs) -> Result<()> {
    let key = read_key(a)?;
    let (path, cfg, tls) = client::load_admin(config)?;
    let managers = match &a.manager {
        Some(addr) => vec![addr.clone()],
        None => cfg.managers.clone(),
    };
    if managers.is_empty() {
        return Err(anyhow!("{}: lists no manager address", path.display()));
    }
    let mut failed = 0;
    for addr in &managers {
        let outcome = unlock_one(addr, tls.clone(), &key).await;
        let line = match &outcome {
            Ok(Outcome::Unlocked) => "unlocked".to_string(),
            Ok(Outcome::NotLocked) => "not locked".to_string(),
            Err(e) => {
                failed += 1;
                crate::error_chain(e)
            }
        };
        println!("{addr}: {line}");
    }
    if failed > 0 {
        return Err(anyhow!(
            "{failed} of {} managers could not be unlocked",
            managers.len()
        ));
    }
    Ok(())
}

/// What one manager said to the unlock key.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Unlocked,
    NotLocked,
}

async fn unlock_one(addr: &str, tls: Arc<rustls::ClientConfig>, key: &str) -> Result<Outcome> {
    let channel = pki::connect(addr, tls).await?;
    let mut admin = shoal_proto::v1::cluster_admin_client::ClusterAdminClient::new(channel);
    let result = admin
        .unlock(UnlockRequest {
            unlock_key: key.to_string(),
        })
        .await;
    outcome(result.map(|_| ()))
}

fn outcome(result: Result<(), tonic::Status>) -> Result<Outcome> {
    match result {
        Ok(()) => Ok(Outcome::Unlocked),
        Err(s) if s.code() == tonic::Code::FailedPrecondition && s.message() == NOT_LOCKED => {
            Ok(Outcome::NotLocked)
        }
        Err(s) => Err(client::status(s)),
    }
}

/// The unlock key, from `--key-file` or stdin (prompted for, without echo, on a terminal); never
/// from the command line, where every user of the host could read it.
fn read_key(a: &UnlockArgs) -> Result<String> {
    let key = match &a.key_file {
        Some(path) => shoal_proto::secure_file::read_secret_file(path)?,
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password("Enter unlock key: ").context("reading the unlock key")?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the unlock key from stdin")?;
            line
        }
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err(anyhow!(
            "no unlock key given: pipe it on stdin or pass --key-file (`shoalctl cluster unlock-key` prints it)"
        ));
    }
    Ok(key)
}

/// `cluster unlock-key [--rotate]`.
pub async fn unlock_key(channel: ManagerChannel, a: &UnlockKeyArgs, format: Format) -> Result<()> {
    let key = client::cluster_admin(channel)
        .unlock_key(UnlockKeyRequest { rotate: a.rotate })
        .await
        .map_err(client::status)?
        .into_inner()
        .unlock_key;
    let mut out = std::io::stdout().lock();
    out.write_all(render_key(&key, a, format).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The output of `unlock-key`, as `docker swarm unlock-key` prints it.
fn render_key(key: &str, a: &UnlockKeyArgs, format: Format) -> String {
    if format == Format::Json {
        return crate::output::json::line(&serde_json::json!({ "UnlockKey": key }));
    }
    if a.quiet {
        return format!("{key}\n");
    }
    let mut s = String::new();
    if a.rotate {
        s.push_str("Successfully rotated manager unlock key.\n\n");
    }
    s.push_str(&format!(
        "To unlock a shoal manager after it restarts, run the `shoalctl cluster unlock`\n\
         command and provide the following key:\n\n    {key}\n\n\
         Please remember to store this key in a password manager, since without it you\n\
         will not be able to restart the manager.\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(rotate: bool, quiet: bool) -> UnlockKeyArgs {
        UnlockKeyArgs { rotate, quiet }
    }

    #[test]
    fn key_output_like_docker() {
        let k = "SHOALKEY-1-abc";
        assert_eq!(
            render_key(k, &args(false, true), Format::Table),
            "SHOALKEY-1-abc\n"
        );
        let full = render_key(k, &args(false, false), Format::Table);
        assert!(full.contains("\n    SHOALKEY-1-abc\n"));
        assert!(!full.contains("rotated"));
        assert!(render_key(k, &args(true, false), Format::Table)
            .starts_with("Successfully rotated manager unlock key.\n"));
        let json: serde_json::Value =
            serde_json::from_str(&render_key(k, &args(true, true), Format::Json)).unwrap();
        assert_eq!(json["UnlockKey"], k);
    }

    #[test]
    fn answers_become_outcomes() {
        assert_eq!(outcome(Ok(())).unwrap(), Outcome::Unlocked);
        assert_eq!(
            outcome(Err(tonic::Status::failed_precondition(NOT_LOCKED))).unwrap(),
            Outcome::NotLocked
        );
        let e = outcome(Err(tonic::Status::permission_denied("invalid unlock key"))).unwrap_err();
        assert_eq!(e.to_string(), "invalid unlock key");
    }

    #[test]
    fn a_key_file_is_read_and_an_empty_one_refused() {
        let path = std::env::temp_dir().join(format!("shoalctl-unlock-key-{}", std::process::id()));
        std::fs::write(&path, "  SHOALKEY-1-abc\n").unwrap();
        let a = UnlockArgs {
            manager: None,
            key_file: Some(path.clone()),
        };
        assert_eq!(read_key(&a).unwrap(), "SHOALKEY-1-abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_key(&a).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}

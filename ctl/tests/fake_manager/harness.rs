//! Running shoalctl against a served fake manager.

use std::path::Path;

use shoal_proto::config::AdminConfig;
use shoal_proto::pki::{self, CertRole};
use shoal_proto::v1::cluster_admin_server::ClusterAdminServer;
use shoal_proto::v1::control_server::ControlServer;
use shoal_proto::v1::*;
use tokio_stream::wrappers::TcpListenerStream;

use crate::fake::Fake;

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) async fn shoalctl(config: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .expect("run shoalctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A fake manager serving over mutual TLS, and an admin.conf that reaches it.
pub(crate) struct Served {
    pub(crate) fake: Fake,
    pub(crate) conf: std::path::PathBuf,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Served {
    pub(crate) async fn stop(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

pub(crate) async fn serve(test: &str) -> Served {
    let fake = Fake::new();
    let ca = pki::generate_ca("test-cluster").expect("ca");
    let server_id = pki::issue(
        &ca,
        "manager-1",
        CertRole::Manager,
        std::time::Duration::from_secs(86_400),
    )
    .expect("manager cert");
    let admin = pki::issue(
        &ca,
        "admin",
        CertRole::Admin,
        std::time::Duration::from_secs(86_400),
    )
    .expect("admin cert");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(pki::server_tls(&ca.cert_pem, &server_id))
            .expect("tls")
            .add_service(ControlServer::new(fake.clone()))
            .add_service(ClusterAdminServer::new(fake.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );

    let dir = std::env::temp_dir().join(format!("shoalctl-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("admin.conf");
    AdminConfig {
        // The first manager is down: shoalctl must fail over to the second.
        managers: vec!["127.0.0.1:1".into(), addr.to_string()],
        ca_cert: ca.cert_pem.clone(),
        cert: admin.cert_pem,
        key: admin.key_pem,
    }
    .save(&conf)
    .expect("save admin.conf");
    Served {
        fake,
        conf,
        dir,
        addr,
        stop: stop_tx,
        server,
    }
}

pub(crate) fn sent_spec(fake: &Fake) -> ServiceSpec {
    fake.lock()
        .updates
        .last()
        .and_then(|u| u.spec.clone())
        .expect("an UpdateService request")
}

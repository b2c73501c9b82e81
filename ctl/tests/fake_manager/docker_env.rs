//! `cluster docker-env` against the fake's ClusterAdmin (only ClusterStatus answers).

use std::os::unix::fs::PermissionsExt;

use shoal_proto::v1::cluster_admin_server::ClusterAdmin;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::fake::Fake;
use crate::harness::{serve, shoalctl};

#[tonic::async_trait]
impl ClusterAdmin for Fake {
    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(ClusterStatusResponse {
            managers: self.lock().managers.clone(),
        }))
    }
    async fn demote_manager(
        &self,
        _: Request<DemoteManagerRequest>,
    ) -> Result<Response<DemoteManagerResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn promote_node(
        &self,
        _: Request<PromoteNodeRequest>,
    ) -> Result<Response<PromoteNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_admin_credentials(
        &self,
        _: Request<ListAdminCredentialsRequest>,
    ) -> Result<Response<ListAdminCredentialsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn revoke_admin_credential(
        &self,
        _: Request<RevokeAdminCredentialRequest>,
    ) -> Result<Response<RevokeAdminCredentialResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn renew_admin_certificate(
        &self,
        _: Request<RenewAdminCertificateRequest>,
    ) -> Result<Response<RenewAdminCertificateResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_cluster(
        &self,
        _: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn update_cluster(
        &self,
        _: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn rotate_ca(
        &self,
        _: Request<RotateCaRequest>,
    ) -> Result<Response<RotateCaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn unlock(&self, _: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn unlock_key(
        &self,
        _: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

fn manager(addr: &str, docker: &str, leader: bool) -> ManagerInfo {
    ManagerInfo {
        node_id: format!("node-{addr}"),
        addr: addr.into(),
        leader,
        reachable: true,
        docker_api_addr: docker.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn docker_env_writes_the_certificates_and_prints_the_exports() {
    let served = serve("docker-env").await;
    let conf = served.conf.clone();
    let dir = served.dir.clone();

    // No manager serves the Docker API: a clear error naming the flag.
    served.fake.lock().managers = vec![manager("10.0.0.1:4242", "", true)];
    let r = shoalctl(&conf, &["cluster", "docker-env"]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("--docker-api-addr"), "{}", r.stderr);
    assert!(!dir.join("docker").exists());

    served.fake.lock().managers = vec![
        manager("10.0.0.1:4242", "10.0.0.1:2376", false),
        manager("10.0.0.2:4242", "0.0.0.0:2376", true),
    ];
    let r = shoalctl(&conf, &["cluster", "docker-env"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let certs = dir.join("docker");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "export DOCKER_HOST=tcp://10.0.0.2:2376");
    assert_eq!(lines[1], "export DOCKER_TLS_VERIFY=1");
    assert_eq!(
        lines[2],
        format!("export DOCKER_CERT_PATH={}", certs.display())
    );
    let admin = shoal_proto::config::AdminConfig::load(&conf).expect("admin.conf");
    let read = |f: &str| std::fs::read_to_string(certs.join(f)).expect("written");
    assert_eq!(read("ca.pem"), admin.ca_cert);
    assert_eq!(read("cert.pem"), admin.cert);
    assert_eq!(read("key.pem"), admin.key);
    let mode =
        |p: std::path::PathBuf| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(certs.join("key.pem")), 0o600);
    assert_eq!(mode(certs.clone()), 0o700);

    let other = dir.join("elsewhere");
    let other_s = other.to_string_lossy().into_owned();
    let r = shoalctl(
        &conf,
        &[
            "cluster",
            "docker-env",
            "--dir",
            &other_s,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json");
    assert_eq!(v["DOCKER_HOST"], "tcp://10.0.0.2:2376");
    assert_eq!(v["DOCKER_TLS_VERIFY"], "1");
    assert_eq!(v["DOCKER_CERT_PATH"], other_s.as_str());
    assert!(other.join("key.pem").is_file());
    served.stop().await;
}

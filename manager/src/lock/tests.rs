use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::locked::*;
use super::*;

#[test]
fn seal_round_trip_and_aad() {
    let k = DataKey::generate().unwrap();
    let sealed = k.seal(b"here", b"secret value").unwrap();
    assert!(is_sealed(&sealed));
    assert!(!sealed.windows(6).any(|w| w == b"secret"));
    assert_eq!(k.open(b"here", &sealed).unwrap(), b"secret value");
    // Moved elsewhere, it no longer opens.
    assert!(matches!(
        k.open(b"there", &sealed),
        Err(SealError::WrongKey)
    ));
    // Two seals of one value differ (random nonce).
    assert_ne!(sealed, k.seal(b"here", b"secret value").unwrap());
    // Empty values seal too.
    let empty = k.seal(b"e", b"").unwrap();
    assert_eq!(k.open(b"e", &empty).unwrap(), b"");
}

#[test]
fn wrong_key_and_tampering_are_refused() {
    let k = DataKey::generate().unwrap();
    let other = DataKey::generate().unwrap();
    let mut sealed = k.seal(b"a", b"value").unwrap();
    assert!(matches!(
        other.open(b"a", &sealed),
        Err(SealError::WrongKey)
    ));
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    assert!(matches!(k.open(b"a", &sealed), Err(SealError::WrongKey)));
    assert!(matches!(
        k.open(b"a", b"short"),
        Err(SealError::Malformed { .. })
    ));
}

#[test]
fn legacy_plaintext_is_told_apart() {
    let k = DataKey::generate().unwrap();
    // Protobuf encodings and the 8-byte applied index never look sealed.
    assert!(!is_sealed(&7u64.to_be_bytes()));
    assert!(!is_sealed(b"\x0a\x03abc"));
    assert!(!is_sealed(b""));
    assert_eq!(
        k.open_or_legacy(b"x", b"\x0a\x03abc").unwrap(),
        b"\x0a\x03abc"
    );
    let sealed = k.seal(b"x", b"new").unwrap();
    assert_eq!(k.open_or_legacy(b"x", &sealed).unwrap(), b"new");
    // Once migrated, a value in clear is refused; without a key a sealed one is.
    assert!(matches!(
        unseal_stored(Some(&k), b"x", b"\x0a\x03abc"),
        Err(SealError::Unsealed)
    ));
    assert!(matches!(
        unseal_stored(None, b"x", &sealed),
        Err(SealError::WrongKey)
    ));
    assert_eq!(unseal_stored(None, b"x", b"plain").unwrap(), b"plain");
}

#[test]
fn unlock_keys_have_their_format() {
    let key = new_unlock_key().unwrap();
    assert!(key.starts_with("SHOALKEY-1-"));
    assert_eq!(key.len(), "SHOALKEY-1-".len() + 43);
    assert_eq!(parse_unlock_key(&format!("  {key}\n")).unwrap().len(), 32);
    assert!(parse_unlock_key("SHOALKEY-1-tooshort").is_none());
    assert!(parse_unlock_key(&key.replace("SHOALKEY-1-", "SWMKEY-1-")).is_none());
}

#[test]
fn data_key_file_round_trip_clear_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    let path = data_key_path(dir.path());
    assert!(read_data_key(&path).unwrap().is_none());
    let key = create_data_key(dir.path()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let sealed_value = key.seal(b"v", b"payload").unwrap();
    let StoredDataKey::Clear(read) = read_data_key(&path).unwrap().unwrap() else {
        panic!("expected a clear key");
    };
    assert_eq!(read.open(b"v", &sealed_value).unwrap(), b"payload");

    let unlock = new_unlock_key().unwrap();
    write_data_key(&path, &key, Some(&unlock)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"sealed\": true"));
    assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode(key.raw())));
    let StoredDataKey::Sealed(sealed) = read_data_key(&path).unwrap().unwrap() else {
        panic!("expected a sealed key");
    };
    assert!(matches!(
        sealed.unseal(&new_unlock_key().unwrap()),
        Err(SealError::WrongKey)
    ));
    assert!(sealed.unseal("not a key").is_err());
    let opened = sealed.unseal(&unlock).unwrap();
    assert_eq!(opened.open(b"v", &sealed_value).unwrap(), b"payload");
}

#[test]
fn unlock_needs_a_certificate_and_the_key() {
    let key = DataKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-key");
    let unlock = new_unlock_key().unwrap();
    write_data_key(&path, &key, Some(&unlock)).unwrap();
    let StoredDataKey::Sealed(sealed) = read_data_key(&path).unwrap().unwrap() else {
        panic!("expected a sealed key");
    };
    let (tx, rx) = watch::channel(None);
    let admin = LockedAdmin {
        sealed,
        unlocked: Arc::new(tx),
    };
    let e = admin.unlock_with(false, &unlock).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = admin
        .unlock_with(true, &new_unlock_key().unwrap())
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert_eq!(e.message(), "invalid unlock key");
    assert!(admin.unlock_with(true, &unlock).is_ok());
    assert!(rx.borrow().is_none(), "only the RPC hands the key over");
}

/// The locked server over real TLS: `Unlock` with a wrong key is refused, other services
/// answer "locked", a call without a client certificate is refused, the right key unlocks
/// and the server lets go of the port.
#[tokio::test]
async fn locked_server_unlocks_with_the_right_key_only() {
    use shoal_proto::pki::{self, CertRole, Trust};
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = pki::generate_ca("c1").unwrap();
    let node = pki::issue(
        &ca,
        "n1",
        CertRole::Manager,
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let admin = pki::issue(
        &ca,
        "admin",
        CertRole::Admin,
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    std::fs::write(certs.join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(certs.join("node.pem"), &node.cert_pem).unwrap();
    std::fs::write(certs.join("node-key.pem"), &node.key_pem).unwrap();
    let key = create_data_key(dir.path()).unwrap();
    let unlock = new_unlock_key().unwrap();
    write_data_key(&data_key_path(dir.path()), &key, Some(&unlock)).unwrap();
    let StoredDataKey::Sealed(sealed) = read_data_key(&data_key_path(dir.path())).unwrap().unwrap()
    else {
        panic!("expected a sealed key");
    };
    // A free port: bound, read, let go (the server binds it itself).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let data_dir = dir.path().to_path_buf();
    let (_stop, stop_rx) = watch::channel(false);
    let server = tokio::spawn(async move { serve_locked(&data_dir, addr, sealed, stop_rx).await });

    let with_cert =
        Arc::new(pki::client_config(&Trust::Ca(ca.cert_pem.clone()), Some(&admin)).unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let channel = loop {
        match pki::connect(&addr.to_string(), with_cert.clone()).await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("locked server never answered: {e}"),
        }
    };
    let mut admin_client = cluster_admin_client::ClusterAdminClient::new(channel.clone());
    let e = admin_client
        .unlock(UnlockRequest {
            unlock_key: new_unlock_key().unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert_eq!(e.message(), "invalid unlock key");
    let e = admin_client
        .cluster_status(ClusterStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert_eq!(e.message(), LOCKED_MESSAGE);
    let e = control_client::ControlClient::new(channel.clone())
        .list_nodes(ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert_eq!(e.message(), LOCKED_MESSAGE);

    let no_cert = Arc::new(pki::client_config(&Trust::Ca(ca.cert_pem.clone()), None).unwrap());
    let anonymous = pki::connect(&addr.to_string(), no_cert).await.unwrap();
    let e = cluster_admin_client::ClusterAdminClient::new(anonymous)
        .unlock(UnlockRequest {
            unlock_key: unlock.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    admin_client
        .unlock(UnlockRequest {
            unlock_key: format!("{unlock}\n"),
        })
        .await
        .unwrap();
    drop(admin_client);
    drop(channel);
    let opened = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the locked server stops once unlocked")
        .unwrap()
        .unwrap();
    let probe = key.seal(b"p", b"x").unwrap();
    assert_eq!(opened.open(b"p", &probe).unwrap(), b"x");
    // The port is free again for the manager's own server.
    std::net::TcpListener::bind(addr).unwrap();
}

/// Waits (with a deadline) until the data key file at `path` satisfies `ok`.
async fn wait_for_file(path: &Path, what: &str, ok: impl Fn(&StoredDataKey) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if read_data_key(path).unwrap().as_ref().is_some_and(&ok) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Autolock on, rotation and off, through a one-manager Raft group: the key file follows.
#[tokio::test]
async fn autolock_and_rotation_reseal_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    let key = create_data_key(dir.path()).unwrap();
    let store = Store::open_sealed(&dir.path().join("store"), key.clone()).unwrap();
    let raft = crate::raft::RaftNode::start(
        crate::raft::RaftConfig::new(1, dir.path().to_path_buf()),
        store.clone(),
    )
    .unwrap();
    let now = shoal_proto::now_ns();
    store
        .propose(vec![StoreAction {
            action: Some(Action::PutCluster(Cluster {
                id: "c1".into(),
                meta: Some(Meta::new_at(now)),
                ..Cluster::default()
            })),
        }])
        .await
        .unwrap();
    let watcher = tokio::spawn(keep_data_key_sealed(
        store.clone(),
        dir.path().to_path_buf(),
        key.clone(),
    ));
    let path = data_key_path(dir.path());
    let probe = key.seal(b"p", b"x").unwrap();
    let opens_with = |unlock: String| {
        let probe = probe.clone();
        move |f: &StoredDataKey| match f {
            StoredDataKey::Sealed(s) => s
                .unseal(&unlock)
                .is_ok_and(|k| k.open(b"p", &probe).is_ok()),
            StoredDataKey::Clear(_) => false,
        }
    };

    let e = unlock_key(&store, false).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(e.message(), AUTOLOCK_OFF_MESSAGE);
    assert_eq!(set_autolock(&store, false).await.unwrap(), "");

    let k1 = set_autolock(&store, true).await.unwrap();
    assert!(k1.starts_with("SHOALKEY-1-"));
    wait_for_file(&path, "sealed under the first key", opens_with(k1.clone())).await;
    // On again: the same key, nothing rotated.
    assert_eq!(set_autolock(&store, true).await.unwrap(), k1);
    assert_eq!(unlock_key(&store, false).await.unwrap(), k1);

    let k2 = unlock_key(&store, true).await.unwrap();
    assert_ne!(k1, k2);
    assert_eq!(unlock_key(&store, false).await.unwrap(), k2);
    wait_for_file(
        &path,
        "sealed under the rotated key",
        opens_with(k2.clone()),
    )
    .await;

    assert_eq!(set_autolock(&store, false).await.unwrap(), "");
    wait_for_file(
        &path,
        "back in clear",
        |f| matches!(f, StoredDataKey::Clear(k) if k.open(b"p", &probe).is_ok()),
    )
    .await;
    assert!(store.read(|s| s.cluster().is_some_and(|c| c.unlock_key.is_empty())));
    watcher.abort();
    raft.shutdown().await;
}

//! Secrets, configs, volumes and registry login, through the real shoalctl.

use std::process::Stdio;

use shoal_proto::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

fn lines(s: &str) -> Vec<Vec<&str>> {
    s.lines().map(|l| l.split_whitespace().collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_configs_against_a_fake_manager() {
    let served = serve("data").await;
    let conf = served.conf.clone();
    let fake = served.fake.clone();
    let pw = served.dir.join("pw.txt");
    std::fs::write(&pw, "hunter2\n").expect("write secret file");
    let big = served.dir.join("big.bin");
    std::fs::write(&big, vec![b'x'; 600 * 1024]).expect("write big file");
    let nginx = served.dir.join("nginx.conf");
    std::fs::write(&nginx, "hello").expect("write config file");
    let path = |p: &std::path::Path| p.to_str().unwrap_or_default().to_string();

    // create prints the ID and sends the data and labels
    let r = shoalctl(
        &conf,
        &["secret", "create", "--label", "a=b", "pw", &path(&pw)],
    )
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert!(r.stdout.starts_with("sec00"), "{}", r.stdout);
    {
        let st = fake.lock();
        let spec = st.secrets[0].spec.clone().unwrap_or_default();
        assert_eq!(spec.data, b"hunter2\n");
        assert_eq!(spec.labels.get("a").map(String::as_str), Some("b"));
    }

    // too large: refused before anything is sent, naming the limit
    let r = shoalctl(&conf, &["secret", "create", "big", &path(&big)]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Error: secret data is 600 KiB: secrets are limited to 500 KiB\n"
    );
    assert_eq!(fake.lock().secrets.len(), 1);

    // ls: ID NAME CREATED UPDATED; -q: IDs; json: docker's names
    let r = shoalctl(&conf, &["secret", "ls"]).await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let t = lines(&r.stdout);
    assert_eq!(t[0], ["ID", "NAME", "CREATED", "UPDATED"]);
    assert_eq!(t[1][1], "pw");
    assert!(r.stdout.contains(" ago"), "{}", r.stdout);
    let r = shoalctl(&conf, &["secret", "ls", "-q"]).await;
    assert_eq!(r.stdout, "sec00abcdefghijklmnopqrstu\n");
    let r = shoalctl(&conf, &["secret", "ls", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json line");
    assert_eq!(v["Name"], "pw");
    assert_eq!(v["Labels"], "a=b");

    // inspect: docker's shape, never the data
    let r = shoalctl(&conf, &["secret", "inspect", "pw"]).await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json array");
    assert_eq!(v[0]["Spec"]["Name"], "pw");
    assert_eq!(v[0]["Version"]["Index"], 3);
    assert!(v[0]["Spec"].get("Data").is_none());
    assert!(!r.stdout.contains("hunter2"));

    // a config shows its data in base64
    let r = shoalctl(&conf, &["config", "create", "nginx_conf", &path(&nginx)]).await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let r = shoalctl(&conf, &["config", "inspect", "nginx_conf"]).await;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json array");
    assert_eq!(v[0]["Spec"]["Data"], "aGVsbG8=");

    // a service using both, and a mount
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--secret",
            "source=pw,target=db_pw,mode=0400",
            "--config",
            "source=nginx_conf,target=/etc/nginx/nginx.conf",
            "--mount",
            "type=volume,src=data,dst=/data",
            "busybox",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let c = fake.lock().services[0]
        .spec
        .clone()
        .and_then(|s| s.task)
        .and_then(|t| t.container)
        .unwrap_or_default();
    assert_eq!(c.secrets[0].secret_name, "pw");
    let file = c.secrets[0].file.clone().unwrap_or_default();
    assert_eq!((file.name.as_str(), file.mode), ("db_pw", 0o400));
    assert_eq!(c.configs[0].config_name, "nginx_conf");
    assert_eq!(c.mounts[0].source, "data");
    assert_eq!(c.mounts[0].r#type, MountType::MountVolume as i32);
    let r = shoalctl(&conf, &["service", "inspect", "--pretty", "web"]).await;
    assert!(r.stdout.contains("Secrets:"), "{}", r.stdout);
    assert!(r.stdout.contains("/run/secrets/db_pw"), "{}", r.stdout);
    assert!(r.stdout.contains("/etc/nginx/nginx.conf"), "{}", r.stdout);

    // rm: refused while used, naming the service; otherwise prints the name
    let r = shoalctl(&conf, &["secret", "rm", "pw"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("in use by the following service(s): web"),
        "{}",
        r.stderr
    );
    let r = shoalctl(&conf, &["config", "rm", "nginx_conf"]).await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "nginx_conf\n");

    served.stop().await;
}

fn volume(name: &str, node: &str, in_use: bool, anonymous: bool, size: i64) -> Volume {
    Volume {
        name: name.into(),
        driver: "local".into(),
        node_id: node.into(),
        mountpoint: format!("/var/lib/shoal/volumes/{name}/_data"),
        in_use_by: if in_use { vec!["task1".into()] } else { vec![] },
        size_bytes: size,
        anonymous,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_against_a_fake_manager() {
    let served = serve("volumes").await;
    let conf = served.conf.clone();
    {
        let mut st = served.fake.lock();
        st.volumes = vec![
            volume("data", "node1", true, false, 4096),
            volume("data", "node2", false, false, 4096),
            volume("cache", "node2", false, false, 1000),
            volume("0123abcd", "node1", false, true, 12_300_000),
        ];
        st.volume_nodes = [("node1", "host1"), ("node2", "host2"), ("node3", "host3")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        st.unreachable = vec!["node3".into()];
    }

    // ls: DRIVER VOLUME NAME NODE, sorted by name then node; silent nodes on stderr
    let r = shoalctl(&conf, &["volume", "ls"]).await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        lines(&r.stdout),
        vec![
            vec!["DRIVER", "VOLUME", "NAME", "NODE"],
            vec!["local", "0123abcd", "host1"],
            vec!["local", "cache", "host2"],
            vec!["local", "data", "host1"],
            vec!["local", "data", "host2"],
        ]
    );
    assert!(
        r.stderr.contains("WARNING: no answer from node(s) host3"),
        "{}",
        r.stderr
    );
    let r = shoalctl(&conf, &["volume", "ls", "--node", "host2", "-q"]).await;
    assert_eq!(r.stdout, "cache\ndata\n");

    // inspect: one entry per node that has it
    let r = shoalctl(&conf, &["volume", "inspect", "data"]).await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json array");
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(v[0]["Node"], "host1");
    assert_eq!(v[0]["UsageData"]["RefCount"], 1);
    let r = shoalctl(&conf, &["volume", "inspect", "nope"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no such volume: nope"), "{}", r.stderr);

    // rm: from one node; a volume in use is refused; -f ignores a missing one
    let r = shoalctl(&conf, &["volume", "rm", "--node", "host2", "data"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "data\n"), "{}", r.stderr);
    let r = shoalctl(&conf, &["volume", "rm", "data"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("in use"), "{}", r.stderr);
    let r = shoalctl(&conf, &["volume", "rm", "-f", "nope"]).await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);

    // prune: anonymous unused volumes only, the space in docker's units
    let r = shoalctl(&conf, &["volume", "prune", "-f"]).await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        r.stdout,
        "Deleted Volumes:\n0123abcd\n\nTotal reclaimed space: 12.3MB\n"
    );
    let r = shoalctl(&conf, &["volume", "prune", "-a", "-f"]).await;
    assert_eq!(
        r.stdout,
        "Deleted Volumes:\ncache\n\nTotal reclaimed space: 1kB\n"
    );

    served.stop().await;
}

/// A registry that wants basic authentication as user "me", password "pw" (plain HTTP).
async fn basic_auth_registry() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                // One request per connection: read up to the end of the headers.
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&got).to_ascii_lowercase();
                // base64("me:pw")
                let ok = req.contains("authorization: basic bwu6chc=");
                let resp = if ok {
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"test\"\r\n\
                     content-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// Runs shoalctl with DOCKER_CONFIG set and `stdin` on its standard input.
async fn shoalctl_with(docker_config: &std::path::Path, args: &[&str], stdin: &str) -> Run {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoalctl");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await.expect("stdin");
    }
    let out = child.wait_with_output().await.expect("shoalctl output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_saves_and_logout_forgets() {
    let (addr, registry) = basic_auth_registry().await;
    let dir = std::env::temp_dir().join(format!("shoalctl-login-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("config.json"), r#"{"psFormat": "keep me"}"#).expect("config");
    let url = format!("http://{addr}");
    let host = addr.to_string();

    // wrong password: unauthorized, nothing saved
    let r = shoalctl_with(
        &dir,
        &["login", "-u", "me", "--password-stdin", &url],
        "nope\n",
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unauthorized"), "{}", r.stderr);
    let saved = std::fs::read_to_string(dir.join("config.json")).expect("read config");
    assert!(!saved.contains(&host), "{saved}");

    // right password: Login Succeeded, saved 0600 beside the other keys, never printed
    let r = shoalctl_with(
        &dir,
        &["login", "-u", "me", "--password-stdin", &url],
        "pw\n",
    )
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "Login Succeeded\n");
    assert!(!r.stderr.contains("pw\n"));
    let saved = std::fs::read_to_string(dir.join("config.json")).expect("read config");
    let v: serde_json::Value = serde_json::from_str(&saved).expect("json");
    assert_eq!(v["psFormat"], "keep me");
    assert_eq!(v["auths"][host.as_str()]["auth"], "bWU6cHc=");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("config.json"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // logout forgets it
    let r = shoalctl_with(&dir, &["logout", &host], "").await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, format!("Removing login credentials for {host}\n"));
    let r = shoalctl_with(&dir, &["logout", &host], "").await;
    assert_eq!(r.stdout, format!("Not logged in to {host}\n"));

    registry.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

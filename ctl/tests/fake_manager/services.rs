//! Services: create, inspect, scale, update, logs, through the real shoalctl.

use shoal_proto::config::AdminConfig;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoalctl_against_a_fake_manager() {
    let served = serve("services").await;
    let conf = served.conf.clone();
    let dir = served.dir.clone();
    let addr = served.addr;

    // create waits for convergence and prints plain progress (stdout is a pipe)
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "busybox",
            "sleep",
            "3600",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let first = r.stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("svc00"), "{}", r.stdout);
    assert!(
        r.stdout.contains("overall progress: 2 out of 2 tasks"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("1/2: running   [=="), "{}", r.stdout);
    assert!(
        r.stdout.ends_with("verify: Service converged\n"),
        "{}",
        r.stdout
    );

    // listings
    let r = shoalctl(&conf, &["service", "ls", "--format", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let row: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json line");
    assert_eq!(row["Name"], "web");
    assert_eq!(row["Replicas"], "2/2");
    assert_eq!(row["Mode"], "replicated");
    let r = shoalctl(&conf, &["service", "ps", "web"]).await;
    assert!(r.stdout.starts_with("ID "), "{}", r.stdout);
    assert!(r.stdout.contains("web.2"), "{}", r.stdout);
    assert!(r.stdout.contains("host1"), "{}", r.stdout);
    let r = shoalctl(&conf, &["service", "ps", "web", "--format", "json"]).await;
    let row: serde_json::Value =
        serde_json::from_str(r.stdout.lines().next().unwrap_or_default()).expect("ps json");
    assert_eq!(row["Name"], "web.1");
    assert_eq!(row["Node"], "host1");
    assert_eq!(row["DesiredState"], "Running");
    let r = shoalctl(&conf, &["service", "inspect", "web"]).await;
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
    assert_eq!(
        doc[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"],
        serde_json::json!(["sleep", "3600"])
    );
    let r = shoalctl(&conf, &["node", "ls"]).await;
    assert!(
        r.stdout.contains("host1") && r.stdout.contains("Leader"),
        "{}",
        r.stdout
    );

    // node update prints the node id; node rm refuses an up node unless forced
    let r = shoalctl(
        &conf,
        &[
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "zone=a",
            "host1",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "node1node1node1node1node1\n");
    let r = shoalctl(&conf, &["node", "update", "host1"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Error: --availability, --label-add or --label-rm: nothing to update\n"
    );
    let r = shoalctl(&conf, &["node", "update", "--label-add", "zone=a", "nope"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "Error: node nope not found\n");
    let r = shoalctl(&conf, &["node", "rm", "host1"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("Error: host1: node \"host1\" is up"),
        "{}",
        r.stderr
    );
    let r = shoalctl(&conf, &["node", "rm", "--force", "host1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "host1\n");

    // the manager's error message comes through as one line
    let r = shoalctl(
        &conf,
        &["service", "create", "--name", "web", "-d", "busybox"],
    )
    .await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "Error: name: service web already exists\n");

    // a task that fails with restart condition none cannot converge
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "bad",
            "--restart-condition",
            "none",
            "crash",
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(
        r.stderr,
        "Error: service bad cannot converge: 1/1: failed: task: non-zero exit (1) (restart condition is none)\n"
    );

    // scale waits too
    let r = shoalctl(&conf, &["service", "scale", "web=3"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("web scaled to 3\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("overall progress: 3 out of 3 tasks"),
        "{}",
        r.stdout
    );

    // logs: stdout and stderr lines, docker's prefix
    let r = shoalctl(&conf, &["service", "logs", "web"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "web.1.task00xxxxxx@host1    | hello\n");
    assert_eq!(r.stderr, "web.1.task00xxxxxx@host1    | oops\n");

    let r = shoalctl(&conf, &["cluster", "join-token", "worker", "-q"]).await;
    assert_eq!(r.stdout, "SHOAL-TOKEN-0\n");
    let r = shoalctl(&conf, &["cluster", "join-token", "worker"]).await;
    // The token goes through a root-only file, never onto the join command line.
    assert!(
        r.stdout
            .contains("echo SHOAL-TOKEN-0 > /etc/shoal/join-token")
            && r.stdout
                .contains(&format!("--token-file /etc/shoal/join-token {addr}"))
            && !r.stdout.contains("--token SHOAL"),
        "{}",
        r.stdout
    );

    // rm keeps going past an unknown name, then fails
    let r = shoalctl(&conf, &["service", "rm", "nope", "web"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "web\n");
    assert_eq!(r.stderr, "Error: nope: service nope not found\n");

    // no manager answers: one line naming the addresses tried
    let dead = dir.join("dead.conf");
    let mut cfg = AdminConfig::load(&conf).expect("reload admin.conf");
    cfg.managers = vec!["127.0.0.1:1".into()];
    cfg.save(&dead).expect("save dead.conf");
    let r = shoalctl(&dead, &["service", "ls"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("Error: no manager reachable: cannot connect to manager at 127.0.0.1:1"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);

    served.stop().await;
}

//! Loader tests over whole files, and the corpus of public stack files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_norway::Value;

use super::*;

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "shoal-compose-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose-corpus")
}

/// Copies corpus files into a temporary project directory, with placeholder content for every
/// file their secrets, configs and env_files name (the corpus keeps only the stack files).
fn corpus_project(files: &[&str]) -> (TempDir, Vec<PathBuf>) {
    corpus_project_with(files, |_, text| on_local_volumes(text))
}

/// The same, each file's text passed through `rewrite(name, text)` first.
fn corpus_project_with(
    files: &[&str],
    rewrite: impl Fn(&str, String) -> String,
) -> (TempDir, Vec<PathBuf>) {
    let dir = TempDir::new();
    let mut paths = Vec::new();
    for f in files {
        let text = rewrite(f, std::fs::read_to_string(corpus_dir().join(f)).unwrap());
        let v: Value = serde_norway::from_str(&text).unwrap();
        for section in ["secrets", "configs"] {
            if let Some(Value::Mapping(m)) = v.get(section) {
                for (_, def) in m {
                    if let Some(file) = def.get("file").and_then(Value::as_str) {
                        if !file.contains('$') {
                            dir.write(file, "placeholder\n");
                        }
                    }
                }
            }
        }
        if let Some(Value::Mapping(services)) = v.get("services") {
            for (_, s) in services {
                let files: Vec<String> = match s.get("env_file") {
                    Some(Value::String(f)) => vec![f.clone()],
                    Some(Value::Sequence(l)) => l
                        .iter()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                for f in files {
                    dir.write(&f, "FROM_ENV_FILE=1\n");
                }
            }
        }
        paths.push(dir.write(f, &text));
    }
    (dir, paths)
}

fn load_corpus(files: &[&str], vars: &[(&str, &str)]) -> (TempDir, Project) {
    let (dir, paths) = corpus_project(files);
    let project = load(&LoadOptions {
        files: paths,
        env: env(vars),
    })
    .unwrap_or_else(|e| panic!("{files:?}: {e}"));
    (dir, project)
}

fn plan_corpus(files: &[&str], vars: &[(&str, &str)]) -> StackPlan {
    let (_dir, project) = load_corpus(files, vars);
    plan(&project, "st").unwrap_or_else(|e| panic!("{files:?}: {e}"))
}

/// The dogvscat files keep their volumes on DigitalOcean block storage (the `rexray/dobs`
/// plugin driver), which Shoal refuses (only `local`): the corpus tests plan them with those
/// volumes on the local driver, and `corpus_all_files_plan_with_stack_names_and_labels` checks
/// that the files as published are refused with a clear error.
fn on_local_volumes(text: String) -> String {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "driver: rexray/dobs" {
            out.push(line.replace("rexray/dobs", "local"));
            // Its options (`size: N`) mean nothing to the local driver.
            if lines.peek().is_some_and(|l| l.trim() == "driver_opts:") {
                lines.next();
                while lines
                    .peek()
                    .is_some_and(|l| l.trim_start().starts_with("size:"))
                {
                    lines.next();
                }
            }
            continue;
        }
        out.push(line.to_string());
    }
    out.join("\n") + "\n"
}

fn svc<'a>(p: &'a StackPlan, name: &str) -> &'a ServiceSpec {
    p.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name} in {:?}", names(p)))
}

fn names(p: &StackPlan) -> Vec<String> {
    p.services.iter().map(|s| s.name.clone()).collect()
}

fn task(s: &ServiceSpec) -> &shoal_proto::v1::TaskSpec {
    s.task.as_ref().unwrap()
}

fn container(s: &ServiceSpec) -> &shoal_proto::v1::ContainerSpec {
    task(s).container.as_ref().unwrap()
}

/// (published, target, protocol, mode) of each port.
fn ports(s: &ServiceSpec) -> Vec<(u32, u32, String, String)> {
    s.endpoint
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .map(|p| {
            (
                p.published_port,
                p.target_port,
                p.protocol.clone(),
                p.publish_mode.clone(),
            )
        })
        .collect()
}

fn constraints(s: &ServiceSpec) -> Vec<String> {
    task(s).placement.as_ref().unwrap().constraints.clone()
}

fn net_targets(s: &ServiceSpec) -> Vec<String> {
    task(s).networks.iter().map(|n| n.target.clone()).collect()
}

fn created<S: Clone>(r: &[Resource<S>]) -> Vec<S> {
    r.iter()
        .filter_map(|r| match r {
            Resource::Create(s) => Some(s.clone()),
            Resource::External(_) => None,
        })
        .collect()
}

fn external<S>(r: &[Resource<S>]) -> Vec<String> {
    r.iter()
        .filter_map(|r| match r {
            Resource::External(n) => Some(n.clone()),
            Resource::Create(_) => None,
        })
        .collect()
}

/// Every corpus file (overrides with their base) loads and plans, and every object it creates
/// carries the stack's name and label.
#[test]
fn corpus_all_files_plan_with_stack_names_and_labels() {
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yml") && !n.contains(".override."))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "{files:?}");
    let vars = [
        ("DOMAIN", "example.com"),
        ("ADMIN_USER", "admin"),
        ("ADMIN_PASSWORD", "secret"),
        ("HASHED_PASSWORD", "$apr1$x$y"),
        ("HOSTNAME", "node1"),
    ];
    let mut refused = 0;
    for f in &files {
        let (dir, project) = load_corpus(&[f], &vars);
        let published = std::fs::read_to_string(corpus_dir().join(f)).unwrap();
        if published.contains("rexray/dobs") {
            // As published, its volume driver is a plugin Shoal does not have: a clear error
            // naming it, not a stack that fails on the nodes.
            let (_raw_dir, raw) = corpus_project_with(&[f], |_, text| text);
            let raw = load(&LoadOptions {
                files: raw,
                env: env(&vars),
            })
            .unwrap_or_else(|e| panic!("{f}: {e}"));
            // (A file may declare such a volume that no service mounts: then nothing is refused.)
            if let Err(e) = plan(&raw, "st") {
                assert!(
                    e.message
                        .contains("volume driver \"rexray/dobs\" is not supported: only \"local\""),
                    "{f}: {e}"
                );
                refused += 1;
            }
        }
        let p = plan(&project, "st").unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!p.services.is_empty(), "{f}");
        for s in &p.services {
            assert!(s.name.starts_with("st_"), "{f}: {}", s.name);
            assert_eq!(
                s.labels.get(NAMESPACE_LABEL).map(String::as_str),
                Some("st"),
                "{f}"
            );
            assert_eq!(
                s.labels.get(convert::IMAGE_LABEL),
                Some(&container(s).image),
                "{f}: {}",
                s.name
            );
            assert!(!task(s).networks.is_empty(), "{f}: {}", s.name);
            assert_eq!(
                container(s).labels.get(NAMESPACE_LABEL).map(String::as_str),
                Some("st"),
                "{f}: {}",
                s.name
            );
        }
        for n in created(&p.networks) {
            assert_eq!(
                n.labels.get(NAMESPACE_LABEL).map(String::as_str),
                Some("st")
            );
        }
        for c in created(&p.configs) {
            assert_eq!(
                c.labels.get(NAMESPACE_LABEL).map(String::as_str),
                Some("st")
            );
        }
        // `stack config` output is itself a loadable compose file that plans the same (in
        // the same directory, where the files it names are).
        let printed = dir.write("printed.yml", &project.yaml);
        let reloaded = load(&LoadOptions {
            files: vec![printed],
            env: BTreeMap::new(),
        })
        .unwrap_or_else(|e| panic!("{f}: reprinted: {e}"));
        let replanned = plan(&reloaded, "st").unwrap();
        assert_eq!(replanned.services, p.services, "{f}");
    }
    // Six of the dogvscat files mount a rexray/dobs volume.
    assert_eq!(refused, 6);
}

#[test]
fn corpus_voting_app() {
    let p = plan_corpus(&["voting-app.yml"], &[]);
    assert_eq!(
        names(&p),
        ["st_db", "st_redis", "st_result", "st_vote", "st_worker"]
    );
    let vote = svc(&p, "st_vote");
    assert_eq!(vote.replicas, 2);
    assert_eq!(ports(vote), [(8080, 80, "tcp".into(), "ingress".into())]);
    assert_eq!(ports(svc(&p, "st_result"))[0].0, 8081);
    assert_eq!(
        net_targets(svc(&p, "st_worker")),
        ["st_backend", "st_frontend"]
    );
    assert_eq!(task(vote).networks[0].aliases, ["vote"]);
    let db = container(svc(&p, "st_db"));
    assert_eq!(db.mounts[0].source, "st_db-data");
    assert_eq!(db.mounts[0].target, "/var/lib/postgresql/data");
    assert_eq!(
        db.mounts[0].volume_options.as_ref().unwrap().labels[NAMESPACE_LABEL],
        "st"
    );
    let nets: Vec<String> = created(&p.networks).into_iter().map(|n| n.name).collect();
    assert_eq!(nets, ["st_backend", "st_frontend"]);
    assert!(created(&p.networks).iter().all(|n| n.driver == "overlay"));
}

#[test]
fn corpus_atsea_external_secrets_and_targets() {
    let p = plan_corpus(&["atsea.yml"], &[]);
    let mut ext = external(&p.secrets);
    ext.sort();
    assert_eq!(
        ext,
        [
            "postgres_password",
            "revprox_cert",
            "revprox_key",
            "staging_token"
        ]
    );
    let gw = svc(&p, "st_payment_gateway");
    assert_eq!(
        constraints(gw),
        ["node.role == worker", "node.labels.pcidss == yes"]
    );
    let s = &container(gw).secrets[0];
    assert_eq!(s.secret_name, "staging_token");
    let file = s.file.as_ref().unwrap();
    assert_eq!(
        (file.name.as_str(), file.uid.as_str(), file.mode),
        ("payment_token", "0", 0o444)
    );
    assert_eq!(
        ports(svc(&p, "st_reverse_proxy")),
        [
            (80, 80, "tcp".into(), "ingress".into()),
            (443, 443, "tcp".into(), "ingress".into())
        ]
    );
    // A service naming no network is on STACK_default.
    assert_eq!(net_targets(svc(&p, "st_visualizer")), ["st_default"]);
    assert!(created(&p.networks).iter().any(|n| n.name == "st_default"));
    assert_eq!(svc(&p, "st_appserver").replicas, 2);
}

#[test]
fn corpus_dogvscat_anchors_merge_keys_and_override() {
    let p = plan_corpus(&["dogvscat-elk.yml", "dogvscat-elk.override.yml"], &[]);
    let logstash = svc(&p, "st_logstash");
    assert!(ports(logstash).contains(&(12201, 12201, "udp".into(), "ingress".into())));
    assert!(ports(logstash).contains(&(5000, 5000, "tcp".into(), "ingress".into())));
    // `<<: *default-opts` from an `x-` anchor brings the json-file log options.
    let log = task(logstash).log_driver.as_ref().unwrap();
    assert_eq!(
        (log.name.as_str(), log.options["max-size"].as_str()),
        ("json-file", "1m")
    );
    let kibana = svc(&p, "st_kibana");
    // A bcrypt hash in a default stays as written.
    assert_eq!(
        kibana.labels["traefik.http.middlewares.kibana-auth.basicauth.users"],
        "admin:$2y$05$oZcj4FgdSFEYNCH0EH/3Vu7Hp72gkvEadHzMsDhGFkbvS/ZrKMKfK"
    );
    assert_eq!(net_targets(kibana), ["proxy", "st_elk"]);
    assert_eq!(external(&p.networks), ["proxy"]);
    let configs: Vec<String> = created(&p.configs).into_iter().map(|c| c.name).collect();
    assert!(
        configs.contains(&"st_logstash_pipeline".to_string()),
        "{configs:?}"
    );
    let p = plan_corpus(&["dogvscat-elk.yml"], &[("KIBANA_PASSWORD", "pw")]);
    assert_eq!(
        svc(&p, "st_kibana").labels["traefik.http.middlewares.kibana-auth.basicauth.users"],
        "admin:pw"
    );
}

#[test]
fn corpus_dogvscat_global_host_ports_and_predefined_network() {
    let p = plan_corpus(&["dogvscat-proxy-global.yml"], &[]);
    let traefik = svc(&p, "st_traefik");
    assert_eq!(
        traefik.mode,
        shoal_proto::v1::ServiceMode::ModeGlobal as i32
    );
    assert_eq!(traefik.replicas, 0);
    assert_eq!(
        ports(traefik)[..2],
        [
            (80, 80, "tcp".into(), "host".into()),
            (443, 443, "tcp".into(), "host".into())
        ]
    );
    let p = plan_corpus(&["dogvscat-prune.yml"], &[]);
    let prune = svc(&p, "st_image-prune");
    assert_eq!(net_targets(prune), ["bridge"]);
    assert!(task(prune).networks[0].aliases.is_empty());
    let p = plan_corpus(&["dogvscat-menu.yml"], &[]);
    assert_eq!(
        p.warnings,
        ["service menu: key `build` is not supported by stack deploy; ignored"]
    );
    assert_eq!(svc(&p, "st_menu").replicas, 3);
}

#[test]
fn corpus_swarmprom_configs_and_healthcheck() {
    let p = plan_corpus(&["swarmprom.yml"], &[]);
    assert_eq!(p.services.len(), 8);
    assert_eq!(created(&p.configs).len(), 4);
    assert!(created(&p.configs)
        .iter()
        .all(|c| c.name.starts_with("st_")));
    assert_eq!(
        ports(svc(&p, "st_caddy"))
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        [3000, 9090, 9093, 9094]
    );
    let grafana = container(svc(&p, "st_grafana"));
    let hc = container(svc(&p, "st_caddy")).healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, ["CMD", "curl", "-f", "http://localhost:3000"]);
    assert_eq!(
        (hc.interval_ns, hc.timeout_ns, hc.retries),
        (5_000_000_000, 1_000_000_000, 5)
    );
    assert!(grafana
        .env
        .contains(&"GF_SECURITY_ADMIN_USER=admin".to_string()));
    assert_eq!(constraints(svc(&p, "st_grafana")), ["node.role == manager"]);
    assert_eq!(
        svc(&p, "st_cadvisor").mode,
        shoal_proto::v1::ServiceMode::ModeGlobal as i32
    );
}

#[test]
fn corpus_swarmprom_traefik_needs_its_variables() {
    let (_dir, paths) = corpus_project(&["swarmprom-traefik.yml"]);
    let err = load(&LoadOptions {
        files: paths,
        env: BTreeMap::new(),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("required variable"), "{err}");
    assert!(err.contains("not set"), "{err}");
    let p = plan_corpus(
        &["swarmprom-traefik.yml"],
        &[
            ("DOMAIN", "example.com"),
            ("ADMIN_USER", "admin"),
            ("ADMIN_PASSWORD", "pw"),
            ("HASHED_PASSWORD", "h"),
        ],
    );
    let grafana = svc(&p, "st_grafana");
    assert!(
        grafana
            .labels
            .values()
            .any(|v| v.contains("grafana.example.com")),
        "{:?}",
        grafana.labels
    );
    assert_eq!(external(&p.networks), ["traefik-public"]);
}

#[test]
fn corpus_vegasbrianc_interpolated_constraint_and_warnings() {
    let p = plan_corpus(&["vegasbrianc-pwd.yml"], &[("HOSTNAME", "node7")]);
    assert_eq!(
        constraints(svc(&p, "st_prometheus")),
        ["node.hostname == node7"]
    );
    assert!(p.warnings.contains(
        &"service prometheus: key `links` is not supported by stack deploy; ignored".to_string()
    ));
    let p = plan_corpus(&["vegasbrianc-traefik.yml"], &[]);
    assert_eq!(
        ports(svc(&p, "st_cadvisor")),
        [(8088, 8080, "tcp".into(), "ingress".into())]
    );
    assert!(created(&p.networks).iter().any(|n| n.name == "inbound"));
    let p = plan_corpus(&["vegasbrianc-prometheus.yml"], &[]);
    let prom = container(svc(&p, "st_prometheus"));
    let bind = prom
        .mounts
        .iter()
        .find(|m| m.target == "/etc/prometheus/")
        .unwrap();
    assert_eq!(bind.r#type, shoal_proto::v1::MountType::MountBind as i32);
    assert!(
        bind.source.ends_with("/prometheus") && bind.source.starts_with('/'),
        "{}",
        bind.source
    );
}

/// A project from text files in a temporary directory.
fn project(
    files: &[(&str, &str)],
    vars: &[(&str, &str)],
) -> (TempDir, Result<Project, ComposeError>) {
    let dir = TempDir::new();
    let mut paths = Vec::new();
    for (name, text) in files {
        let p = dir.write(name, text);
        if name.ends_with(".yml") {
            paths.push(p);
        }
    }
    let r = load(&LoadOptions {
        files: paths,
        env: env(vars),
    });
    (dir, r)
}

const FULL: &str = r#"
version: "3.9"
x-logging: &logging
  logging:
    driver: json-file
    options: {max-size: 10m, max-file: "3"}
services:
  web:
    <<: *logging
    image: "registry.example.com/web:${TAG:-latest}"
    command: python app.py --port "8080"
    entrypoint: ["/init"]
    environment:
      - MODE=${MODE}
      - FROM_PROCESS
      - PRICE=$$5
    env_file: web.env
    ports:
      - "8080:80"
      - target: 443
        published: 8443
        mode: host
    networks:
      front:
        aliases: [www]
      back:
    volumes:
      - data:/data
      - ./conf:/etc/web:ro
      - /cache
      - type: tmpfs
        target: /scratch
        tmpfs: {size: 64m, mode: 01777}
    secrets:
      - db_password
      - source: api_key
        target: /etc/api.key
        uid: "100"
        mode: 0400
    configs:
      - app_conf
    healthcheck:
      interval: 1m30s
      retries: 2
    user: "1000"
    working_dir: /srv
    stop_grace_period: 20s
    stop_signal: SIGINT
    cap_add: [NET_ADMIN]
    sysctls: [net.core.somaxconn=1024]
    extra_hosts: ["db.example:10.0.0.5", "v6=::1"]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
    init: true
    read_only: "true"
    depends_on:
      db:
        condition: service_healthy
    container_name: nope
    deploy:
      replicas: ${REPLICAS:-3}
      labels: {tier: front}
      resources:
        limits: {cpus: "0.5", memory: 512M}
        reservations: {cpus: 0.25, memory: 128M}
      placement:
        constraints: [node.labels.zone==a]
        preferences:
          - spread: node.labels.rack
        max_replicas_per_node: 2
      update_config:
        parallelism: 2
        delay: 10s
        failure_action: rollback
        monitor: 30s
        max_failure_ratio: 0.25
        order: start-first
      rollback_config:
        parallelism: 0
      restart_policy:
        condition: on-failure
        delay: 3s
        max_attempts: 4
        window: 2m
  db:
    image: postgres:16
    healthcheck:
      test: pg_isready -U postgres
    networks: [back]
    deploy:
      mode: global
      endpoint_mode: dnsrr
  job:
    image: busybox
    healthcheck:
      disable: true
    depends_on: [db]
networks:
  front:
    driver_opts:
      encrypted: ""
    attachable: true
    labels: [team=web]
  back:
    name: shared-back
    ipam:
      config:
        - subnet: 10.20.0.0/24
volumes:
  data:
    driver_opts: {type: none, o: bind, device: /srv/data}
    labels: {backup: "yes"}
secrets:
  db_password:
    file: ./db_password.txt
  api_key:
    external: true
    name: prod_api_key
configs:
  app_conf:
    name: app-conf-v2
    content: "listen 80"
"#;

fn full_project() -> (TempDir, Project) {
    let (dir, r) = project(
        &[
            ("stack.yml", FULL),
            ("web.env", "# env file\nFROM_FILE=1\nMODE=file\n"),
            ("db_password.txt", "hunter2"),
            (".env", "TAG=1.2\nREPLICAS=9\n"),
        ],
        &[
            ("FROM_PROCESS", "p"),
            ("REPLICAS", "4"),
            ("HOME", "/home/u"),
        ],
    );
    (dir, r.unwrap())
}

#[test]
fn full_file_converts_every_field() {
    use shoal_proto::v1::{
        update_config, DependencyCondition, MountType, RestartCondition, ServiceMode,
    };
    let (dir, project) = full_project();
    let p = plan(&project, "app").unwrap();
    assert_eq!(names(&p), ["app_db", "app_job", "app_web"]);
    let web = svc(&p, "app_web");
    let c = container(web);
    // .env fills TAG; the process's REPLICAS wins over .env's.
    assert_eq!(c.image, "registry.example.com/web:1.2");
    assert_eq!(web.replicas, 4);
    assert_eq!(c.command, ["/init"]);
    assert_eq!(c.args, ["python", "app.py", "--port", "8080"]);
    // env_file first, environment over it, `K` alone from the process, `$$` a dollar.
    assert_eq!(
        c.env,
        ["FROM_FILE=1", "FROM_PROCESS=p", "MODE=", "PRICE=$5"]
    );
    assert!(project
        .warnings
        .contains(&"The \"MODE\" variable is not set. Defaulting to a blank string.".to_string()));
    assert!(project.warnings.contains(
        &"service web: key `container_name` is not supported by stack deploy; ignored".to_string()
    ));
    assert_eq!(
        ports(web),
        [
            (8080, 80, "tcp".into(), "ingress".into()),
            (8443, 443, "tcp".into(), "host".into())
        ]
    );
    assert_eq!(web.endpoint.as_ref().unwrap().mode, "vip");
    let nets: Vec<_> = task(web)
        .networks
        .iter()
        .map(|n| (n.target.clone(), n.aliases.clone()))
        .collect();
    assert_eq!(
        nets,
        [
            (
                "app_front".to_string(),
                vec!["web".to_string(), "www".to_string()]
            ),
            ("shared-back".to_string(), vec!["web".to_string()]),
        ]
    );
    let m = &c.mounts;
    assert_eq!(m.len(), 4);
    assert_eq!(
        (m[0].r#type, m[0].source.as_str(), m[0].target.as_str()),
        (MountType::MountVolume as i32, "app_data", "/data")
    );
    let vo = m[0].volume_options.as_ref().unwrap();
    assert_eq!(vo.labels["backup"], "yes");
    assert_eq!(vo.labels[NAMESPACE_LABEL], "app");
    let drv = vo.driver_config.as_ref().unwrap();
    assert_eq!(
        (drv.name.as_str(), drv.options["device"].as_str()),
        ("local", "/srv/data")
    );
    assert_eq!(m[1].r#type, MountType::MountBind as i32);
    assert_eq!(m[1].source, dir.0.join("conf").display().to_string());
    assert!(m[1].read_only);
    assert_eq!(
        (m[2].r#type, m[2].source.as_str(), m[2].target.as_str()),
        (MountType::MountVolume as i32, "", "/cache")
    );
    let t = m[3].tmpfs_options.as_ref().unwrap();
    assert_eq!(
        (m[3].r#type, t.size_bytes, t.mode),
        (MountType::MountTmpfs as i32, 64 << 20, 0o1777)
    );
    let secrets: Vec<_> = c
        .secrets
        .iter()
        .map(|s| {
            let f = s.file.as_ref().unwrap();
            (s.secret_name.clone(), f.name.clone(), f.uid.clone(), f.mode)
        })
        .collect();
    assert_eq!(
        secrets,
        [
            (
                "prod_api_key".to_string(),
                "/etc/api.key".to_string(),
                "100".to_string(),
                0o400
            ),
            (
                "app_db_password".to_string(),
                "db_password".to_string(),
                "0".to_string(),
                0o444
            ),
        ]
    );
    let cfg = &c.configs[0];
    assert_eq!(cfg.config_name, "app-conf-v2");
    assert_eq!(cfg.file.as_ref().unwrap().name, "/app_conf");
    let hc = c.healthcheck.as_ref().unwrap();
    // No test: the image's, with these timings.
    assert!(hc.test.is_empty());
    assert_eq!((hc.interval_ns, hc.retries), (90_000_000_000, 2));
    assert_eq!(c.user, "1000");
    assert_eq!(c.dir, "/srv");
    assert_eq!(c.stop_grace_period_ns, 20_000_000_000);
    assert_eq!(c.stop_signal, "SIGINT");
    assert_eq!(c.capability_add, ["NET_ADMIN"]);
    assert_eq!(c.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(c.hosts, ["10.0.0.5 db.example", "::1 v6"]);
    let mut ul: Vec<_> = c
        .ulimits
        .iter()
        .map(|u| (u.name.clone(), u.soft, u.hard))
        .collect();
    ul.sort();
    assert_eq!(
        ul,
        [
            ("nofile".to_string(), 1024, 2048),
            ("nproc".to_string(), 512, 512)
        ]
    );
    assert!(c.init && c.read_only);
    let tk = task(web);
    let res = tk.resources.as_ref().unwrap();
    assert_eq!(res.limits.unwrap().nano_cpus, 500_000_000);
    assert_eq!(res.limits.unwrap().memory_bytes, 512 << 20);
    assert_eq!(res.reservations.unwrap().nano_cpus, 250_000_000);
    let pl = tk.placement.as_ref().unwrap();
    assert_eq!(pl.constraints, ["node.labels.zone==a"]);
    assert_eq!(pl.preferences, ["spread=node.labels.rack"]);
    assert_eq!(pl.max_replicas_per_node, 2);
    let up = web.update.as_ref().unwrap();
    assert_eq!(
        (
            up.parallelism,
            up.delay_ns,
            up.failure_action,
            up.monitor_ns,
            up.order
        ),
        (
            2,
            10_000_000_000,
            update_config::FailureAction::Rollback as i32,
            30_000_000_000,
            update_config::Order::StartFirst as i32
        )
    );
    assert!((up.max_failure_ratio - 0.25).abs() < 1e-6);
    assert_eq!(web.rollback.as_ref().unwrap().parallelism, 0);
    let r = tk.restart.as_ref().unwrap();
    assert_eq!(
        (r.condition, r.delay_ns, r.max_attempts, r.window_ns),
        (
            RestartCondition::RestartOnFailure as i32,
            3_000_000_000,
            4,
            120_000_000_000
        )
    );
    let log = tk.log_driver.as_ref().unwrap();
    assert_eq!(
        (
            log.options["max-size"].as_str(),
            log.options["max-file"].as_str()
        ),
        ("10m", "3")
    );
    assert_eq!(web.labels["tier"], "front");
    assert_eq!(web.depends_on[0].service, "app_db");
    assert_eq!(
        web.depends_on[0].condition,
        DependencyCondition::DependsHealthy as i32
    );

    let db = svc(&p, "app_db");
    assert_eq!((db.mode, db.replicas), (ServiceMode::ModeGlobal as i32, 0));
    assert_eq!(db.endpoint.as_ref().unwrap().mode, "dnsrr");
    assert_eq!(
        container(db).healthcheck.as_ref().unwrap().test,
        ["CMD-SHELL", "pg_isready -U postgres"]
    );
    let job = svc(&p, "app_job");
    assert_eq!(container(job).healthcheck.as_ref().unwrap().test, ["NONE"]);
    assert_eq!(
        job.depends_on[0].condition,
        DependencyCondition::DependsStarted as i32
    );
    assert_eq!(job.replicas, 1);
    assert_eq!(net_targets(job), ["app_default"]);

    let nets = created(&p.networks);
    let front = nets.iter().find(|n| n.name == "app_front").unwrap();
    assert!(front.encrypted && front.attachable);
    assert_eq!(front.driver, "overlay");
    assert_eq!(front.labels["team"], "web");
    let back = nets.iter().find(|n| n.name == "shared-back").unwrap();
    assert_eq!(back.subnet, "10.20.0.0/24");
    assert!(nets.iter().any(|n| n.name == "app_default"));
    let secrets = created(&p.secrets);
    assert_eq!(secrets.len(), 1);
    assert_eq!(
        (secrets[0].name.as_str(), secrets[0].data.as_slice()),
        ("app_db_password", &b"hunter2"[..])
    );
    assert_eq!(external(&p.secrets), ["prod_api_key"]);
    assert_eq!(created(&p.configs)[0].data, b"listen 80");
}

#[test]
fn stack_config_output_is_deterministic_and_interpolated() {
    let (_d, a) = full_project();
    let (_e, b) = full_project();
    assert_eq!(a.yaml, b.yaml);
    assert!(
        a.yaml.contains("registry.example.com/web:1.2"),
        "{}",
        a.yaml
    );
    assert!(a.yaml.contains("replicas: 4"), "{}", a.yaml);
    assert!(!a.yaml.contains("x-logging"));
    assert!(!a.yaml.contains("container_name"));
    // Services in name order.
    let db = a.yaml.find("  db:").unwrap();
    let web = a.yaml.find("  web:").unwrap();
    assert!(db < web);
}

#[test]
fn override_files_merge() {
    let (_d, r) = project(
        &[
            (
                "a.yml",
                "services:\n  web:\n    image: web:1\n    environment: [A=1]\n    ports: [\"80:80\"]\n    deploy: {replicas: 1, labels: [x=1]}\n",
            ),
            (
                "b.yml",
                "services:\n  web:\n    image: web:2\n    environment: {B: \"2\"}\n    ports: [\"443:443\"]\n    deploy: {replicas: 5, labels: {y: \"2\"}}\n",
            ),
        ],
        &[],
    );
    let p = plan(&r.unwrap(), "s").unwrap();
    let web = svc(&p, "s_web");
    assert_eq!(container(web).image, "web:2");
    assert_eq!(container(web).env, ["A=1", "B=2"]);
    assert_eq!(ports(web).len(), 2);
    assert_eq!(web.replicas, 5);
    assert_eq!(
        (web.labels["x"].as_str(), web.labels["y"].as_str()),
        ("1", "2")
    );
}

#[test]
fn errors_name_file_position_variable_and_service() {
    let (_d, r) = project(
        &[("bad.yml", "services:\n  web:\n    image: x\n   ports: [1\n")],
        &[],
    );
    let err = r.unwrap_err().to_string();
    assert!(err.contains("bad.yml:"), "{err}");
    let pos = err.split("bad.yml:").nth(1).unwrap();
    let mut nums = pos.split(':').take(2).map(|n| n.trim().parse::<usize>());
    assert!(
        nums.next().unwrap().is_ok() && nums.next().unwrap().is_ok(),
        "{err}"
    );

    let (_d, r) = project(
        &[("s.yml", "services:\n  web:\n    image: \"${X:?need X}\"\n")],
        &[],
    );
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("s.yml") && err.contains("services.web.image"),
        "{err}"
    );
    assert!(err.contains("X") && err.contains("need X"), "{err}");

    let (_d, r) = project(
        &[("s.yml", "services:\n  web:\n    deploy: {replicas: 2}\n")],
        &[],
    );
    let err = r.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: invalid image reference for service web: no image specified",
            _d.0.join("s.yml").display()
        )
    );

    let (_d, r) = project(
        &[(
            "s.yml",
            "services:\n  web:\n    image: x\n    ports: [\"80:80\", \"nope\"]\n",
        )],
        &[],
    );
    let err = plan(&r.unwrap(), "s").unwrap_err().to_string();
    assert!(err.contains("s.yml: services.web.ports[1]: "), "{err}");

    let (_d, r) = project(
        &[(
            "s.yml",
            "services:\n  web:\n    image: x\n    deploy: {mode: global, replicas: 2}\n",
        )],
        &[],
    );
    let err = plan(&r.unwrap(), "s").unwrap_err().to_string();
    assert!(
        err.contains("replicas can only be used with replicated"),
        "{err}"
    );

    let (_d, r) = project(
        &[(
            "s.yml",
            "services:\n  web:\n    image: x\n    networks: [ghost]\n",
        )],
        &[],
    );
    let err = plan(&r.unwrap(), "s").unwrap_err().to_string();
    assert!(err.contains("\"ghost\", which is not declared"), "{err}");

    let (_d, r) = project(
        &[(
            "s.yml",
            "services:\n  web:\n    image: x\n    volumes: [\"data:/d\"]\n",
        )],
        &[],
    );
    let err = plan(&r.unwrap(), "s").unwrap_err().to_string();
    assert!(
        err.contains("s.yml: services.web.volumes[0]: undefined volume \"data\""),
        "{err}"
    );

    // The manager's own checks run too, naming the service.
    let (_d, r) = project(&[("s.yml", "services:\n  web:\n    image: x\n    deploy: {placement: {constraints: [\"bogus\"]}}\n")], &[]);
    let err = plan(&r.unwrap(), "s").unwrap_err().to_string();
    assert!(err.contains("s.yml: service web: "), "{err}");
}

#[test]
fn externals_modes_and_warnings() {
    let (_d, r) = project(
        &[(
            "s.yml",
            r#"
services:
  app:
    image: app
    labels: [a=b]
    logging: {driver: syslog}
    ports: ["127.0.0.1:8080:80"]
    networks: [legacy, modern]
    volumes: [{type: volume, source: keep, target: /keep, volume: {nocopy: true}}]
    configs:
      - source: conf
        mode: "0440"
    secrets:
      - source: tok
        mode: 288
networks:
  legacy: {external: {name: old-net}}
  modern: {external: true, name: new-net}
volumes:
  keep: {external: true}
configs:
  conf: {external: true}
secrets:
  tok: {environment: TOKEN}
"#,
        )],
        &[("TOKEN", "t0k")],
    );
    let p = plan(&r.unwrap(), "s").unwrap();
    let app = svc(&p, "s_app");
    assert_eq!(net_targets(app), ["new-net", "old-net"]);
    let mut ext = external(&p.networks);
    ext.sort();
    assert_eq!(ext, ["new-net", "old-net"]);
    let c = container(app);
    assert_eq!(c.mounts[0].source, "keep");
    assert!(c.mounts[0].volume_options.as_ref().unwrap().no_copy);
    assert_eq!(c.configs[0].config_name, "conf");
    assert_eq!(c.configs[0].file.as_ref().unwrap().mode, 0o440);
    assert_eq!(c.secrets[0].file.as_ref().unwrap().mode, 288);
    assert_eq!(created(&p.secrets)[0].data, b"t0k");
    assert!(task(app).log_driver.is_none());
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    // The service-level `labels` are the containers', beside the stack's namespace label.
    assert_eq!(c.labels["a"], "b");
    assert_eq!(c.labels[NAMESPACE_LABEL], "s");
    assert!(!app.labels.contains_key("a"));
    assert!(p.warnings.iter().any(|w| w.contains("syslog")));
    assert!(p.warnings.iter().any(|w| w.contains("127.0.0.1")));
    assert_eq!(ports(app), [(8080, 80, "tcp".into(), "ingress".into())]);
}

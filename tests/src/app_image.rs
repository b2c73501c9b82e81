//! The real application of the rolling-update tests: Debian bookworm's python3 (built from Debian
//! packages with `mmdebstrap`) running `/app/server.py` (`app_server.py` beside this file), an HTTP
//! server that answers with its version and hostname.
//!
//! The Debian part is built once per machine and cached outside the repository, keyed by the
//! package list ([`cache_dir`]); the app layer on top is small and rebuilt every time, so editing
//! the script never needs the network. When `mmdebstrap` or the Debian mirror is unavailable,
//! [`prepare`] returns [`Unavailable`] and the tests that need the image skip with its reason.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::image_fixture::{self, sha256, BuiltImage, Layer};
use crate::testbed::{check_output, Cluster, Host, REGISTRY_PORT};

/// The Debian suite the image is made of.
pub const SUITE: &str = "bookworm";
/// The packages `mmdebstrap --variant=extract` unpacks (with their dependencies): python3 and a
/// `/bin/sh` for `--health-cmd` (CMD-SHELL).
pub const PACKAGES: &[&str] = &["python3-minimal", "dash"];
/// The server script, baked in as `/app/server.py`.
pub const SERVER_PY: &str = include_str!("app_server.py");
/// The image's command.
pub const APP_CMD: [&str; 2] = ["/usr/bin/python3", "/app/server.py"];
/// The port the app listens on inside its container (env `PORT` changes it).
pub const APP_PORT: u16 = 80;
/// A `--health-cmd` that passes once `/healthz` answers 200.
pub const HEALTH_CMD: &str = "python3 /app/server.py check";
/// The repository the tests push the app to.
pub const APP_REPO: &str = "shoal/app:latest";
/// Bump when the filtering of the Debian tree changes, so caches built before are not reused.
const FILTER_REVISION: u32 = 1;

/// The image cannot be built on this machine (no mmdebstrap, no mirror); tests skip with it.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the Debian test image is unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Whether `e` says the image cannot be built here (rather than a bug).
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Unavailable>().is_some()
}

/// Where built Debian trees are kept: `$SHOAL_IMAGE_CACHE`, else `/var/cache/shoal-test-images`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SHOAL_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/shoal-test-images"))
}

/// The cache key of a Debian tree called `name` made of `packages`: a content hash of the recipe,
/// so a changed package list never reuses an old tree.
fn cache_key_for(name: &str, packages: &[&str]) -> String {
    let what = format!(
        "{SUITE}|extract|{}|filter{FILTER_REVISION}",
        packages.join(",")
    );
    let digest = sha256(what.as_bytes());
    let hex = digest.trim_start_matches("sha256:");
    format!("{name}-{SUITE}-{}", &hex[..16])
}

/// The path of the cached base layer (an uncompressed tar) for the current package list.
pub fn base_layer_path() -> PathBuf {
    base_layer_path_for("python3", PACKAGES)
}

/// The path of the cached base layer of the tree `name` made of `packages`.
fn base_layer_path_for(name: &str, packages: &[&str]) -> PathBuf {
    cache_dir().join(format!("{}.tar", cache_key_for(name, packages)))
}

/// The cached gzip of the base layer at `base` (what is pushed), beside it.
fn gz_path(base: &Path) -> PathBuf {
    let mut p = base.as_os_str().to_owned();
    p.push(".gz");
    PathBuf::from(p)
}

/// The cached diff id (`sha256:` of the uncompressed tar) of the base layer at `base`.
fn diff_id_path(base: &Path) -> PathBuf {
    let mut p = base.as_os_str().to_owned();
    p.push(".diffid");
    PathBuf::from(p)
}

/// Whether the cache holds everything for `base` (the gzip is renamed into place last).
fn cached(base: &Path) -> bool {
    base.is_file() && diff_id_path(base).is_file() && gz_path(base).is_file()
}

/// Makes sure the Debian base layer is in the cache, building it with mmdebstrap if needed (a
/// minute, once per machine; concurrent callers wait for one build); returns the path of its
/// tar. Fails with [`Unavailable`] when it cannot be built here.
pub fn prepare() -> Result<PathBuf> {
    prepare_tree("python3", PACKAGES)
}

/// [`prepare`] for any Debian tree: `name` (the cache file's prefix) made of `packages` and
/// their dependencies.
fn prepare_tree(name: &str, packages: &[&str]) -> Result<PathBuf> {
    let path = base_layer_path_for(name, packages);
    if cached(&path) {
        return Ok(path);
    }
    let dir = cache_dir();
    fs::create_dir_all(&dir)
        .map_err(|e| Unavailable(format!("cannot create the cache {}: {e}", dir.display())))?;
    let lock_path = dir.join(format!("{}.lock", cache_key_for(name, packages)));
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // Two test processes may both miss the cache: one builds, the other waits for it here.
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", lock_path.display()))?;
    if cached(&path) {
        return Ok(path);
    }
    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&dir)
        .context("creating a build directory in the image cache")?;
    if !path.is_file() {
        build_base(work.path(), &path, packages)?;
    }
    // Gzipped once here: the test binaries are unoptimised, and gzip of the Debian tree in
    // every test would cost seconds each.
    let layer =
        Layer::from_tar(fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
    let tmp_id = work.path().join("diffid");
    fs::write(&tmp_id, format!("{}\n", layer.diff_id)).context("writing the diff id")?;
    fs::rename(&tmp_id, diff_id_path(&path)).context("caching the diff id")?;
    let tmp_gz = work.path().join("base.tar.gz");
    fs::write(&tmp_gz, &layer.gz).context("writing the gzipped layer")?;
    fs::rename(&tmp_gz, gz_path(&path)).context("caching the gzipped layer")?;
    Ok(path)
}

/// Runs mmdebstrap in `work` and leaves the filtered tree at `path`.
fn build_base(work: &Path, path: &Path, packages: &[&str]) -> Result<()> {
    let mmdebstrap = which("mmdebstrap").ok_or_else(|| {
        Unavailable("mmdebstrap is not installed (apt-get install mmdebstrap)".into())
    })?;
    let raw = work.join("debian.tar");
    let out = Command::new(&mmdebstrap)
        .arg("--variant=extract")
        .arg(format!("--include={}", packages.join(",")))
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg(SUITE)
        .arg(&raw)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", mmdebstrap.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Unavailable(format!(
            "mmdebstrap {SUITE} failed ({}), is the Debian mirror reachable? {}",
            out.status,
            tail.join(" | ")
        ))
        .into());
    }
    let filtered = work.join("base.tar");
    filter_tree(&raw, &filtered)?;
    // Renamed into place whole, so a reader never sees half a layer.
    fs::rename(&filtered, path)
        .with_context(|| format!("moving the base layer to {}", path.display()))?;
    Ok(())
}

/// The cached base layer at `base` as pushed: its gzip and diff id from the cache (prepared by
/// [`prepare`]); `tar` is left empty (read the file at `base` for the tree itself).
pub fn base_layer(base: &Path) -> Result<Layer> {
    let gz = fs::read(gz_path(base)).with_context(|| {
        format!(
            "reading {} (run app_image::prepare first)",
            gz_path(base).display()
        )
    })?;
    let diff_id = fs::read_to_string(diff_id_path(base))
        .with_context(|| format!("reading {}", diff_id_path(base).display()))?
        .trim()
        .to_string();
    if !diff_id.starts_with("sha256:") {
        bail!(
            "{}: not a diff id: {diff_id:?}",
            diff_id_path(base).display()
        );
    }
    Ok(Layer {
        tar: Vec::new(),
        digest: sha256(&gz),
        gz,
        diff_id,
    })
}

/// Whether a path of the Debian tree stays in the image: no device nodes (the runtime gives its
/// own /dev), no docs or package-manager leftovers.
fn keep(path: &str, kind: tar::EntryType) -> bool {
    if matches!(
        kind,
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
    ) {
        return false;
    }
    const DROPPED: [&str; 6] = [
        "dev/",
        "usr/share/doc/",
        "usr/share/man/",
        "usr/share/locale/",
        "var/cache/apt/",
        "var/lib/apt/lists/",
    ];
    !path.is_empty() && !DROPPED.iter().any(|d| path.starts_with(d))
}

/// Copies mmdebstrap's tar to `to` with relative paths (no `./`) and only what [`keep`] keeps.
fn filter_tree(from: &Path, to: &Path) -> Result<()> {
    let input = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut archive = tar::Archive::new(input);
    let output = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut builder = tar::Builder::new(output);
    for entry in archive.entries().context("reading mmdebstrap's tar")? {
        let mut entry = entry.context("reading mmdebstrap's tar")?;
        let raw_path = entry.path().context("entry path")?.into_owned();
        let path = raw_path
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let kind = entry.header().entry_type();
        if !keep(&path, kind) {
            continue;
        }
        let mut header = entry.header().clone();
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .context("link target")?
                    .ok_or_else(|| anyhow!("{path}: link without a target"))?
                    .into_owned();
                let target = match kind {
                    // Hard link targets are archive paths: relative like every other path.
                    tar::EntryType::Link => {
                        PathBuf::from(target.to_string_lossy().trim_start_matches("./"))
                    }
                    _ => target,
                };
                builder
                    .append_link(&mut header, &path, &target)
                    .with_context(|| format!("copying link {path}"))?;
            }
            _ => {
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .with_context(|| format!("reading {path}"))?;
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, &path, &data[..])
                    .with_context(|| format!("copying {path}"))?;
            }
        }
    }
    builder.finish().context("finishing the base layer")?;
    Ok(())
}

/// The app layer: `/app/server.py`, and the `/etc/passwd` and `/etc/group` an extracted (not
/// installed) Debian tree lacks.
pub fn app_layer() -> Result<Layer> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)
            .with_context(|| format!("app layer: {path}"))
    };
    add("app", tar::EntryType::Directory, 0o755, b"")?;
    add(
        "app/server.py",
        tar::EntryType::Regular,
        0o755,
        SERVER_PY.as_bytes(),
    )?;
    add("etc", tar::EntryType::Directory, 0o755, b"")?;
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    add(
        "etc/group",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:\nnogroup:x:65534:\n",
    )?;
    add("root", tar::EntryType::Directory, 0o700, b"")?;
    Layer::from_tar(b.into_inner().context("app layer")?)
}

/// The app image from the cached base layer at `base`: Debian, then the app layer; `Cmd` runs the
/// server, `Env` has `PATH` and `PYTHONUNBUFFERED`.
pub fn app_image(base: &Path) -> Result<BuiltImage> {
    let layers = vec![base_layer(base)?, app_layer()?];
    let created_by = format!(
        "mmdebstrap --variant=extract --include={} {SUITE}",
        PACKAGES.join(",")
    );
    let config = json!({
        "Env": [image_fixture::PATH_ENV, "PYTHONUNBUFFERED=1"],
        "Cmd": APP_CMD,
        "WorkingDir": "/app",
    });
    assemble(layers, config, &created_by, "shoal-fixture: /app/server.py")
}

/// Builds (or finds in the cache) the app image and pushes it to the test registry running on
/// `registry` as [`APP_REPO`] (`shoal-fixture push-app` inside the registry host, which alone
/// reaches it); returns the image reference as agents pull it. [`Unavailable`] when the image
/// cannot be built here.
pub fn push_app(fixture: &Path, registry: &Host) -> Result<String> {
    let base = prepare()?;
    let reg = format!("{}:{REGISTRY_PORT}", registry.ip());
    let out = registry.run(
        fixture,
        [
            "push-app",
            "--registry",
            &reg,
            "--image",
            APP_REPO,
            "--base",
            &base.to_string_lossy(),
        ],
    )?;
    check_output(&out, "shoal-fixture push-app")?;
    Ok(format!("{reg}/{APP_REPO}"))
}

/// [`push_app`] to a `Cluster`'s registry.
pub fn push_app_to(c: &Cluster) -> Result<String> {
    push_app(&c.bins.fixture, &c.registry)
}

/// The uid and gid of the `redis` user of the redis image (what owns `/data`).
pub const REDIS_UID: u32 = 999;
/// The uid and gid of the `postgres` user of the postgres image (what owns its data dir).
pub const POSTGRES_UID: u32 = 998;
/// The uid and gid of `www-data`, nginx's worker user.
pub const WWW_DATA_UID: u32 = 33;
/// Where the postgres image keeps its cluster (`PGDATA`).
pub const POSTGRES_DATA: &str = "/var/lib/postgresql/data";

/// The nginx image's `/etc/nginx/nginx.conf`: foreground, logs on stderr, temp files in /tmp (an
/// extracted tree has no /var/lib/nginx made by the package's scripts), sites in conf.d.
const NGINX_CONF: &str = "user www-data;
worker_processes 1;
daemon off;
pid /tmp/nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    include /etc/nginx/conf.d/*.conf;
}
";

/// The nginx image's own site, replaced by a stack's config file at the same path.
pub const NGINX_DEFAULT_SITE: &str =
    "server {\n    listen 80 default_server;\n    location / { return 200 \"nginx default\\n\"; }\n}\n";

/// The postgres image's entrypoint: initdb into an empty `PGDATA` (as the image's user,
/// `postgres`) with the superuser password read from `POSTGRES_PASSWORD_FILE` (a secret), md5 for
/// network clients, then postgres listening on every address. dash only: the image has no
/// coreutils.
const POSTGRES_ENTRYPOINT: &str = r#"#!/bin/sh
set -e
PGBIN=/usr/lib/postgresql/15/bin
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD_FILE:-}" ] || [ ! -r "$POSTGRES_PASSWORD_FILE" ]; then
        echo "entrypoint: POSTGRES_PASSWORD_FILE must name a readable file (a secret)" >&2
        exit 1
    fi
    "$PGBIN/initdb" -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" \
        --pwfile="$POSTGRES_PASSWORD_FILE" --auth-local=trust --auth-host=md5 \
        -E UTF8 --no-locale >&2
    echo "host all all 0.0.0.0/0 md5" >> "$PGDATA/pg_hba.conf"
fi
exec "$PGBIN/postgres" -D "$PGDATA" -c listen_addresses='*' \
    -c unix_socket_directories=/tmp "$@"
"#;

/// One entry of a hand-made layer.
struct Entry<'a> {
    path: &'a str,
    dir: bool,
    mode: u32,
    owner: u32,
    data: &'a [u8],
}

impl<'a> Entry<'a> {
    fn dir(path: &'a str, mode: u32, owner: u32) -> Self {
        Entry {
            path,
            dir: true,
            mode,
            owner,
            data: b"",
        }
    }

    fn file(path: &'a str, mode: u32, data: &'a [u8]) -> Self {
        Entry {
            path,
            dir: false,
            mode,
            owner: 0,
            data,
        }
    }
}

/// A deterministic layer of `entries` (uid and gid both `owner`, mtime 0).
fn entries_layer(entries: &[Entry<'_>]) -> Result<Layer> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(if e.dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(e.mode);
        h.set_uid(u64::from(e.owner));
        h.set_gid(u64::from(e.owner));
        h.set_mtime(0);
        h.set_size(e.data.len() as u64);
        b.append_data(&mut h, e.path, e.data)
            .with_context(|| format!("layer entry {}", e.path))?;
    }
    Layer::from_tar(b.into_inner().context("finishing a layer")?)
}

/// The Debian service images of the stack tests (issue 12), built like the app image: a cached
/// mmdebstrap tree of the Debian packages, then a small layer of users, directories and config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceImage {
    /// redis-server; `CMD redis-server --protected-mode no --dir /data`, as user `redis`, which
    /// owns `/data`.
    Redis,
    /// postgresql-15; an entrypoint that initdb's into an empty `PGDATA` with the password of
    /// `POSTGRES_PASSWORD_FILE`, as user `postgres`, which owns the data dir.
    Postgres,
    /// nginx-light; sites from `/etc/nginx/conf.d/*.conf` (a stack's config goes to
    /// `/etc/nginx/conf.d/default.conf`).
    Nginx,
}

impl ServiceImage {
    /// Every service image.
    pub const ALL: [ServiceImage; 3] = [
        ServiceImage::Redis,
        ServiceImage::Postgres,
        ServiceImage::Nginx,
    ];

    /// Its short name: `redis`, `postgres`, `nginx` (cache files, `shoal-fixture --kind`).
    pub fn name(self) -> &'static str {
        match self {
            ServiceImage::Redis => "redis",
            ServiceImage::Postgres => "postgres",
            ServiceImage::Nginx => "nginx",
        }
    }

    /// The image called `name` (see [`ServiceImage::name`]).
    pub fn from_name(name: &str) -> Option<ServiceImage> {
        ServiceImage::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The Debian packages its tree is made of (with their dependencies); dash for `/bin/sh`
    /// (CMD-SHELL healthchecks, the postgres entrypoint).
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            ServiceImage::Redis => &["redis-server", "dash"],
            ServiceImage::Postgres => &["postgresql-15", "dash"],
            ServiceImage::Nginx => &["nginx-light", "dash"],
        }
    }

    /// The repository the tests push it to: `shoal/NAME:latest`.
    pub fn repo(self) -> String {
        format!("shoal/{}:latest", self.name())
    }

    /// Makes sure its Debian tree is in the cache (mmdebstrap, once per machine); the path of the
    /// tree's tar. [`Unavailable`] when it cannot be built here.
    pub fn prepare(self) -> Result<PathBuf> {
        prepare_tree(self.name(), self.packages())
    }

    /// The layer on top of the Debian tree: users, owned directories, config files.
    pub fn layer(self) -> Result<Layer> {
        let passwd;
        let group;
        let mut entries = vec![
            Entry::dir("etc", 0o755, 0),
            Entry::dir("root", 0o700, 0),
            Entry::dir("tmp", 0o1777, 0),
        ];
        match self {
            ServiceImage::Redis => {
                passwd = format!(
                    "{PASSWD_BASE}redis:x:{REDIS_UID}:{REDIS_UID}:redis:/data:/usr/sbin/nologin\n"
                );
                group = format!("{GROUP_BASE}redis:x:{REDIS_UID}:\n");
                entries.push(Entry::dir("data", 0o755, REDIS_UID));
            }
            ServiceImage::Postgres => {
                passwd = format!("{PASSWD_BASE}postgres:x:{POSTGRES_UID}:{POSTGRES_UID}:postgres:/var/lib/postgresql:/bin/sh\n");
                group = format!("{GROUP_BASE}postgres:x:{POSTGRES_UID}:\n");
                entries.extend([
                    Entry::dir("var", 0o755, 0),
                    Entry::dir("var/lib", 0o755, 0),
                    Entry::dir("var/lib/postgresql", 0o755, POSTGRES_UID),
                    Entry::dir(&POSTGRES_DATA[1..], 0o700, POSTGRES_UID),
                    Entry::dir("var/run", 0o755, 0),
                    Entry::dir("var/run/postgresql", 0o2775, POSTGRES_UID),
                    Entry::dir("usr", 0o755, 0),
                    Entry::dir("usr/local", 0o755, 0),
                    Entry::dir("usr/local/bin", 0o755, 0),
                    Entry::file(
                        "usr/local/bin/docker-entrypoint.sh",
                        0o755,
                        POSTGRES_ENTRYPOINT.as_bytes(),
                    ),
                ]);
            }
            ServiceImage::Nginx => {
                passwd = format!("{PASSWD_BASE}www-data:x:{WWW_DATA_UID}:{WWW_DATA_UID}:www-data:/var/www:/usr/sbin/nologin\n");
                group = format!("{GROUP_BASE}www-data:x:{WWW_DATA_UID}:\n");
                entries.extend([
                    Entry::dir("etc/nginx", 0o755, 0),
                    Entry::file("etc/nginx/nginx.conf", 0o644, NGINX_CONF.as_bytes()),
                    Entry::dir("etc/nginx/conf.d", 0o755, 0),
                    Entry::file(
                        "etc/nginx/conf.d/default.conf",
                        0o644,
                        NGINX_DEFAULT_SITE.as_bytes(),
                    ),
                    Entry::dir("var", 0o755, 0),
                    Entry::dir("var/log", 0o755, 0),
                    Entry::dir("var/log/nginx", 0o755, 0),
                    Entry::dir("var/lib", 0o755, 0),
                    Entry::dir("var/lib/nginx", 0o755, 0),
                ]);
            }
        }
        entries.push(Entry::file("etc/passwd", 0o644, passwd.as_bytes()));
        entries.push(Entry::file("etc/group", 0o644, group.as_bytes()));
        entries_layer(&entries)
    }

    /// The image config's `config` object: user, command, environment.
    fn config(self) -> serde_json::Value {
        match self {
            ServiceImage::Redis => json!({
                "Env": [image_fixture::PATH_ENV],
                "User": "redis",
                "Cmd": ["redis-server", "--protected-mode", "no", "--dir", "/data"],
                "WorkingDir": "/data",
                "ExposedPorts": {"6379/tcp": {}},
            }),
            ServiceImage::Postgres => json!({
                "Env": [image_fixture::PATH_ENV, format!("PGDATA={POSTGRES_DATA}")],
                "User": "postgres",
                "Entrypoint": ["/usr/local/bin/docker-entrypoint.sh"],
                "ExposedPorts": {"5432/tcp": {}},
            }),
            ServiceImage::Nginx => json!({
                "Env": [image_fixture::PATH_ENV],
                "Cmd": ["/usr/sbin/nginx"],
                "ExposedPorts": {"80/tcp": {}},
            }),
        }
    }

    /// The image from its cached Debian tree at `base` (see [`ServiceImage::prepare`]).
    pub fn image(self, base: &Path) -> Result<BuiltImage> {
        let layers = vec![base_layer(base)?, self.layer()?];
        let created_by = format!(
            "mmdebstrap --variant=extract --include={} {SUITE}",
            self.packages().join(",")
        );
        assemble(
            layers,
            self.config(),
            &created_by,
            "shoal-fixture: users, directories, config",
        )
    }
}

/// The users every service image has, before its own.
const PASSWD_BASE: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
/// The groups every service image has, before its own.
const GROUP_BASE: &str = "root:x:0:\nnogroup:x:65534:\n";

/// An image of `layers` (the Debian tree first, made by `created_by`; then the layer
/// `layer_by` describes) with `config` as its runtime config.
fn assemble(
    layers: Vec<Layer>,
    config: serde_json::Value,
    created_by: &str,
    layer_by: &str,
) -> Result<BuiltImage> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": [
            {"created_by": created_by},
            {"created_by": layer_by},
        ],
    }))
    .context("encode config")?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": image_fixture::media::MANIFEST,
        "config": { "mediaType": image_fixture::media::CONFIG, "digest": config_digest, "size": config.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": image_fixture::media::LAYER_GZIP, "digest": l.digest, "size": l.gz.len()
        })).collect::<Vec<_>>(),
    }))
    .context("encode manifest")?;
    Ok(BuiltImage {
        manifest_digest: sha256(&manifest),
        layers,
        config,
        config_digest,
        manifest,
    })
}

/// Builds (or finds in the cache) `kind`'s image and pushes it to the test registry running on
/// `registry` as [`ServiceImage::repo`] (`shoal-fixture push-service`, inside the registry host);
/// returns the reference agents pull. [`Unavailable`] when it cannot be built here.
pub fn push_service_image(fixture: &Path, registry: &Host, kind: ServiceImage) -> Result<String> {
    let base = kind.prepare()?;
    let reg = format!("{}:{REGISTRY_PORT}", registry.ip());
    let repo = kind.repo();
    let out = registry.run(
        fixture,
        [
            "push-service",
            "--registry",
            &reg,
            "--image",
            &repo,
            "--kind",
            kind.name(),
            "--base",
            &base.to_string_lossy(),
        ],
    )?;
    check_output(&out, "shoal-fixture push-service")?;
    Ok(format!("{reg}/{repo}"))
}

/// [`push_service_image`] to a `Cluster`'s registry.
pub fn push_service_image_to(c: &Cluster, kind: ServiceImage) -> Result<String> {
    push_service_image(&c.bins.fixture, &c.registry, kind)
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Fails unless `e` is [`Unavailable`]; prints why a test is skipped when it is.
pub fn skip_if_unavailable(test: &str, e: anyhow::Error) -> Result<()> {
    if is_unavailable(&e) {
        eprintln!("skipping {test}: {e:#}");
        return Ok(());
    }
    bail!(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn keep_drops_devices_docs_and_apt_leftovers() {
        assert!(keep("usr/bin/python3.11", tar::EntryType::Regular));
        assert!(!keep("dev/null", tar::EntryType::Char));
        assert!(!keep("dev/fd", tar::EntryType::Symlink));
        assert!(!keep(
            "usr/share/doc/dash/copyright",
            tar::EntryType::Regular
        ));
        assert!(!keep("var/lib/apt/lists/x", tar::EntryType::Regular));
        assert!(!keep("", tar::EntryType::Directory));
    }

    #[test]
    fn cache_key_names_suite_and_changes_with_packages() {
        let k = cache_key_for("python3", PACKAGES);
        assert!(k.starts_with("python3-bookworm-"), "{k}");
        assert_eq!(k, cache_key_for("python3", PACKAGES));
        assert_ne!(k, cache_key_for("python3", &["python3-minimal"]));
        assert!(base_layer_path().starts_with(cache_dir()));
    }

    #[test]
    fn app_layer_is_deterministic_and_holds_the_script() {
        let a = app_layer().expect("layer");
        let b = app_layer().expect("layer");
        assert_eq!(a.digest, b.digest);
        let mut archive = tar::Archive::new(&a.tar[..]);
        let mut found = false;
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.path().expect("path").to_string_lossy() == "app/server.py" {
                let mut text = String::new();
                entry.read_to_string(&mut text).expect("read");
                assert_eq!(text, SERVER_PY);
                found = true;
            }
        }
        assert!(found, "app/server.py missing");
    }

    /// The image goes into a real registry (Debian's docker-registry on loopback) and its
    /// manifest comes back with the same digest: what `shoal-fixture push-app` does.
    #[test]
    fn app_image_pushes_to_a_registry() {
        if !crate::registry::available() {
            eprintln!("skipping: docker-registry is not installed");
            return;
        }
        let base = match prepare() {
            Ok(p) => p,
            Err(e) if is_unavailable(&e) => {
                eprintln!("skipping: {e:#}");
                return;
            }
            Err(e) => panic!("{e:#}"),
        };
        let image = app_image(&base).expect("image");
        let reg = crate::registry::Registry::start().expect("registry");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let digest = rt
            .block_on(image_fixture::push_image(reg.addr(), APP_REPO, &image))
            .expect("push");
        assert_eq!(digest, image.manifest_digest);
        let mut s = TcpStream::connect(reg.addr()).expect("connect");
        s.write_all(
            format!(
                "GET /v2/shoal/app/manifests/latest HTTP/1.0\r\nHost: {}\r\nAccept: {}\r\n\r\n",
                reg.addr(),
                image_fixture::media::MANIFEST
            )
            .as_bytes(),
        )
        .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        assert!(
            text.to_ascii_lowercase()
                .contains(&format!("docker-content-digest: {}", image.manifest_digest)),
            "{text}"
        );
    }

    /// One HTTP/1.0 GET; (status line, body).
    fn get(port: u16, path: &str) -> std::io::Result<(String, String)> {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        ))
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    }

    /// Builds the real image (mmdebstrap, once per machine), unpacks its layers and runs the
    /// server in a chroot of them on loopback: answers, counts, health both ways, SIGTERM.
    #[test]
    fn image_builds_and_the_server_answers_in_a_chroot_of_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root (mmdebstrap, chroot)");
            return;
        }
        let base = match prepare() {
            Ok(p) => p,
            Err(e) if is_unavailable(&e) => {
                eprintln!("skipping: {e:#}");
                return;
            }
            Err(e) => panic!("{e:#}"),
        };
        let image = app_image(&base).expect("image");
        assert_eq!(image.layers.len(), 2);
        let root = tempfile::tempdir().expect("tempdir");
        let base_tar = fs::read(&base).expect("base tar");
        assert_eq!(image.layers[0].diff_id, sha256(&base_tar));
        for tar in [&base_tar, &image.layers[1].tar] {
            tar::Archive::new(&tar[..])
                .unpack(root.path())
                .expect("unpack");
        }
        assert!(root.path().join("bin/sh").exists(), "no /bin/sh");
        assert!(root.path().join("usr/bin/python3").exists(), "no python3");
        assert!(
            !root.path().join("dev/null").exists(),
            "device nodes shipped"
        );

        let chroot = which("chroot").expect("chroot (coreutils) in PATH");
        for (healthy, want) in [("always", " 200 "), ("never", " 503 ")] {
            let port = free_port();
            let mut server = Command::new(&chroot)
                .arg(root.path())
                .args(APP_CMD)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("VERSION", "v7")
                .env("HEALTHY", healthy)
                .env("PORT", port.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("chroot python3");
            let start = Instant::now();
            let (status, body) = loop {
                match get(port, "/") {
                    Ok(r) => break r,
                    Err(e) if start.elapsed() < Duration::from_secs(20) => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        let _ = server.kill();
                        panic!("the server never answered: {e}");
                    }
                }
            };
            assert!(status.contains(" 200 "), "{status}");
            assert!(body.starts_with("v7 "), "{body:?}");
            get(port, "/").expect("second GET");
            let (_, count) = get(port, "/count").expect("count");
            assert_eq!(count.trim(), "v7 2");
            let (health, _) = get(port, "/healthz").expect("healthz");
            assert!(health.contains(want), "HEALTHY={healthy}: {health}");
            let check = Command::new(&chroot)
                .arg(root.path())
                .args(["/bin/sh", "-c", HEALTH_CMD])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("PORT", port.to_string())
                .output()
                .expect("health check");
            assert_eq!(
                check.status.success(),
                healthy == "always",
                "HEALTHY={healthy}: check said {}",
                String::from_utf8_lossy(&check.stdout)
            );

            // SIGTERM: a request sent just before is still answered, then the server exits 0.
            let mut pending = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(server.id() as i32),
                nix::sys::signal::SIGTERM,
            )
            .expect("SIGTERM");
            pending
                .write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
                .expect("write");
            pending
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut answer = String::new();
            pending.read_to_string(&mut answer).expect("read");
            assert!(
                answer.contains("v7 "),
                "in-flight request dropped: {answer:?}"
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            let status = loop {
                if let Some(s) = server.try_wait().expect("wait") {
                    break s;
                }
                assert!(Instant::now() < deadline, "server ignored SIGTERM");
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(status.success(), "exit {status}");
        }
    }

    /// Entries of a layer: path -> (uid, mode, content).
    fn layer_entries(layer: &Layer) -> std::collections::BTreeMap<String, (u64, u32, String)> {
        let mut out = std::collections::BTreeMap::new();
        let mut archive = tar::Archive::new(&layer.tar[..]);
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let uid = entry.header().uid().expect("uid");
            let mode = entry.header().mode().expect("mode");
            let mut text = String::new();
            entry.read_to_string(&mut text).expect("read");
            out.insert(path, (uid, mode, text));
        }
        out
    }

    #[test]
    fn service_image_layers_have_their_users_dirs_and_configs() {
        for kind in ServiceImage::ALL {
            assert_eq!(ServiceImage::from_name(kind.name()), Some(kind));
            let key = cache_key_for(kind.name(), kind.packages());
            assert!(
                key.starts_with(&format!("{}-bookworm-", kind.name())),
                "{key}"
            );
            let a = kind.layer().expect("layer");
            assert_eq!(a.digest, kind.layer().expect("layer").digest, "{kind:?}");
            let e = layer_entries(&a);
            assert!(e["etc/passwd"].2.starts_with("root:x:0:0:"), "{kind:?}");
            assert_eq!(e["tmp"].1, 0o1777);
        }
        assert_eq!(ServiceImage::from_name("mysql"), None);
        let redis = layer_entries(&ServiceImage::Redis.layer().expect("layer"));
        assert_eq!(redis["data"].0, u64::from(REDIS_UID));
        assert!(redis["etc/passwd"]
            .2
            .contains(&format!("redis:x:{REDIS_UID}:")));
        let pg = layer_entries(&ServiceImage::Postgres.layer().expect("layer"));
        assert_eq!(pg["var/lib/postgresql/data"].0, u64::from(POSTGRES_UID));
        assert_eq!(pg["var/lib/postgresql/data"].1, 0o700);
        assert!(pg["usr/local/bin/docker-entrypoint.sh"]
            .2
            .contains("POSTGRES_PASSWORD_FILE"));
        let nginx = layer_entries(&ServiceImage::Nginx.layer().expect("layer"));
        assert_eq!(nginx["etc/nginx/conf.d/default.conf"].2, NGINX_DEFAULT_SITE);
        assert!(nginx["etc/nginx/nginx.conf"].2.contains("daemon off;"));
        let config: serde_json::Value = serde_json::from_slice(
            &assemble(
                vec![ServiceImage::Redis.layer().expect("layer")],
                ServiceImage::Redis.config(),
                "t",
                "u",
            )
            .expect("image")
            .config,
        )
        .expect("json");
        assert_eq!(config["config"]["User"], "redis");
        assert_eq!(config["config"]["Cmd"][0], "redis-server");
    }

    /// Unpacks `layers` (tars) into a new temp dir.
    fn unpack(layers: &[&[u8]]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for tar in layers {
            let mut a = tar::Archive::new(*tar);
            a.set_preserve_permissions(true);
            a.set_preserve_ownerships(true);
            a.unpack(root.path()).expect("unpack");
        }
        root
    }

    /// A child stopped on drop: SIGTERM first, so nginx's master takes its workers along (a
    /// SIGKILLed master leaves them running, holding the test's stderr), SIGKILL after 10 s.
    struct Killed(std::process::Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Waits until `port` on loopback accepts connections.
    fn wait_port(port: u16, what: &str, child: &mut Killed) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(status) = child.0.try_wait().expect("wait") {
                panic!("{what} exited with {status} before listening on {port}");
            }
            assert!(Instant::now() < deadline, "{what} never listened on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Builds the service images' Debian trees (mmdebstrap, once per machine; the time of each
    /// build is printed) and runs them in chroots on loopback: redis with a password, the app
    /// counting hits in it through `/hits`, nginx proxying to the app, postgres initialised by its
    /// entrypoint with the password of a file, refusing a wrong one.
    #[test]
    fn service_images_build_and_work_together_in_chroots() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root (mmdebstrap, chroot)");
            return;
        }
        let mut bases = Vec::new();
        for kind in ServiceImage::ALL {
            let start = Instant::now();
            match kind.prepare() {
                Ok(p) => {
                    let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                    eprintln!(
                        "{}: tree ready in {:?}, {} MiB uncompressed",
                        kind.name(),
                        start.elapsed(),
                        size >> 20
                    );
                    bases.push(p);
                }
                Err(e) if is_unavailable(&e) => {
                    eprintln!("skipping: {e:#}");
                    return;
                }
                Err(e) => panic!("{}: {e:#}", kind.name()),
            }
        }
        let app_base = match prepare() {
            Ok(p) => p,
            Err(e) if is_unavailable(&e) => {
                eprintln!("skipping: {e:#}");
                return;
            }
            Err(e) => panic!("{e:#}"),
        };
        let chroot = which("chroot").expect("chroot (coreutils) in PATH");
        let tree = |kind: ServiceImage, base: &Path| {
            let image = kind.image(base).expect("image");
            let base_tar = fs::read(base).expect("base tar");
            unpack(&[&base_tar, &image.layers[1].tar])
        };

        // redis, with a password, as its image's user.
        let redis_root = tree(ServiceImage::Redis, &bases[0]);
        assert!(
            redis_root.path().join("usr/bin/redis-cli").exists(),
            "no redis-cli"
        );
        let redis_port = free_port();
        let mut redis = Killed(
            Command::new(&chroot)
                .arg(format!("--userspec={REDIS_UID}:{REDIS_UID}"))
                .arg(redis_root.path())
                .args(["redis-server", "--protected-mode", "no", "--dir", "/data"])
                .args(["--port", &redis_port.to_string(), "--requirepass", "s3cret"])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .stdout(Stdio::null())
                .spawn()
                .expect("chroot redis-server"),
        );
        wait_port(redis_port, "redis-server", &mut redis);

        // The app counts hits in it.
        let app_image = app_image(&app_base).expect("app image");
        let app_tar = fs::read(&app_base).expect("app base");
        let app_root = unpack(&[&app_tar, &app_image.layers[1].tar]);
        fs::write(app_root.path().join("root/pw"), "s3cret\n").expect("password file");
        let app_port = free_port();
        let mut app = Killed(
            Command::new(&chroot)
                .arg(app_root.path())
                .args(APP_CMD)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("PORT", app_port.to_string())
                .env("APP_GREETING", "bonjour")
                .env("REDIS_HOST", "127.0.0.1")
                .env("REDIS_PORT", redis_port.to_string())
                .env("REDIS_PASSWORD_FILE", "/root/pw")
                .stdout(Stdio::null())
                .spawn()
                .expect("chroot app"),
        );
        wait_port(app_port, "the app", &mut app);
        assert_eq!(get(app_port, "/hits").expect("hits").1, "bonjour 1\n");
        assert_eq!(get(app_port, "/hits").expect("hits").1, "bonjour 2\n");

        // nginx in front of the app, its site replaced as a stack's config would be.
        let nginx_root = tree(ServiceImage::Nginx, &bases[2]);
        let nginx_port = free_port();
        fs::write(
            nginx_root.path().join("etc/nginx/conf.d/default.conf"),
            format!(
                "server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://127.0.0.1:{app_port}; }} }}\n"
            ),
        )
        .expect("site");
        let mut nginx = Killed(
            Command::new(&chroot)
                .arg(nginx_root.path())
                .arg("/usr/sbin/nginx")
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/bin")
                .stdout(Stdio::null())
                .spawn()
                .expect("chroot nginx"),
        );
        wait_port(nginx_port, "nginx", &mut nginx);
        let (status, body) = get(nginx_port, "/hits").expect("through nginx");
        assert!(status.contains(" 200 "), "{status}: {body}");
        assert_eq!(body, "bonjour 3\n");

        // postgres: the entrypoint initdb's with the password of the file, as `postgres`, in
        // a mount namespace of its own with the machine's /dev (as a container has one).
        let pg_root = tree(ServiceImage::Postgres, &bases[1]);
        fs::create_dir_all(pg_root.path().join("dev")).expect("dev");
        fs::write(pg_root.path().join("tmp/pw"), "pg-s3cret").expect("password file");
        let pg_port = free_port();
        let script = format!(
            "mount --rbind /dev {root}/dev && exec env -i PATH=/usr/bin:/bin \
             PGDATA={POSTGRES_DATA} POSTGRES_PASSWORD_FILE=/tmp/pw {chroot} \
             --userspec={POSTGRES_UID}:{POSTGRES_UID} {root} \
             /usr/local/bin/docker-entrypoint.sh -c port={pg_port}",
            root = pg_root.path().display(),
            chroot = chroot.display(),
        );
        let mut pg = Killed(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", &script])
                .stdout(Stdio::null())
                .spawn()
                .expect("unshare postgres"),
        );
        wait_port(pg_port, "postgres", &mut pg);
        let psql = |password: &str| {
            Command::new(&chroot)
                .arg(format!("--userspec={POSTGRES_UID}:{POSTGRES_UID}"))
                .arg(pg_root.path())
                .arg("/usr/lib/postgresql/15/bin/psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &pg_port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-Atc", "select 40 + 2"])
                .env_clear()
                .env("PGPASSWORD", password)
                .output()
                .expect("psql")
        };
        // The port opens before recovery ends ("the database system is starting up").
        let deadline = Instant::now() + Duration::from_secs(20);
        let right = loop {
            let out = psql("pg-s3cret");
            let starting = String::from_utf8_lossy(&out.stderr).contains("starting up");
            if !starting || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            String::from_utf8_lossy(&right.stdout).trim(),
            "42",
            "psql with the secret's password: {right:?}"
        );
        let wrong = psql("wrong");
        assert!(
            String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"),
            "psql with a wrong password: {wrong:?}"
        );
        // SIGTERM is a smart shutdown: postgres exits by itself, its mount namespace with it.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pg.0.id() as i32),
            nix::sys::signal::SIGTERM,
        )
        .expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while pg.0.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "postgres ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

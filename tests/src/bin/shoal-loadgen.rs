//! `shoal-loadgen`: many simulated agents in one process, for measuring the manager at scale.
//!
//! ```text
//! shoal-loadgen --manager 127.0.0.1:4242 --token SHLTKN-1-... --agents 1000 [--data-dir D]
//! ```
//! Each simulated node joins like a real agent (its own key, CSR and certificate, so its own TLS
//! connection: the manager knows a node by its client certificate), opens one dispatcher session,
//! heartbeats, and answers every new task of its assignment set with ACCEPTED, STARTING and
//! RUNNING in one status message, without starting anything. A task whose desired state becomes
//! SHUTDOWN is reported SHUTDOWN. Tasks are remembered across sessions, as a real worker keeps its
//! containers, and their last state is sent again when a session starts. With `--data-dir`,
//! identities are kept there (renewed ones too) and reused by the next run, which then skips
//! joining.
//!
//! Certificates behave as a real agent's (`agent/src/certs.rs`): each node keeps its identity in a
//! [`LiveTls`], renews it at a random point between 50 % and 80 % of its lifetime and at once when
//! a `Trust` message names another CA than its certificate's issuer as the one signing now, and
//! applies the CA bundles it is sent. After a renewal or a trust change the session is opened
//! again with the new credentials; that is not a lost session.
//!
//! Stdout, for a driving benchmark: `ready N` once all N sessions are established, then
//! `tasks HELD RUNNING` whenever the total of assigned tasks or of those reported running changes;
//! `renewed N` (renewals so far, all nodes), `lost N` (established sessions that ended for any
//! other reason than a credential change), `retried N` (attempts to open a session again that
//! failed, after the node's first session) and `issued CA_FINGERPRINT N` (how many nodes hold a
//! certificate issued by that CA, one line per CA whose count changed) whenever they change. Checked every 10 ms. Runs until killed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use shoal_proto::live_tls::LiveTls;
use shoal_proto::pki::{self, Identity, Trust};
use shoal_proto::token::JoinToken;
use shoal_proto::v1::ca_client::CaClient;
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::*;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

/// Simulated agents for the 1,000-node benchmark.
#[derive(Parser)]
#[command(name = "shoal-loadgen", about)]
struct Cli {
    /// Manager address, IP:PORT.
    #[arg(long)]
    manager: String,
    /// Worker join token.
    #[arg(long)]
    token: String,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Joins and session set-ups in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Hostnames are PREFIX-0001, PREFIX-0002, ...
    #[arg(long, default_value = "sim")]
    hostname_prefix: String,
    /// Keep node identities here and reuse them on the next run.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Count the nodes whose ingress view is final for this many published replicas, split
    /// evenly over the services the view names, all running (printed as `ingress
    /// COMPLETE_NODES`): each service's backends of the view's subset (all of them when the
    /// service is not split), no other. 0: do not track ingress views.
    #[arg(long, default_value_t = 0)]
    ingress: usize,
}

/// A simulated node's identity as joining (or loading) gives it.
struct Joined {
    hostname: String,
    node_id: String,
    ca_pem: String,
    identity: Identity,
}

/// A running simulated node: its live credentials and what keeps them current.
struct SimNode {
    hostname: String,
    node_id: String,
    /// Where its identity is saved, with `--data-dir`.
    dir: Option<PathBuf>,
    live: Arc<LiveTls>,
    /// Rung when a `Trust` message asks for a renewal now.
    renew_now: Notify,
    /// Fingerprint of the CA the dispatcher last named as signing.
    signing_ca: std::sync::Mutex<String>,
}

/// Totals over all simulated nodes, printed for the benchmark.
#[derive(Default)]
struct Totals {
    established: AtomicUsize,
    /// Tasks currently in some node's assignment set.
    held: AtomicI64,
    /// Held tasks this process reported RUNNING and not yet SHUTDOWN.
    running: AtomicI64,
    /// Certificate renewals so far.
    renewed: AtomicUsize,
    /// Established sessions that ended for another reason than a credential change.
    lost: AtomicUsize,
    /// Failed attempts to open a session again, once the node had one.
    retried: AtomicUsize,
    /// Nodes per fingerprint of the CA that issued their current certificate.
    issuers: Mutex<HashMap<String, i64>>,
    /// Messages and bytes (protobuf encoding, before HTTP/2 and TLS framing) the manager sent
    /// all nodes on their dispatcher sessions.
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// Whole sets and deltas among them; deltas the nodes could not apply (each asks for a
    /// resync).
    full_sets: AtomicUsize,
    deltas: AtomicUsize,
    resyncs: AtomicUsize,
    /// Nodes whose ingress view has `ingress_want` endpoints, all running (see `--ingress`).
    ingress_complete: AtomicUsize,
}

impl Totals {
    fn issuers(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.issuers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves a node from the issuer of `old` (if any) to the issuer of `new`.
    fn reissued(&self, old: Option<&str>, new: &str) {
        let fp = |pem: &str| pki::issuer_fingerprint(pem).ok().flatten();
        let (old, new) = (old.and_then(fp), fp(new));
        let mut issuers = self.issuers();
        if let Some(o) = old {
            *issuers.entry(o).or_default() -= 1;
        }
        if let Some(n) = new {
            *issuers.entry(n).or_default() += 1;
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let token = JoinToken::parse(&cli.token)?;
    let totals = Arc::new(Totals::default());
    let gate = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let cli = Arc::new(cli);
    let token = Arc::new(token);
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<String>();
    for i in 1..=cli.agents {
        let hostname = format!("{}-{i:04}", cli.hostname_prefix);
        let (cli, token, totals, gate) = (cli.clone(), token.clone(), totals.clone(), gate.clone());
        let failed = failed_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = sim_node(&cli, &token, &hostname, &totals, &gate).await {
                let _ = failed.send(format!("{hostname}: {e:#}"));
            }
        });
    }
    drop(failed_tx);

    let mut announced = false;
    let mut last = (-1, -1);
    let (mut last_renewed, mut last_lost, mut last_retried) = (0, 0, 0);
    let mut last_issuers: HashMap<String, i64> = HashMap::new();
    let mut last_wire = (0, 0, 0, 0, 0);
    let mut last_complete = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            f = failed_rx.recv() => match f {
                Some(msg) => bail!("simulated node failed: {msg}"),
                None => bail!("every simulated node stopped"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let established = totals.established.load(Ordering::Relaxed);
        let issuers = totals.issuers().clone();
        let mut out = std::io::stdout().lock();
        if !announced && established >= cli.agents {
            writeln!(out, "ready {established}")?;
            announced = true;
        }
        let now = (
            totals.held.load(Ordering::Relaxed),
            totals.running.load(Ordering::Relaxed),
        );
        if announced && now != last {
            writeln!(out, "tasks {} {}", now.0, now.1)?;
            last = now;
        }
        let renewed = totals.renewed.load(Ordering::Relaxed);
        if renewed != last_renewed {
            writeln!(out, "renewed {renewed}")?;
            last_renewed = renewed;
        }
        let lost = totals.lost.load(Ordering::Relaxed);
        if lost != last_lost {
            writeln!(out, "lost {lost}")?;
            last_lost = lost;
        }
        let retried = totals.retried.load(Ordering::Relaxed);
        if retried != last_retried {
            writeln!(out, "retried {retried}")?;
            last_retried = retried;
        }
        let wire = (
            totals.messages.load(Ordering::Relaxed),
            totals.bytes.load(Ordering::Relaxed),
            totals.full_sets.load(Ordering::Relaxed),
            totals.deltas.load(Ordering::Relaxed),
            totals.resyncs.load(Ordering::Relaxed),
        );
        if wire != last_wire {
            writeln!(
                out,
                "wire {} {} {} {} {}",
                wire.0, wire.1, wire.2, wire.3, wire.4
            )?;
            last_wire = wire;
        }
        let complete = totals.ingress_complete.load(Ordering::Relaxed);
        if cli.ingress > 0 && complete != last_complete {
            writeln!(out, "ingress {complete}")?;
            last_complete = complete;
        }
        for (fp, n) in &issuers {
            if last_issuers.get(fp) != Some(n) {
                writeln!(out, "issued {fp} {n}")?;
            }
        }
        last_issuers = issuers;
        out.flush()?;
    }
}

/// One simulated node: join (or load), then sessions and renewals until a permanent refusal.
async fn sim_node(
    cli: &Cli,
    token: &JoinToken,
    hostname: &str,
    totals: &Totals,
    gate: &Semaphore,
) -> Result<()> {
    let permit = gate.acquire().await?;
    let dir = cli.data_dir.as_ref().map(|d| d.join(hostname));
    let joined = match dir.as_deref().map(load).transpose()?.flatten() {
        Some(joined) => joined,
        None => {
            let joined = join(&cli.manager, token, hostname).await?;
            if let Some(dir) = &dir {
                save(dir, &joined)?;
            }
            joined
        }
    };
    totals.reissued(None, &joined.identity.cert_pem);
    let node = SimNode {
        live: LiveTls::new(joined.identity, &joined.ca_pem)?,
        hostname: joined.hostname,
        node_id: joined.node_id,
        dir,
        renew_now: Notify::new(),
        signing_ca: std::sync::Mutex::new(String::new()),
    };
    let config = Arc::new(node.live.client_config()?);
    let sessions = async {
        let mut permit = Some(permit);
        let mut tasks = Tasks {
            totals,
            tasks: HashMap::new(),
        };
        let mut established = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut opened = false;
            let result = session(
                cli,
                &node,
                config.clone(),
                &mut tasks,
                &mut permit,
                &mut established,
                &mut opened,
            )
            .await;
            match result {
                Ok(never) => match never {},
                Err(SessionEnd::Refused(s)) => bail!("{}: {}", node.node_id, s.message()),
                Err(SessionEnd::CredentialsChanged) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Err(SessionEnd::Lost(e)) => {
                    if opened {
                        totals.lost.fetch_add(1, Ordering::Relaxed);
                    } else if established {
                        totals.retried.fetch_add(1, Ordering::Relaxed);
                    }
                    eprintln!("{hostname}: session lost ({e:#}); reconnecting");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    };
    tokio::select! {
        r = sessions => r,
        never = renewals(cli, &node, config.clone(), totals) => match never {},
    }
}

/// Renews the node's certificate at its renewal point or when a `Trust` message asks, forever;
/// a failed renewal is retried with backoff, as the agent does.
async fn renewals(
    cli: &Cli,
    node: &SimNode,
    config: Arc<rustls::ClientConfig>,
    totals: &Totals,
) -> Infallible {
    let mut retry = Duration::from_secs(1);
    loop {
        let at = pki::renewal_point(&node.live.identity().cert_pem);
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.renew_now.notified() => {
                // As the agent: a repeated trust message renews only a certificate that still
                // needs it.
                if !node.needs_renewal(at) {
                    continue;
                }
            }
        }
        loop {
            match renew(cli, node, config.clone(), totals).await {
                Ok(()) => {
                    retry = Duration::from_secs(1);
                    break;
                }
                Err(e) => {
                    eprintln!(
                        "{}: certificate renewal failed ({e:#}); retrying in {retry:?}",
                        node.hostname
                    );
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// One renewal as the agent does it: a new key, `Ca.RenewCertificate` authenticated by the
/// current certificate over a new connection, saved, then put in use (the session reconnects).
async fn renew(
    cli: &Cli,
    node: &SimNode,
    config: Arc<rustls::ClientConfig>,
    totals: &Totals,
) -> Result<()> {
    let (csr_pem, key_pem) = pki::generate_csr("renewal")?;
    let channel = pki::connect(&cli.manager, config).await?;
    let resp = CaClient::new(channel)
        .max_decoding_message_size(shoal_proto::limits::MAX_CA_MESSAGE_BYTES)
        .max_encoding_message_size(shoal_proto::limits::MAX_CA_MESSAGE_BYTES)
        .renew_certificate(RenewCertificateRequest { csr_pem })
        .await
        .map_err(|s| anyhow::anyhow!("renewal refused: {}", s.message()))?
        .into_inner();
    let old = node.live.identity().cert_pem;
    let identity = Identity {
        cert_pem: resp.cert_pem,
        key_pem,
    };
    if let Some(dir) = &node.dir {
        save(
            dir,
            &Joined {
                hostname: node.hostname.clone(),
                node_id: node.node_id.clone(),
                ca_pem: resp.ca_bundle_pem.clone(),
                identity: identity.clone(),
            },
        )?;
    }
    totals.reissued(Some(&old), &identity.cert_pem);
    node.live
        .update(Some(identity), Some(&resp.ca_bundle_pem))?;
    totals.renewed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

impl SimNode {
    /// Applies a `Trust` message as the agent does: trusts its bundle, and asks for a renewal now
    /// when the node's certificate comes from another CA than the one signing now.
    fn trust(&self, update: &TrustUpdate) {
        if update.ca_bundle_pem.trim().is_empty() {
            return;
        }
        if update.ca_bundle_pem != self.live.roots_pem() {
            if let Err(e) = self.live.update(None, Some(&update.ca_bundle_pem)) {
                eprintln!(
                    "{}: the cluster's CA bundle is unusable: {e}",
                    self.hostname
                );
                return;
            }
            if let Some(dir) = &self.dir {
                let p = dir.join(FILES[1]);
                if let Err(e) = std::fs::write(&p, &update.ca_bundle_pem) {
                    eprintln!("{}: writing {}: {e}", self.hostname, p.display());
                }
            }
        }
        *self
            .signing_ca
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = update.ca_fingerprint.clone();
        if !self.issued_by_signing_ca(&update.ca_bundle_pem, &update.ca_fingerprint) {
            self.renew_now.notify_one();
        }
    }

    /// Whether the certificate must be renewed now (past `at`, or from another CA than the
    /// signing one), as the agent decides.
    fn needs_renewal(&self, at: SystemTime) -> bool {
        if SystemTime::now() >= at {
            return true;
        }
        let signing = self
            .signing_ca
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        signing.is_empty() || !self.issued_by_signing_ca(&self.live.roots_pem(), &signing)
    }

    /// Whether the node's certificate was issued by the CA with fingerprint `fp` (found in
    /// `bundle`); true when that CA is not in the bundle (nothing to renew towards).
    fn issued_by_signing_ca(&self, bundle: &str, fp: &str) -> bool {
        let cert = self.live.identity().cert_pem;
        pki::find_in_bundle(bundle, fp).is_none_or(|ca| pki::issued_by(&cert, ca).unwrap_or(true))
    }
}

/// Gets a certificate for a fresh key, as `shoal-agent join` does.
async fn join(manager: &str, token: &JoinToken, hostname: &str) -> Result<Joined> {
    let config = pki::client_config(&Trust::Pinned(token.ca_fingerprint.clone()), None)?;
    let channel = pki::connect(manager, Arc::new(config)).await?;
    let (csr_pem, key_pem) = pki::generate_csr(hostname)?;
    let resp = CaClient::new(channel)
        .issue_certificate(IssueCertificateRequest {
            token: token.to_string(),
            csr_pem,
            node_id: String::new(),
            hostname: hostname.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("join refused: {}", s.message()))?
        .into_inner();
    if pki::fingerprint_pem(&resp.ca_cert_pem)? != token.ca_fingerprint {
        bail!("the manager sent a CA that does not match the join token");
    }
    Ok(Joined {
        hostname: hostname.to_string(),
        node_id: resp.node_id,
        ca_pem: resp.ca_cert_pem,
        identity: Identity {
            cert_pem: resp.cert_pem,
            key_pem,
        },
    })
}

const FILES: [&str; 4] = ["node-id", "ca.pem", "node.pem", "node-key.pem"];

fn load(dir: &Path) -> Result<Option<Joined>> {
    if !dir.join(FILES[0]).exists() {
        return Ok(None);
    }
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(Some(Joined {
        hostname: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        node_id: read(FILES[0])?.trim().to_string(),
        ca_pem: read(FILES[1])?,
        identity: Identity {
            cert_pem: read(FILES[2])?,
            key_pem: read(FILES[3])?,
        },
    }))
}

fn save(dir: &Path, node: &Joined) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The key goes before its certificate (a crash between them leaves a mismatch the next
    // start reports, never a key lost), and the node id last: its presence marks a complete
    // identity.
    let contents = [
        (FILES[1], &node.ca_pem),
        (FILES[3], &node.identity.key_pem),
        (FILES[2], &node.identity.cert_pem),
        (FILES[0], &node.node_id),
    ];
    for (name, text) in contents {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Why a session ended.
enum SessionEnd {
    /// The cluster refused the node for good.
    Refused(tonic::Status),
    /// The node's certificate or trusted CAs changed: reconnect with the new ones.
    CredentialsChanged,
    /// The connection or stream broke; try again.
    Lost(anyhow::Error),
}

impl From<tonic::Status> for SessionEnd {
    fn from(s: tonic::Status) -> Self {
        if s.code() == tonic::Code::PermissionDenied {
            SessionEnd::Refused(s)
        } else {
            SessionEnd::Lost(s.into())
        }
    }
}

impl From<pki::PkiError> for SessionEnd {
    fn from(e: pki::PkiError) -> Self {
        SessionEnd::Lost(e.into())
    }
}

/// What this node did with one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    Running,
    Shutdown,
}

/// A node's tasks, kept across its sessions as a real worker keeps its containers; removed from
/// the totals when the node stops.
struct Tasks<'a> {
    totals: &'a Totals,
    tasks: HashMap<String, Reported>,
}

impl Tasks<'_> {
    fn running(&self) -> i64 {
        self.tasks
            .values()
            .filter(|r| **r == Reported::Running)
            .count() as i64
    }

    /// The last state of every task, sent again when a session starts (the manager may have
    /// missed updates while the node was away).
    fn statuses(&self) -> Vec<TaskStatusUpdate> {
        self.tasks
            .iter()
            .map(|(id, r)| match r {
                Reported::Running => update(id, TaskState::TaskRunning, "started"),
                Reported::Shutdown => update(id, TaskState::TaskShutdown, "shutdown"),
            })
            .collect()
    }
}

impl Drop for Tasks<'_> {
    fn drop(&mut self) {
        self.totals
            .held
            .fetch_sub(self.tasks.len() as i64, Ordering::Relaxed);
        self.totals
            .running
            .fetch_sub(self.running(), Ordering::Relaxed);
    }
}

fn update(task_id: &str, state: TaskState, message: &str) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: task_id.to_string(),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: shoal_proto::now_ns(),
            message: message.to_string(),
            ..Default::default()
        }),
    }
}

/// One session: register, then answer assignments and heartbeat until the stream breaks or the
/// node's credentials change. `established` says whether the node ever had a session, `opened`
/// whether this one was established.
async fn session(
    cli: &Cli,
    node: &SimNode,
    config: Arc<rustls::ClientConfig>,
    held: &mut Tasks<'_>,
    permit: &mut Option<tokio::sync::SemaphorePermit<'_>>,
    established: &mut bool,
    opened: &mut bool,
) -> Result<Infallible, SessionEnd> {
    // Subscribed before connecting: a change during the handshake still ends this session.
    let mut credentials = node.live.subscribe_identity();
    credentials.mark_unchanged();
    let channel = pki::connect(&cli.manager, config).await?;
    let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(64);
    let register = AgentMessage {
        msg: Some(agent_message::Msg::Register(AgentRegister {
            description: Some(NodeDescription {
                hostname: node.hostname.clone(),
                resources: Some(Resources {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 8 << 30,
                }),
                os: "linux".into(),
                architecture: std::env::consts::ARCH.into(),
                agent_version: format!("shoal-loadgen {}", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            }),
        })),
    };
    let lost = || SessionEnd::Lost(anyhow::anyhow!("the session's send queue closed"));
    out_tx.send(register).await.map_err(|_| lost())?;
    let mut inbound = DispatcherClient::new(channel)
        .session(ReceiverStream::new(out_rx))
        .await?
        .into_inner();
    let period = match inbound.message().await?.and_then(|m| m.msg) {
        Some(manager_message::Msg::Session(s)) => {
            Duration::from_nanos(s.heartbeat_period_ns.max(100_000_000) as u64)
        }
        _ => {
            return Err(SessionEnd::Lost(anyhow::anyhow!(
                "the manager did not establish the session"
            )))
        }
    };
    // Established: let the next node set up, and count this one once.
    *opened = true;
    permit.take();
    if !*established {
        *established = true;
        held.totals.established.fetch_add(1, Ordering::Relaxed);
    }
    let known = held.statuses();
    if !known.is_empty() {
        let msg = AgentMessage {
            msg: Some(agent_message::Msg::Status(AgentTaskStatus {
                updates: known,
            })),
        };
        out_tx.send(msg).await.map_err(|_| lost())?;
    }
    let mut heartbeat = tokio::time::interval(period / 2);
    heartbeat.tick().await; // the first tick is immediate; registering was our first sign of life
                            // The node's assignment set, deltas applied as the agent does (`None` after a failed one,
                            // until the whole set comes again).
    let mut set: Option<Assignments> = None;
    let totals = held.totals;
    let mut complete = false;
    let result = async {
    loop {
        let msg = tokio::select! {
            msg = inbound.message() => msg?,
            _ = heartbeat.tick() => {
                let beat = AgentMessage { msg: Some(agent_message::Msg::Heartbeat(AgentHeartbeat {})) };
                out_tx.send(beat).await.map_err(|_| lost())?;
                continue;
            }
            _ = credentials.changed() => return Err(SessionEnd::CredentialsChanged),
        };
        if let Some(m) = &msg {
            totals.messages.fetch_add(1, Ordering::Relaxed);
            totals.bytes.fetch_add(prost::Message::encoded_len(m), Ordering::Relaxed);
        }
        let assignments = match msg.and_then(|m| m.msg) {
                Some(manager_message::Msg::Assignments(a)) => {
                    totals.full_sets.fetch_add(1, Ordering::Relaxed);
                    set.insert(a)
                }
                Some(manager_message::Msg::AssignmentsDelta(d)) => {
                    totals.deltas.fetch_add(1, Ordering::Relaxed);
                    let Some(held_set) = set.as_mut() else { continue };
                    let have = held_set.version;
                    if let Err(e) = shoal_proto::assignments::apply(held_set, d) {
                        totals.resyncs.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{}: {e}; asking for the whole set", node.hostname);
                        set = None;
                        let resync = AgentResync { have, reason: e.to_string() };
                        let msg = AgentMessage { msg: Some(agent_message::Msg::Resync(resync)) };
                        out_tx.send(msg).await.map_err(|_| lost())?;
                        continue;
                    }
                    held_set
                }
                Some(manager_message::Msg::Trust(t)) => {
                    node.trust(&t);
                    continue;
                }
                Some(_) => continue, // logs requests: simulated tasks have no output
                None => return Err(SessionEnd::Lost(anyhow::anyhow!("the manager closed the session"))),
        };
        if cli.ingress > 0 {
            let now = ingress_complete(assignments, cli.ingress);
            if now != complete {
                if now {
                    totals.ingress_complete.fetch_add(1, Ordering::Relaxed);
                } else {
                    totals.ingress_complete.fetch_sub(1, Ordering::Relaxed);
                }
                complete = now;
            }
        }
        let (held_before, running_before) = (held.tasks.len() as i64, held.running());
        let mut updates = Vec::new();
        let mut current = HashMap::with_capacity(assignments.tasks.len());
        for task in &assignments.tasks {
            let wants_shutdown = task.desired_state > TaskState::TaskRunning as i32;
            let reported = match (held.tasks.get(&task.id), wants_shutdown) {
                (None, false) => {
                    updates.push(update(&task.id, TaskState::TaskAccepted, "accepted"));
                    updates.push(update(&task.id, TaskState::TaskStarting, "starting"));
                    updates.push(update(&task.id, TaskState::TaskRunning, "started"));
                    Reported::Running
                }
                (Some(Reported::Running) | None, true) => {
                    updates.push(update(&task.id, TaskState::TaskShutdown, "shutdown"));
                    Reported::Shutdown
                }
                (Some(r), _) => *r,
            };
            current.insert(task.id.clone(), reported);
        }
        // Tasks missing from the set are forgotten, as the real worker removes them.
        held.tasks = current;
        held.totals
            .held
            .fetch_add(held.tasks.len() as i64 - held_before, Ordering::Relaxed);
        held.totals
            .running
            .fetch_add(held.running() - running_before, Ordering::Relaxed);
        if !updates.is_empty() {
            let msg = AgentMessage {
                msg: Some(agent_message::Msg::Status(AgentTaskStatus { updates })),
            };
            out_tx.send(msg).await.map_err(|_| lost())?;
        }
    }
    }
    .await;
    if complete {
        totals.ingress_complete.fetch_sub(1, Ordering::Relaxed);
    }
    result
}

/// Whether the set's ingress view is final for `want` replicas split evenly over its services
/// (slots 1..=want/services each): every backend of its subset of each service, all running.
fn ingress_complete(set: &Assignments, want: usize) -> bool {
    let ingress = set.networks.iter().find(|v| {
        v.network
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .is_some_and(|s| s.ingress)
    });
    let Some(v) = ingress else { return false };
    let services = v.services.len();
    if services == 0 || !want.is_multiple_of(services) {
        return false;
    }
    let per = want / services;
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for e in v.endpoints.iter().filter(|e| !e.task_id.is_empty()) {
        let c = counts.entry(e.service_id.as_str()).or_default();
        c.0 += 1;
        c.1 += usize::from(e.running);
    }
    counts.len() == services
        && v.services.iter().all(|s| {
            let groups = s.subset_groups.max(1) as usize;
            let subset = s.subset as usize % groups;
            // Slots 1..=per, slot S in group (S - 1) % groups.
            let expected = per / groups + usize::from(subset < per % groups);
            counts.get(s.service_id.as_str()) == Some(&(expected, expected))
        })
}

//! `service update` and `service rollback` as changes to a stored service: pure, so the
//! handler's read-modify-write and the tests share them.
//!
//! Versions: every change that outdates the tasks gets a fresh `spec_version`
//! ([`next_spec_version`]), a rollback included, and `previous_spec_version` keeps the version
//! the previous spec had. The updater replaces tasks whose spec differs from the service's
//! (swarm's deep-equal), so after a rollback the tasks not yet updated stay as they are.

use shoal_proto::v1::update_status::State;
use shoal_proto::v1::{
    ContainerSpec, FileTarget, Service, ServiceSpec, Task, UpdateConfig, UpdateStatus,
};
use tonic::Status;

use crate::orchestrator::needs_new_tasks;
use crate::orchestrator::update::next_spec_version;

/// The message of a refused stale update.
pub const OUT_OF_SEQUENCE: &str =
    "update out of sequence: the service changed since it was read; run the command again";

/// Checks the update and rollback configs as swarm does (`--update-*` / `--rollback-*`).
pub fn check_update_configs(spec: &ServiceSpec) -> Result<(), Status> {
    check_update_config("update", spec.update.as_ref())?;
    check_update_config("rollback", spec.rollback.as_ref())
}

fn check_update_config(which: &str, c: Option<&UpdateConfig>) -> Result<(), Status> {
    let Some(c) = c else { return Ok(()) };
    let bad = |what: &str, why: &str| Status::invalid_argument(format!("--{which}-{what} {why}"));
    if c.delay_ns < 0 {
        return Err(bad("delay", "cannot be negative"));
    }
    if c.monitor_ns < 0 {
        return Err(bad("monitor", "cannot be negative"));
    }
    if !(0.0..=1.0).contains(&c.max_failure_ratio) {
        return Err(bad(
            "max-failure-ratio",
            "cannot be less than 0 or bigger than 1",
        ));
    }
    Ok(())
}

/// Refuses a request made against a version of the service that is no longer the stored one
/// (`version` 0: no check).
pub fn check_version(service: &Service, version: u64) -> Result<(), Status> {
    let stored = service.meta.map_or(0, |m| m.version);
    if version != 0 && version != stored {
        return Err(Status::failed_precondition(OUT_OF_SEQUENCE));
    }
    Ok(())
}

/// A normal update: the spec becomes `spec`, the old one is kept as the previous spec, and the
/// update status is reset (a paused update moves again), as swarm does. Only a change that
/// outdates the tasks gets a new `spec_version`.
pub fn apply_update(service: &mut Service, spec: ServiceSpec, tasks: &[&Task], now_ns: i64) {
    let outdates = service
        .spec
        .as_ref()
        .is_none_or(|old| needs_new_tasks(old, &spec));
    let fresh = next_spec_version(service, tasks.iter().copied());
    service.previous_spec = service.spec.take().map(Box::new);
    service.previous_spec_version = service.spec_version;
    if outdates {
        service.spec_version = fresh;
    }
    service.spec = Some(spec);
    service.update_status = None;
    if let Some(m) = service.meta.as_mut() {
        m.updated_at = now_ns;
    }
}

/// `service rollback`: swaps the spec and the previous spec (so rolling back twice returns to
/// the newer one) and starts a rollback with the rollback config.
pub fn apply_rollback(service: &mut Service, tasks: &[&Task], now_ns: i64) -> Result<(), Status> {
    let Some(previous) = service.previous_spec.take() else {
        let name = service.spec.as_ref().map_or("", |s| s.name.as_str());
        return Err(Status::failed_precondition(format!(
            "service {name} does not have a previous spec"
        )));
    };
    let outdates = service
        .spec
        .as_ref()
        .is_none_or(|cur| needs_new_tasks(cur, &previous));
    let fresh = next_spec_version(service, tasks.iter().copied());
    service.previous_spec = service.spec.take().map(Box::new);
    service.spec = Some(*previous);
    let current_version = service.spec_version;
    if outdates {
        service.spec_version = fresh;
    }
    service.previous_spec_version = current_version;
    service.update_status = Some(UpdateStatus {
        state: State::RollbackStarted as i32,
        started_at: now_ns,
        completed_at: 0,
        message: "manually requested rollback".into(),
    });
    if let Some(m) = service.meta.as_mut() {
        m.updated_at = now_ns;
    }
    Ok(())
}

/// Mode of a secret or config file when none is given.
pub const DEFAULT_FILE_MODE: u32 = 0o444;

fn container_mut(spec: &mut ServiceSpec) -> Option<&mut ContainerSpec> {
    spec.task.as_mut()?.container.as_mut()
}

fn container(spec: &ServiceSpec) -> Option<&ContainerSpec> {
    spec.task.as_ref()?.container.as_ref()
}

/// Fills a file target's defaults: the file named after its source, owned by root, 0444.
fn file_defaults(file: &mut Option<FileTarget>, default_name: String) {
    let f = file.get_or_insert_with(FileTarget::default);
    if f.name.is_empty() {
        f.name = default_name;
    }
    for id in [&mut f.uid, &mut f.gid] {
        if id.is_empty() {
            *id = "0".into();
        }
    }
    if f.mode == 0 {
        f.mode = DEFAULT_FILE_MODE;
    }
}

/// Resolves every `--secret` and `--config` of `spec` to a stored object (by the name the user
/// gave, else the id, else a unique id prefix), filling both its id and name and the file's
/// defaults (`/run/secrets/NAME`, `/NAME`, uid and gid 0, mode 0444). The targets are checked
/// again once the names are known.
pub fn resolve_files(s: &crate::store::State, spec: &mut ServiceSpec) -> Result<(), Status> {
    let Some(c) = container_mut(spec) else {
        return Ok(());
    };
    for r in &mut c.secrets {
        let given = if r.secret_name.is_empty() {
            &r.secret_id
        } else {
            &r.secret_name
        };
        let found = match s.find_secret(given) {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(Status::invalid_argument(format!(
                    "secret not found: {given}"
                )))
            }
            Err(n) => {
                return Err(Status::invalid_argument(format!(
                    "secret {given:?} is ambiguous: {n} secret ids start with it"
                )))
            }
        };
        r.secret_id = found.id.clone();
        r.secret_name = found
            .spec
            .as_ref()
            .map(|sp| sp.name.clone())
            .unwrap_or_default();
        file_defaults(&mut r.file, r.secret_name.clone());
    }
    for r in &mut c.configs {
        let given = if r.config_name.is_empty() {
            &r.config_id
        } else {
            &r.config_name
        };
        let found = match s.find_config(given) {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(Status::invalid_argument(format!(
                    "config not found: {given}"
                )))
            }
            Err(n) => {
                return Err(Status::invalid_argument(format!(
                    "config {given:?} is ambiguous: {n} config ids start with it"
                )))
            }
        };
        r.config_id = found.id.clone();
        r.config_name = found
            .spec
            .as_ref()
            .map(|sp| sp.name.clone())
            .unwrap_or_default();
        file_defaults(&mut r.file, format!("/{}", r.config_name));
    }
    // Names resolved from ids change default targets: two references may now meet.
    shoal_proto::spec::validate_service(spec).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// An update that sends no registry credentials keeps the stored ones (as docker does: the
/// client never sees them, so it cannot send them back).
pub fn keep_registry_auth(stored: Option<&ServiceSpec>, spec: &mut ServiceSpec) {
    let kept = stored
        .and_then(container)
        .and_then(|c| c.registry_auth.clone());
    if let Some(c) = container_mut(spec) {
        if c.registry_auth.is_none() {
            c.registry_auth = kept;
        }
    }
}

/// The service as the control API shows it: registry credentials are never returned, neither
/// of the spec nor of the previous spec.
pub fn without_registry_auth(mut service: Service) -> Service {
    if let Some(c) = service.spec.as_mut().and_then(container_mut) {
        c.registry_auth = None;
    }
    if let Some(c) = service.previous_spec.as_deref_mut().and_then(container_mut) {
        c.registry_auth = None;
    }
    service
}

/// The task as the control API shows it: without the registry credentials of its spec.
pub fn task_without_registry_auth(mut task: Task) -> Task {
    if let Some(c) = task.spec.as_mut().and_then(|t| t.container.as_mut()) {
        c.registry_auth = None;
    }
    task
}

#[cfg(test)]
mod tests {
    use shoal_proto::v1::store_action::Action;
    use shoal_proto::v1::{
        ConfigReference, ConfigSpec, RegistryAuth, SecretReference, SecretSpec, TaskSpec,
    };

    use super::*;
    use crate::store::Store;
    use crate::test_support::apply;

    fn store_with_files() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let secret = |id: &str, name: &str| {
            Action::CreateSecret(shoal_proto::v1::Secret {
                id: id.into(),
                spec: Some(SecretSpec {
                    name: name.into(),
                    data: b"x".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let config = Action::CreateConfig(shoal_proto::v1::Config {
            id: "cfg123".into(),
            spec: Some(ConfigSpec {
                name: "nginx.conf".into(),
                data: b"x".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        });
        apply(
            &store,
            1,
            vec![
                secret("sec123", "db_pw"),
                secret("sec456", "api_key"),
                config,
            ],
        );
        (dir, store)
    }

    fn spec_with(secrets: Vec<SecretReference>, configs: Vec<ConfigReference>) -> ServiceSpec {
        ServiceSpec {
            name: "app_db".into(),
            replicas: 1,
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".into(),
                    secrets,
                    configs,
                    registry_auth: Some(RegistryAuth {
                        server: "registry.example.com".into(),
                        username: "u".into(),
                        password: "p".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn by_name(name: &str) -> SecretReference {
        SecretReference {
            secret_name: name.into(),
            ..Default::default()
        }
    }

    fn resolved(s: &Store, mut spec: ServiceSpec) -> Result<ContainerSpec, String> {
        s.read(|st| resolve_files(st, &mut spec))
            .map_err(|e| e.message().to_string())?;
        Ok(container(&spec).cloned().unwrap_or_default())
    }

    #[test]
    fn references_resolve_to_stored_secrets_and_configs_with_defaults() {
        let (_dir, store) = store_with_files();
        let by_id = SecretReference {
            secret_id: "sec4".into(), // a unique prefix
            ..Default::default()
        };
        let conf = ConfigReference {
            config_name: "nginx.conf".into(),
            ..Default::default()
        };
        let c = resolved(&store, spec_with(vec![by_name("db_pw"), by_id], vec![conf]))
            .expect("resolves");
        let (a, b) = (&c.secrets[0], &c.secrets[1]);
        assert_eq!(
            (a.secret_id.as_str(), a.secret_name.as_str()),
            ("sec123", "db_pw")
        );
        assert_eq!(
            (b.secret_id.as_str(), b.secret_name.as_str()),
            ("sec456", "api_key")
        );
        let f = a.file.clone().unwrap_or_default();
        assert_eq!(
            (f.name.as_str(), f.uid.as_str(), f.gid.as_str(), f.mode),
            ("db_pw", "0", "0", 0o444)
        );
        assert_eq!(shoal_proto::spec::secret_target(a), "/run/secrets/db_pw");
        let cf = c.configs[0].file.clone().unwrap_or_default();
        assert_eq!(
            (c.configs[0].config_id.as_str(), cf.name.as_str()),
            ("cfg123", "/nginx.conf")
        );
    }

    #[test]
    fn unknown_ambiguous_and_clashing_references_are_refused() {
        let (_dir, store) = store_with_files();
        assert_eq!(
            resolved(&store, spec_with(vec![by_name("nope")], vec![])),
            Err("secret not found: nope".into())
        );
        assert_eq!(
            resolved(&store, spec_with(vec![by_name("sec")], vec![])),
            Err("secret \"sec\" is ambiguous: 2 secret ids start with it".into())
        );
        let conf = ConfigReference {
            config_name: "other".into(),
            ..Default::default()
        };
        assert_eq!(
            resolved(&store, spec_with(vec![], vec![conf])),
            Err("config not found: other".into())
        );
        // By id, then by name: the same default target once the name is known.
        let by_id = SecretReference {
            secret_id: "sec123".into(),
            ..Default::default()
        };
        let got = resolved(&store, spec_with(vec![by_id, by_name("db_pw")], vec![]));
        assert!(
            got.as_ref()
                .is_err_and(|e| e.contains("/run/secrets/db_pw is given more than once")),
            "{got:?}"
        );
    }

    #[test]
    fn registry_credentials_are_kept_on_update_and_never_shown() {
        let stored = spec_with(vec![], vec![]);
        let mut sent = stored.clone();
        if let Some(c) = container_mut(&mut sent) {
            c.registry_auth = None;
        }
        keep_registry_auth(Some(&stored), &mut sent);
        assert_eq!(
            sent, stored,
            "an update without credentials keeps the stored ones"
        );
        let mut replaced = stored.clone();
        if let Some(c) = container_mut(&mut replaced) {
            c.registry_auth = Some(RegistryAuth {
                username: "new".into(),
                ..Default::default()
            });
        }
        let before = replaced.clone();
        keep_registry_auth(Some(&stored), &mut replaced);
        assert_eq!(replaced, before, "credentials sent replace the stored ones");

        let svc = Service {
            spec: Some(stored.clone()),
            previous_spec: Some(Box::new(stored.clone())),
            ..Default::default()
        };
        let shown = without_registry_auth(svc);
        for spec in [shown.spec.as_ref(), shown.previous_spec.as_deref()] {
            let c = spec.and_then(container).expect("container");
            assert!(c.registry_auth.is_none());
        }
        let task = Task {
            spec: stored.task.clone(),
            ..Default::default()
        };
        let shown = task_without_registry_auth(task);
        let c = shown.spec.and_then(|t| t.container).expect("container");
        assert!(c.registry_auth.is_none());
    }
}

//! `secret create|ls|inspect|rm`: named immutable data, stored sealed in the Raft store. A
//! secret's data goes in once and only ever comes out to the nodes whose tasks mount it: no
//! reply of the control API carries it.

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status};

use super::named_data::{self, impl_named_data};
use super::ControlApi;
use crate::store::State;

impl_named_data!(
    Secret, SecretSpec, secret,
    store: find_secret, secret, secrets,
    actions: CreateSecret, RemoveSecret, UpdateSecret,
    fn shown(self) -> Self {
        without_data(self)
    }
);

/// Finds a secret by id, name or unique id prefix.
pub fn find_secret(s: &State, name_or_id: &str) -> Result<Secret, Status> {
    named_data::find(s, name_or_id)
}

/// The secret as the control API shows it: without its data.
pub fn without_data(mut secret: Secret) -> Secret {
    if let Some(spec) = secret.spec.as_mut() {
        spec.data.clear();
    }
    secret
}

/// `secret create`: checks the name, labels and size, then writes the secret once.
pub(super) async fn create_secret(
    api: &ControlApi,
    request: Request<CreateSecretRequest>,
) -> Result<Response<CreateSecretResponse>, Status> {
    let secret = named_data::create(api, request, |r| r.spec).await?;
    Ok(Response::new(CreateSecretResponse {
        secret: Some(secret),
    }))
}

/// `secret inspect`: the secret without its data.
pub(super) async fn get_secret(
    api: &ControlApi,
    request: Request<GetSecretRequest>,
) -> Result<Response<GetSecretResponse>, Status> {
    let secret = named_data::get(api, request, |r| r.name_or_id)?;
    Ok(Response::new(GetSecretResponse {
        secret: Some(secret),
    }))
}

/// `secret ls`: every secret without its data, ordered by name.
pub(super) async fn list_secrets(
    api: &ControlApi,
    request: Request<ListSecretsRequest>,
) -> Result<Response<ListSecretsResponse>, Status> {
    let secrets = named_data::list(api, &request)?;
    Ok(Response::new(ListSecretsResponse { secrets }))
}

/// `secret rm`: refused while a service mounts the secret (the store names the service).
pub(super) async fn remove_secret(
    api: &ControlApi,
    request: Request<RemoveSecretRequest>,
) -> Result<Response<RemoveSecretResponse>, Status> {
    let id = named_data::remove::<Secret, _>(api, request, |r| r.name_or_id).await?;
    Ok(Response::new(RemoveSecretResponse { id }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::logs::LogBroker;
    use crate::test_support::{apply, counted_store};
    use std::sync::atomic::Ordering;

    fn secret(id: &str, name: &str) -> Secret {
        Secret {
            id: id.into(),
            spec: Some(SecretSpec {
                name: name.into(),
                data: b"hunter2".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_are_found_by_name_id_or_prefix_and_shown_without_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = counted_store(dir.path());
        apply(
            &store,
            1,
            vec![
                Action::CreateSecret(secret("abc1", "db_pw")),
                Action::CreateSecret(secret("abd2", "api_key")),
            ],
        );
        store.read(|s| {
            assert_eq!(
                find_secret(s, "db_pw").map(|x| x.id).ok().as_deref(),
                Some("abc1")
            );
            assert_eq!(
                find_secret(s, "abd").map(|x| x.id).ok().as_deref(),
                Some("abd2")
            );
            let missing = find_secret(s, "nope").expect_err("missing");
            assert_eq!(
                (missing.code(), missing.message()),
                (tonic::Code::NotFound, "secret nope not found")
            );
            let ambiguous = find_secret(s, "ab").expect_err("ambiguous");
            assert_eq!(ambiguous.code(), tonic::Code::InvalidArgument);
            let shown = without_data(find_secret(s, "db_pw").expect("found"));
            assert!(shown.spec.expect("spec").data.is_empty());
        });
    }

    /// Every secret and config handler asks for the admin certificate before any work.
    #[tokio::test]
    async fn handlers_refuse_a_caller_without_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, counting) = counted_store(dir.path());
        let api = ControlApi::new(
            store,
            LogBroker::new(crate::dispatcher::Sessions::default()),
            "127.0.0.1:4242".into(),
        );
        let spec = SecretSpec {
            name: "a".into(),
            data: b"x".to_vec(),
            ..Default::default()
        };
        let config = ConfigSpec {
            name: "a".into(),
            data: b"x".to_vec(),
            ..Default::default()
        };
        let name = || "a".to_string();
        let codes = [
            create_secret(&api, Request::new(CreateSecretRequest { spec: Some(spec) }))
                .await
                .err(),
            get_secret(&api, Request::new(GetSecretRequest { name_or_id: name() }))
                .await
                .err(),
            list_secrets(&api, Request::new(ListSecretsRequest {}))
                .await
                .err(),
            remove_secret(
                &api,
                Request::new(RemoveSecretRequest { name_or_id: name() }),
            )
            .await
            .err(),
            super::super::config::create_config(
                &api,
                Request::new(CreateConfigRequest { spec: Some(config) }),
            )
            .await
            .err(),
            super::super::config::get_config(
                &api,
                Request::new(GetConfigRequest { name_or_id: name() }),
            )
            .await
            .err(),
            super::super::config::list_configs(&api, Request::new(ListConfigsRequest {}))
                .await
                .err(),
            super::super::config::remove_config(
                &api,
                Request::new(RemoveConfigRequest { name_or_id: name() }),
            )
            .await
            .err(),
        ];
        for (i, status) in codes.into_iter().enumerate() {
            assert_eq!(
                status.map(|s| s.code()),
                Some(tonic::Code::Unauthenticated),
                "call {i}"
            );
        }
        assert_eq!(counting.proposals.load(Ordering::SeqCst), 0);
    }
}

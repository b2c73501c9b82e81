//! What `secret` and `config` share: named immutable data, written once, found by id, name or
//! unique id prefix, listed by name and removed unless a service mounts it. The one difference,
//! that a secret's data never leaves in a reply, is [`NamedData::shown`].

use std::collections::HashMap;

use shoal_proto::spec::{validate_data, validate_data_name, validate_labels};
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{Meta, StoreAction};
use tonic::{Request, Status};

use super::{invalid, ControlApi};
use crate::auth::require_admin;
use crate::store::{State, StoreError};

/// A kind of named data (secret, config): its fields, its store lookups and its store actions.
pub(super) trait NamedData: Clone {
    /// What the client sends to create one.
    type Spec;

    /// The kind's name in messages ("secret", "config").
    const KIND: &'static str;

    /// A new object of this kind.
    fn new(id: String, meta: Meta, spec: Self::Spec) -> Self;

    /// The object's id.
    fn id(&self) -> &str;

    /// The object's name ("" without a spec).
    fn name(&self) -> &str;

    /// A spec's name, labels and data, for the checks on create.
    fn parts(spec: &Self::Spec) -> (&str, &HashMap<String, String>, &[u8]);

    /// The store's lookup by id, name or unique id prefix (`Err(n)`: `n` ids start with it).
    fn find_in<'s>(s: &'s State, name_or_id: &str) -> Result<Option<&'s Self>, usize>;

    /// The store's lookup by exact id.
    fn by_id<'s>(s: &'s State, id: &str) -> Option<&'s Self>;

    /// Every object of this kind in the store.
    fn all(s: &State) -> Vec<Self>;

    /// The store action that writes a new object.
    fn create_action(self) -> Action;

    /// The store action that removes the object with this id.
    fn remove_action(id: String) -> Action;

    /// The store action that puts the object (labels only: the store refuses other changes).
    fn update_action(self) -> Action;

    /// The version the object was last written at.
    fn version(&self) -> u64;

    /// The object with another spec; an empty `data` in it keeps the stored data (a
    /// labels-only update, as docker's `secret update` without `Data`).
    fn with_spec(self, spec: Self::Spec) -> Self;

    /// Logs a change to the object ("created", "removed") with its id and name.
    fn log(&self, what: &str);

    /// The object as the control API shows it.
    fn shown(self) -> Self {
        self
    }
}

/// Implements [`NamedData`] for a kind from its type, spec, message name, store lookups
/// (`find_*`, by id, all) and store actions; further items (`shown`) go in the impl as given.
macro_rules! impl_named_data {
    (
        $ty:ident, $spec:ident, $kind:ident,
        store: $find:ident, $by_id:ident, $all:ident,
        actions: $create:ident, $remove:ident, $update:ident
        $(, $extra:item)* $(,)?
    ) => {
        impl $crate::controlapi::named_data::NamedData for $ty {
            type Spec = $spec;
            const KIND: &'static str = stringify!($kind);

            fn new(id: String, meta: Meta, spec: $spec) -> Self {
                $ty {
                    id,
                    meta: Some(meta),
                    spec: Some(spec),
                }
            }

            fn id(&self) -> &str {
                &self.id
            }

            fn name(&self) -> &str {
                self.spec.as_ref().map_or("", |s| s.name.as_str())
            }

            fn parts(spec: &$spec) -> (&str, &std::collections::HashMap<String, String>, &[u8]) {
                (&spec.name, &spec.labels, &spec.data)
            }

            fn find_in<'s>(s: &'s State, name_or_id: &str) -> Result<Option<&'s Self>, usize> {
                s.$find(name_or_id)
            }

            fn by_id<'s>(s: &'s State, id: &str) -> Option<&'s Self> {
                s.$by_id(id)
            }

            fn all(s: &State) -> Vec<Self> {
                s.$all().cloned().collect()
            }

            fn create_action(self) -> Action {
                Action::$create(self)
            }

            fn remove_action(id: String) -> Action {
                Action::$remove(id)
            }

            fn update_action(self) -> Action {
                Action::$update(self)
            }

            fn version(&self) -> u64 {
                self.meta.as_ref().map_or(0, |m| m.version)
            }

            fn with_spec(mut self, mut spec: $spec) -> Self {
                if spec.data.is_empty() {
                    spec.data = self.spec.take().map(|s| s.data).unwrap_or_default();
                }
                self.spec = Some(spec);
                self
            }

            fn log(&self, what: &str) {
                tracing::info!(
                    $kind.id = %self.id,
                    $kind.name = %self.name(),
                    "{} {what}",
                    Self::KIND
                );
            }

            $($extra)*
        }
    };
}
pub(super) use impl_named_data;

/// Finds an object by id, name or unique id prefix.
pub fn find<T: NamedData>(s: &State, name_or_id: &str) -> Result<T, Status> {
    let kind = T::KIND;
    match T::find_in(s, name_or_id) {
        Ok(Some(found)) => Ok(found.clone()),
        Ok(None) => Err(Status::not_found(format!("{kind} {name_or_id} not found"))),
        Err(n) => Err(Status::invalid_argument(format!(
            "{kind} {name_or_id:?} is ambiguous: {n} {kind} ids start with it"
        ))),
    }
}

/// `create`: checks the name, labels and size, then writes the object once.
pub(super) async fn create<T: NamedData, R>(
    api: &ControlApi,
    request: Request<R>,
    spec: impl FnOnce(R) -> Option<T::Spec>,
) -> Result<T, Status> {
    require_admin(&api.store, &request)?;
    let spec =
        spec(request.into_inner()).ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    let (name, labels, data) = T::parts(&spec);
    validate_data_name(T::KIND, name).map_err(invalid)?;
    validate_labels("--label", labels.iter()).map_err(invalid)?;
    validate_data(T::KIND, data).map_err(invalid)?;
    let object = T::new(
        shoal_proto::new_id(),
        Meta::new_at(shoal_proto::now_ns()),
        spec,
    );
    // A name already taken comes back from the store as "KIND NAME already exists".
    api.write(object.clone().create_action()).await?;
    object.log("created");
    let object = api
        .store
        .read(|s| T::by_id(s, object.id()).cloned())
        .unwrap_or(object);
    Ok(object.shown())
}

/// `inspect`: one object, as shown.
pub(super) fn get<T: NamedData, R>(
    api: &ControlApi,
    request: Request<R>,
    name_or_id: impl FnOnce(R) -> String,
) -> Result<T, Status> {
    require_admin(&api.store, &request)?;
    let name = name_or_id(request.into_inner());
    Ok(api.store.read(|s| find::<T>(s, &name))?.shown())
}

/// `ls`: every object, as shown, ordered by name.
pub(super) fn list<T: NamedData, R>(
    api: &ControlApi,
    request: &Request<R>,
) -> Result<Vec<T>, Status> {
    require_admin(&api.store, request)?;
    let mut all: Vec<T> = api
        .store
        .read(|s| T::all(s).into_iter().map(T::shown).collect());
    all.sort_by(|a, b| a.name().cmp(b.name()).then(a.id().cmp(b.id())));
    Ok(all)
}

/// `rm`: refused while a service mounts the object (the store names the service); the id
/// removed.
pub(super) async fn remove<T: NamedData, R>(
    api: &ControlApi,
    request: Request<R>,
    name_or_id: impl FnOnce(R) -> String,
) -> Result<String, Status> {
    require_admin(&api.store, &request)?;
    let name = name_or_id(request.into_inner());
    let object = api.store.read(|s| find::<T>(s, &name))?;
    // Refused while a service mounts it: "KIND NAME is in use by service S".
    api.write_removal(T::remove_action(object.id().to_string()))
        .await?;
    object.log("removed");
    Ok(object.id().to_string())
}

/// `update`: new labels for an object whose name and data stay as they are (the store refuses
/// anything else, "data is immutable", as InvalidArgument); `version`, when not 0, must be the
/// one the client read.
pub(super) async fn update<T: NamedData, R>(
    api: &ControlApi,
    request: Request<R>,
    parts: impl FnOnce(R) -> (String, Option<T::Spec>, u64),
) -> Result<T, Status> {
    require_admin(&api.store, &request)?;
    let (name_or_id, spec, version) = parts(request.into_inner());
    let spec = spec.ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    validate_labels("--label", T::parts(&spec).1.iter()).map_err(invalid)?;
    let object = api.store.read(|s| find::<T>(s, &name_or_id))?;
    let found = object.version();
    if version != 0 && version != found {
        return Err(Status::failed_precondition(format!(
            "update out of sequence: {} {} is at version {found}, the update was based on \
             version {version}",
            T::KIND,
            object.name()
        )));
    }
    let object = object.with_spec(spec);
    match api
        .store
        .propose(vec![StoreAction {
            action: Some(object.clone().update_action()),
        }])
        .await
    {
        Ok(()) => {}
        // A changed name or data: the caller's mistake, named by the store.
        Err(StoreError::Conflict(msg)) => return Err(Status::invalid_argument(msg)),
        Err(e) => return Err(e.into()),
    }
    object.log("labels updated");
    let object = api
        .store
        .read(|s| T::by_id(s, object.id()).cloned())
        .unwrap_or(object);
    Ok(object.shown())
}

#[cfg(test)]
mod tests {
    use super::NamedData;
    use shoal_proto::v1::{Meta, Secret, SecretSpec};

    #[test]
    fn an_update_without_data_keeps_the_stored_data() {
        let spec = |data: &[u8], label: &str| SecretSpec {
            name: "pw".into(),
            labels: [("k".to_string(), label.to_string())].into(),
            data: data.to_vec(),
        };
        let stored = Secret::new("s1".into(), Meta::default(), spec(b"s3cret", "a"));
        let updated = stored.clone().with_spec(spec(b"", "b"));
        let got = updated.spec.expect("spec");
        assert_eq!(got.data, b"s3cret");
        assert_eq!(got.labels["k"], "b");
        // Data given is taken as given (the store refuses it when it differs).
        let other = stored.with_spec(spec(b"other", "b"));
        assert_eq!(other.spec.expect("spec").data, b"other");
    }
}

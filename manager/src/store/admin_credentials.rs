//! The cluster object's admin credentials: which client certificates may administer the
//! cluster, and the two edits the store applies to that list (the legacy migration and revoke).
//!
//! Kept beside the store, which applies them, so that the store does not import `auth`
//! (`auth` re-exports them for the request side).

use shoal_proto::v1::{AdminCredential, Cluster};

/// Holder of the admin credential written by `shoal-manager init`.
pub const INIT_HOLDER: &str = "init";

/// Holder of a credential migrated from the holder-less list, whose holder nobody recorded.
pub const UNKNOWN_HOLDER: &str = "unknown";

/// Whether `fp` is one of the cluster's admin credentials.
pub fn is_admin(cluster: &Cluster, fp: &str) -> bool {
    cluster
        .admin_credentials
        .iter()
        .any(|c| c.fingerprint == fp)
}

/// Moves a cluster object's holder-less admin fingerprints (written before credentials had
/// holders) into its admin credentials; the first was `init`'s, the others' holders are unknown.
/// Idempotent; the old list is left empty so revoking a credential cannot miss a copy of it.
pub fn migrate_admin_credentials(cluster: &mut Cluster) {
    let created = cluster.meta.as_ref().map_or(0, |m| m.created_at);
    for (i, fp) in std::mem::take(&mut cluster.admin_fingerprints)
        .into_iter()
        .enumerate()
    {
        if is_admin(cluster, &fp) {
            continue;
        }
        let (holder, issued_at) = if i == 0 {
            (INIT_HOLDER, created)
        } else {
            (UNKNOWN_HOLDER, 0)
        };
        cluster.admin_credentials.push(AdminCredential {
            fingerprint: fp,
            holder: holder.to_string(),
            issued_at,
            expires_at: 0,
        });
    }
}

/// Removes the admin credentials with one of `fingerprints` and, when `holder` is not empty,
/// every one held by `holder`; returns whether any was removed.
pub fn revoke_admin_credentials(
    cluster: &mut Cluster,
    fingerprints: &[String],
    holder: &str,
) -> bool {
    let before = cluster.admin_credentials.len();
    cluster.admin_credentials.retain(|c| {
        !fingerprints.contains(&c.fingerprint) && (holder.is_empty() || c.holder != holder)
    });
    cluster.admin_credentials.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::cred;

    #[test]
    fn the_old_fingerprint_list_becomes_credentials_once() {
        let mut c = Cluster {
            meta: Some(shoal_proto::v1::Meta {
                created_at: 7,
                ..Default::default()
            }),
            admin_fingerprints: vec!["aa".into(), "bb".into()],
            ..Default::default()
        };
        migrate_admin_credentials(&mut c);
        assert!(c.admin_fingerprints.is_empty());
        assert_eq!(
            c.admin_credentials,
            vec![
                AdminCredential {
                    fingerprint: "aa".into(),
                    holder: INIT_HOLDER.into(),
                    issued_at: 7,
                    expires_at: 0,
                },
                AdminCredential {
                    fingerprint: "bb".into(),
                    holder: UNKNOWN_HOLDER.into(),
                    issued_at: 0,
                    expires_at: 0,
                },
            ]
        );
        assert!(is_admin(&c, "aa") && is_admin(&c, "bb"));
        // An old writer's list again (a store replayed from before): no duplicates.
        c.admin_fingerprints = vec!["aa".into()];
        migrate_admin_credentials(&mut c);
        assert_eq!(c.admin_credentials.len(), 2);
    }

    #[test]
    fn a_revoked_credential_is_no_longer_an_admin() {
        let mut c = Cluster {
            admin_credentials: vec![cred("aa", "init"), cred("bb", "n2"), cred("cc", "n2")],
            ..Default::default()
        };
        assert!(revoke_admin_credentials(&mut c, &["aa".into()], ""));
        assert!(!is_admin(&c, "aa"));
        assert!(is_admin(&c, "bb"));
        // A demoted or removed manager: every credential it holds goes.
        assert!(revoke_admin_credentials(&mut c, &[], "n2"));
        assert!(c.admin_credentials.is_empty());
        assert!(!revoke_admin_credentials(&mut c, &["zz".into()], "n9"));
    }
}

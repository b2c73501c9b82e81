//! The one place store errors become gRPC statuses, and a forwarded call's status becomes a
//! store error again: every handler returns `StoreError`s with `?` (or `Status::from`).

use tonic::{Code, Status};

use crate::store::{Kind, StoreError};

/// Metadata key carrying an out-of-sequence refusal's fields ("kind/id/expected/found"), so a
/// follower that forwarded the write gets [`StoreError::OutOfSequence`] back and can retry.
const OUT_OF_SEQUENCE_KEY: &str = "shoal-out-of-sequence";

/// Metadata key marking [`StoreError::NotCommitted`], so a follower that forwarded the write
/// reports the overload instead of a missing quorum.
const NOT_COMMITTED_KEY: &str = "shoal-not-committed";

/// A store error as the status a client sees.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
        StoreError::Conflict(msg) => Status::already_exists(msg),
        e @ StoreError::OutOfSequence { .. } => {
            let mut status = Status::aborted(e.to_string());
            if let StoreError::OutOfSequence {
                kind,
                id,
                expected,
                found,
            } = &e
            {
                let fields = format!("{}/{id}/{expected}/{found}", *kind as u8);
                if let Ok(v) = fields.parse() {
                    status.metadata_mut().insert(OUT_OF_SEQUENCE_KEY, v);
                }
            }
            status
        }
        StoreError::NotLeader { leader } => Status::unavailable(match leader {
            Some(l) => format!("this manager is not the leader (leader: {l})"),
            None => {
                "no leader: the managers have no quorum; writes are refused until it is restored"
                    .to_string()
            }
        }),
        StoreError::NoQuorum => Status::unavailable(
            "no quorum: writes are refused until a majority of managers is reachable",
        ),
        e @ StoreError::NotCommitted => {
            let mut status = Status::unavailable(e.to_string());
            status
                .metadata_mut()
                .insert(NOT_COMMITTED_KEY, tonic::metadata::MetadataValue::from_static("1"));
            status
        }
        other => Status::internal(other.to_string()),
    }
    }
}

/// A forwarded call's error, back in store terms (the inverse of `From<StoreError> for Status`
/// for what a leader answers).
pub fn from_status(s: Status) -> StoreError {
    if let Some(e) = out_of_sequence(&s) {
        return e;
    }
    if s.code() == Code::Unavailable && s.metadata().contains_key(NOT_COMMITTED_KEY) {
        return StoreError::NotCommitted;
    }
    match s.code() {
        Code::AlreadyExists => StoreError::Conflict(s.message().to_string()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            StoreError::NoQuorum
        }
        _ => StoreError::Conflict(s.message().to_string()),
    }
}

/// The out-of-sequence refusal a forwarded write's status carries, if it is one.
pub fn out_of_sequence(s: &Status) -> Option<StoreError> {
    if s.code() != Code::Aborted {
        return None;
    }
    let fields = s.metadata().get(OUT_OF_SEQUENCE_KEY)?.to_str().ok()?;
    // The id never holds '/', but split from both ends anyway so it could.
    let (kind, rest) = fields.split_once('/')?;
    let (rest, found) = rest.rsplit_once('/')?;
    let (id, expected) = rest.rsplit_once('/')?;
    let kind = match kind.parse::<u8>().ok()? {
        0 => Kind::Cluster,
        1 => Kind::Node,
        2 => Kind::Service,
        3 => Kind::Task,
        5 => Kind::Network,
        _ => return None,
    };
    Some(StoreError::OutOfSequence {
        kind,
        id: id.to_string(),
        expected: expected.parse().ok()?,
        found: found.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_sequence_survives_a_forward() {
        let e = StoreError::OutOfSequence {
            kind: Kind::Node,
            id: "n1".into(),
            expected: 4,
            found: 9,
        };
        let status = Status::from(e);
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(status.message().starts_with("update out of sequence"));
        match out_of_sequence(&status) {
            Some(StoreError::OutOfSequence {
                kind: Kind::Node,
                id,
                expected: 4,
                found: 9,
            }) => assert_eq!(id, "n1"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(out_of_sequence(&Status::aborted("other")).is_none());
    }

    #[test]
    fn an_overload_survives_a_forward_and_a_lost_quorum_stays_one() {
        let status = Status::from(StoreError::NotCommitted);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("overloaded"),
            "{}",
            status.message()
        );
        assert!(matches!(from_status(status), StoreError::NotCommitted));
        let status = Status::from(StoreError::NoQuorum);
        assert!(status.message().starts_with("no quorum"));
        assert!(matches!(from_status(status), StoreError::NoQuorum));
    }
}

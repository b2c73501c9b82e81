//! Raft consensus driving the store.

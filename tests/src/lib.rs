//! Shoal testbed.

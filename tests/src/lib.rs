//! Shoal testbed.

pub mod testbed;

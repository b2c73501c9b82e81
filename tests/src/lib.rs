//! Shoal testbed.

pub mod image_fixture;
pub mod registry;

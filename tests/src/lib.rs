//! Shoal testbed: network-namespace hosts, registry fixture, end-to-end helpers.

pub mod app_image;
pub mod bench_support;
pub mod capture;
pub mod docker_cli;
pub mod ha;
pub mod image_fixture;
pub mod registry;
pub mod stack_support;
pub mod steady;
pub mod testbed;

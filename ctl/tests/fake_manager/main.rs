//! Drives the real `shoalctl` binary against an in-process fake manager (the Control service over
//! mutual TLS with a freshly made CA), the way a user would: exit codes, stdout and stderr.

mod confinement;
mod data;
mod docker_env;
mod fake;
mod harness;
mod networks;
mod services;

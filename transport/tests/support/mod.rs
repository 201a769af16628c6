//! Helpers shared by several test binaries.

pub mod auth_server;

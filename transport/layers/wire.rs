//! `wire` alone: quill-transport's codec layer compiled in a crate that has no
//! `proto`, `sim`, `auth` or `driver`, so the build rejects any use of them from
//! `wire` (see Cargo.toml).
// Items `wire` offers to the layers above are unused in here.
#![allow(dead_code)]

// Their unit tests need the dev-dependencies and `sim`; `clippy --all-targets`
// compiles these targets as tests too, with the layers left out.
#[cfg(not(test))]
#[path = "../src/wire/mod.rs"]
pub mod wire;

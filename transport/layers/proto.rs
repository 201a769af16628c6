//! `wire` + `proto` alone: quill-transport's sans-IO core compiled in a crate that
//! has no `sim`, `fuzzing`, `auth` or `driver`, so the build rejects any use of them
//! from `proto` (see Cargo.toml).
// What `proto` offers to the layers above (items, re-exports) is unused in here.
#![allow(dead_code, unused_imports)]

// Their unit tests need the dev-dependencies and `sim`; `clippy --all-targets`
// compiles these targets as tests too, with the layers left out.
#[cfg(not(test))]
#[path = "../src/wire/mod.rs"]
mod wire;

#[cfg(not(test))]
#[path = "../src/proto/mod.rs"]
mod proto;

fn main() {}

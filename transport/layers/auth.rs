//! `wire` + `proto` + `auth` alone: quill-transport's account store and login
//! compiled in a crate that has no `driver`, `sim` or `fuzzing`, so the build
//! rejects any use of them from `auth` (see Cargo.toml).
// What the layers offer to the ones above (items, re-exports) is unused in here.
#![allow(dead_code, unused_imports)]

// Their unit tests need the dev-dependencies and `sim`; `clippy --all-targets`
// compiles these targets as tests too, with the layers left out.
#[cfg(not(test))]
#[path = "../src/wire/mod.rs"]
mod wire;

#[cfg(not(test))]
#[path = "../src/proto/mod.rs"]
mod proto;

#[cfg(not(test))]
#[path = "../src/auth/mod.rs"]
mod auth;

fn main() {}

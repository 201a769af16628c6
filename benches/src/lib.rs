//! quill-bench: criterion micro-benchmarks live in `benches/`, the loopback and
//! comparison harness in the `quill-bench` binary. What both agree on (host key,
//! account, client configuration) is [`common`].
#![warn(missing_docs)]

pub mod common;

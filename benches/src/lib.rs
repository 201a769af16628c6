//! What `quill-bench`'s processes and the criterion benchmarks agree on: the host key,
//! the account and the client configuration ([`common`]).

pub mod common;

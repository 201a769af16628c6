//! quill-bench: criterion micro-benchmarks live in `benches/`; the comparison harness arrives with its issue.
#![warn(missing_docs)]

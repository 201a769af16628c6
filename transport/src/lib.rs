//! quill-transport: wire codec, sans-IO protocol core and (later) the mio driver.
//!
//! Layering, top to bottom (each layer only uses the ones below it):
//! `proto` (sans-IO connections and endpoint) → `wire` (pure encode/decode).
#![warn(missing_docs)]

pub mod proto;
pub mod wire;

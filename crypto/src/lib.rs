//! quill-crypto: primitives and the key schedule. No I/O, no protocol state.
#![warn(missing_docs)]

//! Decodes a payload as frames (and as transport parameters); every decoded frame
//! must re-encode to exactly `encoded_len()` bytes and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quill_transport::wire::fuzz_support::decode_frames(data);
});

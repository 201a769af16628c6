//! A server `Endpoint` with a live, logged-in connection, fed hostile input: raw
//! datagrams, and frames sealed with the client's real 1-RTT keys, interleaved with
//! clock jumps and legitimate traffic (`quill_transport::fuzzing`, docs/FUZZING.md).
//! Panics, and bounds the server's queues and tables break, are crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quill_transport::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| {
    run(Target::Server, data);
});

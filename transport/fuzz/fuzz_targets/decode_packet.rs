//! Parses a datagram as coalesced packets: `parse_header` over every packet, plus
//! Version Negotiation / Retry parsing and frame decoding of each payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quill_transport::wire::fuzz_support::decode_packet(data);
});

//! Hand-made datagrams shared by the endpoint and loopback test binaries.
#![allow(dead_code)]

/// A long-header datagram of `len` bytes (at least 20) for an unknown version
/// (0xff00001d, QUIC draft 29) with Destination CID `[0xdd; 8]` and Source CID
/// `[0x55; 5]`: what a Version Negotiation answers.
pub fn unknown_version_datagram(len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[0] = 0xc0;
    d[1..5].copy_from_slice(&0xff00_001du32.to_be_bytes());
    d[5] = 8;
    d[6..14].copy_from_slice(&[0xdd; 8]);
    d[14] = 5;
    d[15..20].copy_from_slice(&[0x55; 5]);
    d
}

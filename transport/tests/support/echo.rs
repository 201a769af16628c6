//! An echo round trip over a blocking connection, shared by the loopback tests and
//! the relay test in `interop-tests` (which includes this file by path).

use std::io::{Read, Write};

use quill_transport::driver::blocking::BlockingConnection;

/// SHA-256 of `data`, to compare large buffers with a short failure message.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Writes `len` patterned bytes on a new bidirectional stream (from another thread,
/// then finishes it) and checks that the server echoes exactly those bytes back.
pub fn echo_round_trip(conn: &BlockingConnection, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut stream = conn.open_bi().unwrap();
    let writer_data = data.clone();
    let mut w = stream.try_clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&writer_data).unwrap();
        w.finish().unwrap();
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256(&back), sha256(&data), "echoed bytes differ");
}

//! Streams, flow control and reassembly.

//! Loss recovery and congestion control (RFC 9002).

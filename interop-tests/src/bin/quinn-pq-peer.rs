//! `quinn-pq-peer`: `quinn-peer` built with the `aws-lc-pq` feature, so that its
//! hq-interop mode uses rustls's aws-lc-rs provider with X25519MLKEM768 preferred: a
//! post-quantum key exchange from a stack nobody here wrote. Build it with
//! `bash interop-tests/peers/setup.sh quinn-pq`.

#[path = "quinn-peer.rs"]
mod quinn_peer;

fn main() -> std::process::ExitCode {
    quinn_peer::main()
}

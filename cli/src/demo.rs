//! `quill demo [--bytes N]`: a whole session on loopback with nothing set up.
//!
//! In a temporary directory (removed at the end): a fresh Ed25519 host key and an
//! account database; a server on 127.0.0.1:0 that allows registration; a new account
//! `demo<random>` registered with a random password, then a fresh password login
//! (the client pins the host key's fingerprint); N bytes uploaded (PUT) and downloaded
//! (GET) with SHA-256 checked on both ends; then keep-alive rounds: the connection sits
//! idle for longer than its idle timeout (so only the transport's keep-alive PINGs keep
//! it open) and an echo round trip proves it survived.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::packet::Suite;
use quill_crypto::random::{OsRandom, Random};
use quill_transport::driver::blocking::BlockingConnection;
use quill_transport::proto::RetryPolicy;
use quill_transport::{ClientConfig, HostKeyPolicy, Login, TransportConfig};
use zeroize::Zeroizing;

use crate::args::DemoArgs;
use crate::client::{connect_config, net_err, read_chunks, read_line, Target, KEY_EXCHANGE};
use crate::exit::{CliError, CliResult, INTEGRITY};
use crate::interrupt;
use crate::output::say;
use crate::server::{spawn, ServerOptions};
use crate::transfer::rate_line;
use quill_transport::service::{hex, Request};

/// Keep-alive rounds.
const ROUNDS: u32 = 3;
/// Client keep-alive interval.
const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// Client idle timeout (the effective one is the smaller of both sides').
const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Idle gap before each keep-alive round: longer than the idle timeout.
const IDLE_GAP: Duration = Duration::from_millis(2000);

/// A deterministic byte generator (xorshift64*) so that N bytes can be sent and
/// checked without holding them in memory.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CliError> {
    let mut b = [0u8; N];
    OsRandom::new()
        .fill(&mut b)
        .map_err(|e| CliError::connection(format!("no randomness from the OS: {e}")))?;
    Ok(b)
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::connection(format!("demo: {what}: {e}"))
}

/// PUT then GET of `bytes` pattern bytes; returns (upload time, download time, sha).
fn transfer(
    conn: &BlockingConnection,
    bytes: u64,
    seed: u64,
) -> Result<(Duration, Duration, String), CliError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut pat = Pattern(seed);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pat.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        left -= n as u64;
    }
    let sha = hex(ctx.finish().as_ref());

    let start = Instant::now();
    let mut s = conn
        .open_bi()
        .map_err(|e| net_err("cannot open a stream", e))?;
    let put = Request::Put {
        size: bytes,
        sha256: sha.clone(),
        path: "demo.bin".into(),
    };
    s.write_all(put.line().as_bytes())
        .map_err(|e| net_err("upload failed", e))?;
    let mut pat = Pattern(seed);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pat.fill(&mut buf[..n]);
        s.write_all(&buf[..n])
            .map_err(|e| net_err("upload failed", e))?;
        left -= n as u64;
    }
    s.finish().map_err(|e| net_err("upload failed", e))?;
    let answer = read_line(&mut s).map_err(|e| net_err("upload failed", e))?;
    if answer != "OK" {
        return Err(CliError::connection(format!(
            "demo: the server refused the upload: {answer}"
        )));
    }
    let up = start.elapsed();

    let start = Instant::now();
    let mut s = conn
        .open_bi()
        .map_err(|e| net_err("cannot open a stream", e))?;
    s.write_all(
        Request::Get {
            path: "demo.bin".into(),
        }
        .line()
        .as_bytes(),
    )
    .and_then(|_| s.finish())
    .map_err(|e| net_err("download failed", e))?;
    let answer = read_line(&mut s).map_err(|e| net_err("download failed", e))?;
    if answer != format!("OK {bytes} {sha}") {
        return Err(CliError::new(
            INTEGRITY,
            format!("demo: unexpected answer to GET: {answer}"),
        ));
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0u64;
    read_chunks(&mut s, "download failed", |chunk| {
        got += chunk.len() as u64;
        ctx.update(chunk);
        Ok(())
    })?;
    let down = start.elapsed();
    let back = hex(ctx.finish().as_ref());
    if got != bytes || back != sha {
        return Err(CliError::new(
            INTEGRITY,
            format!(
                "demo: downloaded {got} bytes with SHA-256 {back}, expected {bytes} with {sha}"
            ),
        ));
    }
    Ok((up, down, sha))
}

/// `quill demo`.
pub fn run(a: &DemoArgs) -> CliResult {
    let dir = tempfile::Builder::new()
        .prefix("quill-demo-")
        .tempdir()
        .map_err(io_err("cannot create a temporary directory"))?;
    interrupt::remove_on_signal(dir.path());
    let root = dir.path().join("files");
    std::fs::create_dir(&root).map_err(io_err("cannot create the files directory"))?;
    let key_path = dir.path().join("host_key");
    let host_key = HostKeyPair::generate(&OsRandom::new())
        .map_err(|e| CliError::connection(format!("demo: cannot generate a host key: {e}")))?;
    host_key
        .write_to(&key_path)
        .map_err(|e| CliError::connection(format!("demo: cannot write the host key: {e}")))?;
    let host_key = Arc::new(
        HostKeyPair::read_from(&key_path)
            .map_err(|e| CliError::connection(format!("demo: cannot read the host key: {e}")))?,
    );
    let server = spawn(ServerOptions {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        host_key,
        accounts: dir.path().join("accounts.db"),
        root: Some(root),
        max_upload_size: None,
        allow_register: true,
        transport: TransportConfig::default(),
        retry: RetryPolicy::Never,
        sessions: Default::default(),
        registrations_per_address: 5,
        max_half_open_per_address: 32,
        certificate: None,
        quic_v1: true,
        quic_v2: true,
        hq_interop: false,
        reset_key: None,
        retry_key: None,
        workers: 1,
        server_id: vec![0, 0],
    })?;
    let result = session(a, &server.addr, &server.fingerprint);
    server.stop();
    drop(dir);
    result
}

fn session(a: &DemoArgs, addr: &std::net::SocketAddr, fingerprint: &str) -> CliResult {
    let target = Target::new(addr.ip().to_string(), addr.port());
    let suffix = random_bytes::<3>()?;
    let user = format!("demo{}", hex(&suffix));
    let password = Zeroizing::new(hex(&random_bytes::<16>()?));
    let pinned = HostKeyPolicy::Pinned(vec![fingerprint.to_string()]);
    say!(
        "quill demo: a whole session on loopback ({})",
        target.display()
    )?;
    say!("  host key         {fingerprint} (fresh Ed25519 key, pinned by the client)")?;

    // 1. Register (creates the account and logs in).
    let config = ClientConfig::new(
        Login::Register {
            user: user.clone(),
            password: password.clone(),
            key: None,
        },
        pinned.clone(),
    );
    let reg = connect_config(target.clone(), config)?;
    say!(
        "  registered       {} in {:.1} ms (server says: {})",
        reg.conn.account(),
        reg.handshake.as_secs_f64() * 1e3,
        if reg.conn.message().is_empty() {
            "welcome"
        } else {
            reg.conn.message()
        }
    )?;
    reg.conn.close(0, "registered");

    // 2. Log in with the password, keep-alives on.
    let transport = TransportConfig {
        keep_alive_interval: Some(KEEP_ALIVE),
        idle_timeout: IDLE_TIMEOUT,
        ..TransportConfig::default()
    };
    let mut config = ClientConfig::new(
        Login::Password {
            user: user.clone(),
            password,
        },
        pinned,
    );
    config.transport = Arc::new(transport);
    let s = connect_config(target, config)?;
    say!(
        "  handshake+login  {:.1} ms as {} ({}, key exchange {KEY_EXCHANGE})",
        s.handshake.as_secs_f64() * 1e3,
        s.conn.account(),
        s.conn.suite().map_or("unknown suite", Suite::name)
    )?;

    // 3. Transfer with SHA-256 on both ends.
    let seed = u64::from_le_bytes(random_bytes::<8>()?) | 1;
    let (up, down, sha) = transfer(&s.conn, a.bytes, seed)?;
    say!("  upload           {}", rate_line(a.bytes, up))?;
    say!("  download         {}", rate_line(a.bytes, down))?;
    say!("  SHA-256          {sha} matched both ways")?;

    // 4. Keep-alive rounds: idle longer than the idle timeout, then an echo.
    let mut echo = s
        .conn
        .open_bi()
        .map_err(|e| net_err("cannot open a stream", e))?;
    echo.write_all(Request::Echo.line().as_bytes())
        .map_err(|e| net_err("echo failed", e))?;
    let mut answered = 0;
    for round in 1..=ROUNDS {
        std::thread::sleep(IDLE_GAP);
        let probe = round.to_be_bytes();
        let mut back = [0u8; 4];
        match echo
            .write_all(&probe)
            .and_then(|_| echo.read_exact(&mut back))
        {
            Ok(()) if back == probe => answered += 1,
            Ok(()) => break,
            Err(e) => {
                return Err(net_err(
                    &format!("keep-alive round {round} failed (the connection idled out)"),
                    e,
                ))
            }
        }
    }
    say!(
        "  keep-alives      {ROUNDS} rounds sent, {answered} answered: {} s idle each, longer than \
         the {} s idle timeout, bridged by keep-alive PINGs every {} ms",
        IDLE_GAP.as_secs_f64(),
        IDLE_TIMEOUT.as_secs_f64(),
        KEEP_ALIVE.as_millis()
    )?;
    say!(
        "  round-trip time  {:.3} ms (transport's smoothed RTT)",
        s.conn.rtt().as_secs_f64() * 1e3
    )?;
    let _ = echo.finish();
    s.conn.close(0, "demo done");
    if answered != ROUNDS {
        return Err(CliError::connection(format!(
            "demo: only {answered} of {ROUNDS} keep-alive rounds were answered"
        )));
    }
    say!("demo finished: everything worked. Next: quill keygen, quill server, quill register.")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_across_chunkings() {
        let mut a = vec![0u8; 1000];
        Pattern(7).fill(&mut a);
        let mut b = vec![0u8; 1000];
        let mut p = Pattern(7);
        // Chunk sizes that are multiples of 8 continue the same stream.
        p.fill(&mut b[..496]);
        p.fill(&mut b[496..]);
        assert_eq!(a, b);
        let mut c = vec![0u8; 1000];
        Pattern(8).fill(&mut c);
        assert_ne!(a, c);
    }
}

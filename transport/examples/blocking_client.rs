//! A quill client on the blocking API: connect, log in, send one line on a
//! bidirectional stream and print what comes back.
//!
//! ```text
//! cargo run -p quill-transport --example blocking_client ADDR FINGERPRINT [LINE]
//! ```
//!
//! `FINGERPRINT` is what `echo_server` printed: the client refuses any other host key.

use std::io::{Read, Write};

use quill_transport::driver::blocking;
use quill_transport::proto::{ClientConfig, HostKeyPolicy, Login};
use zeroize::Zeroizing;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: blocking_client ADDR FINGERPRINT [LINE]";
    let addr = args.next().ok_or(usage)?.parse()?;
    let fingerprint = args.next().ok_or(usage)?;
    let line = args.next().unwrap_or_else(|| "hello, quill".into());

    // Log in with a password, and accept only the host key we were told about.
    let config = ClientConfig::new(
        Login::Password {
            user: "demo".into(),
            password: Zeroizing::new("demo".into()),
        },
        HostKeyPolicy::Pinned(vec![fingerprint]),
    );
    // Runs the event loop on a background thread; returns once logged in.
    let conn = blocking::connect(addr, config)?;
    println!(
        "logged in as {} ({}), rtt {:?}",
        conn.account(),
        conn.message(),
        conn.rtt()
    );

    // Streams implement std::io::Read and Write.
    let mut stream = conn.open_bi()?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    stream.finish()?; // our side is done: the server echoes, then finishes too
    let mut echo = String::new();
    stream.read_to_string(&mut echo)?;
    print!("echo: {echo}");

    conn.close(0, "bye");
    Ok(())
}

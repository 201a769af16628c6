//! X25519 and Ed25519 implementations side by side (issue 17): ring (what
//! quill-crypto uses), the dalek crates (curve25519-dalek's `simd` backend,
//! AVX2 chosen at run time on x86_64) and libcrux (HACL*-derived portable code).
//!
//! Run: `cargo bench -p quill-bench --bench crypto_alternatives -- --warm-up-time 1 --measurement-time 2`
//!
//! Every implementation is measured `QUILL_BENCH_ROUNDS` times (default 2) in
//! turn, `ring/r1 dalek/r1 libcrux/r1 ring/r2 ...`, so load from other work on
//! the machine hits all of them alike. Each case first checks that all
//! implementations give the same bytes. Results are in docs/BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ed25519_dalek::{Signer, Verifier};
use ring::agreement;
use ring::signature::{self, KeyPair};

fn rounds() -> usize {
    std::env::var("QUILL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

const SCALAR: [u8; 32] = [0x42; 32];
const PEER_SCALAR: [u8; 32] = [0x24; 32];
const SEED: [u8; 32] = [0x17; 32];

/// A ring X25519 key with exactly this scalar (as quill-crypto's kex does).
fn ring_x25519_key(scalar: &[u8; 32]) -> agreement::EphemeralPrivateKey {
    #[allow(deprecated)]
    let fixed = ring::test::rand::FixedSliceRandom { bytes: scalar };
    agreement::EphemeralPrivateKey::generate(&agreement::X25519, &fixed).unwrap()
}

fn ring_x25519_public(scalar: &[u8; 32]) -> [u8; 32] {
    let public = ring_x25519_key(scalar).compute_public_key().unwrap();
    public.as_ref().try_into().unwrap()
}

fn ring_x25519(scalar: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, u);
    agreement::agree_ephemeral(ring_x25519_key(scalar), &peer, |ss| {
        <[u8; 32]>::try_from(ss).unwrap()
    })
    .unwrap()
}

fn dalek_x25519_public(scalar: &[u8; 32]) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(*scalar);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

fn dalek_x25519(scalar: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(*scalar);
    secret
        .diffie_hellman(&x25519_dalek::PublicKey::from(*u))
        .to_bytes()
}

fn libcrux_x25519_public(scalar: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    libcrux_curve25519::secret_to_public(&mut out, scalar);
    out
}

fn libcrux_x25519(scalar: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    assert!(libcrux_curve25519::ecdh(&mut out, u, scalar).is_ok());
    out
}

type X25519Fn = fn(&[u8; 32], &[u8; 32]) -> [u8; 32];
type PublicFn = fn(&[u8; 32]) -> [u8; 32];

fn x25519_benches(c: &mut Criterion) {
    let keygen: [(&str, PublicFn); 3] = [
        ("ring", ring_x25519_public),
        ("dalek", dalek_x25519_public),
        ("libcrux", libcrux_x25519_public),
    ];
    let agree: [(&str, X25519Fn); 3] = [
        ("ring", ring_x25519),
        ("dalek", dalek_x25519),
        ("libcrux", libcrux_x25519),
    ];
    let peer = ring_x25519_public(&PEER_SCALAR);
    for (name, f) in keygen {
        assert_eq!(f(&SCALAR), ring_x25519_public(&SCALAR), "{name} keygen");
    }
    for (name, f) in agree {
        assert_eq!(
            f(&SCALAR, &peer),
            ring_x25519(&SCALAR, &peer),
            "{name} agree"
        );
    }

    let mut g = c.benchmark_group("x25519_keygen");
    for r in 1..=rounds() {
        for (name, f) in keygen {
            g.bench_function(format!("{name}/r{r}"), |b| b.iter(|| f(black_box(&SCALAR))));
        }
    }
    g.finish();
    let mut g = c.benchmark_group("x25519_agree");
    for r in 1..=rounds() {
        for (name, f) in agree {
            g.bench_function(format!("{name}/r{r}"), |b| {
                b.iter(|| f(black_box(&SCALAR), black_box(&peer)))
            });
        }
    }
    g.finish();
}

fn ed25519_benches(c: &mut Criterion) {
    // A 32-byte message, like the transcript hash quill signs.
    let msg = [0x5au8; 32];
    let ring_key = signature::Ed25519KeyPair::from_seed_unchecked(&SEED).unwrap();
    let dalek_key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    let public: [u8; 32] = ring_key.public_key().as_ref().try_into().unwrap();
    let sig: [u8; 64] = ring_key.sign(&msg).as_ref().try_into().unwrap();
    assert_eq!(dalek_key.verifying_key().to_bytes(), public);
    assert_eq!(dalek_key.sign(&msg).to_bytes(), sig);
    assert_eq!(libcrux_ed25519::sign(&msg, &SEED).unwrap(), sig);
    let dalek_public = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    let dalek_sig = ed25519_dalek::Signature::from_bytes(&sig);

    let mut g = c.benchmark_group("ed25519_sign");
    for r in 1..=rounds() {
        g.bench_function(format!("ring/r{r}"), |b| {
            b.iter(|| ring_key.sign(black_box(&msg)))
        });
        g.bench_function(format!("dalek/r{r}"), |b| {
            b.iter(|| dalek_key.sign(black_box(&msg)))
        });
        g.bench_function(format!("libcrux/r{r}"), |b| {
            b.iter(|| libcrux_ed25519::sign(black_box(&msg), &SEED).unwrap())
        });
    }
    g.finish();

    // Each verify parses the 32-byte public key, as quill's `PublicKey::verify`
    // does; `dalek_parsed` reuses a parsed key (what caching it would give).
    let mut g = c.benchmark_group("ed25519_verify");
    for r in 1..=rounds() {
        g.bench_function(format!("ring/r{r}"), |b| {
            b.iter(|| {
                signature::UnparsedPublicKey::new(&signature::ED25519, black_box(&public))
                    .verify(black_box(&msg), black_box(&sig))
                    .unwrap()
            })
        });
        g.bench_function(format!("dalek/r{r}"), |b| {
            b.iter(|| {
                let key = ed25519_dalek::VerifyingKey::from_bytes(black_box(&public)).unwrap();
                let sig = ed25519_dalek::Signature::from_bytes(black_box(&sig));
                key.verify(black_box(&msg), &sig).unwrap()
            })
        });
        g.bench_function(format!("dalek_parsed/r{r}"), |b| {
            b.iter(|| {
                dalek_public
                    .verify(black_box(&msg), black_box(&dalek_sig))
                    .unwrap()
            })
        });
        g.bench_function(format!("libcrux/r{r}"), |b| {
            b.iter(|| {
                libcrux_ed25519::verify(black_box(&msg), black_box(&public), black_box(&sig))
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, x25519_benches, ed25519_benches);
criterion_main!(benches);

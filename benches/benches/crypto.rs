//! Micro-benchmarks of quill-crypto's primitives.
//!
//! Run: `cargo bench -p quill-bench --bench crypto -- --warm-up-time 1 --measurement-time 2`
//! Results are recorded in docs/BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::kex::{self, server_exchange, ClientKeyExchange};
use quill_crypto::packet::{Keys, Labels, Suite, TAG_LEN};
use quill_crypto::random::{OsRandom, SeededRandom};
use quill_crypto::schedule::{sha256, HandshakeSchedule, Secret};

fn kex_benches(c: &mut Criterion) {
    let rng = OsRandom::new();
    let mut g = c.benchmark_group("kex");
    g.bench_function("hybrid_client_keygen", |b| {
        b.iter(|| ClientKeyExchange::generate(&rng).unwrap())
    });
    let client = ClientKeyExchange::generate(&rng).unwrap();
    let share = client.share().to_vec();
    g.bench_function("hybrid_server_exchange", |b| {
        b.iter(|| server_exchange(black_box(&share), &rng).unwrap())
    });
    g.bench_function("hybrid_client_finish", |b| {
        b.iter_batched(
            || {
                let c = ClientKeyExchange::generate(&rng).unwrap();
                let (s, _) = server_exchange(c.share(), &rng).unwrap();
                (c, s)
            },
            |(c, s)| c.finish(&s).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let scalar = [0x42u8; 32];
    let peer = kex::x25519_public(&[0x24u8; 32]).unwrap();
    g.bench_function("x25519_keygen", |b| {
        b.iter(|| kex::x25519_public(black_box(&scalar)).unwrap())
    });
    g.bench_function("x25519_agree", |b| {
        b.iter(|| kex::x25519(black_box(&scalar), black_box(&peer)).unwrap())
    });
    g.finish();
}

fn schedule_benches(c: &mut Criterion) {
    let rng = SeededRandom::new([1; 32]);
    let client = ClientKeyExchange::generate(&rng).unwrap();
    let (_, shared) = server_exchange(client.share(), &rng).unwrap();
    let hello = sha256(b"hello");
    c.bench_function("schedule/handshake_schedule_new", |b| {
        b.iter(|| HandshakeSchedule::new(black_box(&shared), black_box(&hello)))
    });
}

fn hostkey_benches(c: &mut Criterion) {
    let key = HostKeyPair::generate(&OsRandom::new()).unwrap();
    let public = key.public();
    let msg = sha256(b"transcript");
    let sig = key.sign(&msg);
    let mut g = c.benchmark_group("hostkey");
    g.bench_function("ed25519_sign", |b| b.iter(|| key.sign(black_box(&msg))));
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| public.verify(black_box(&msg), black_box(&sig)).unwrap())
    });
    g.finish();
}

fn suite_id(s: Suite) -> &'static str {
    match s {
        Suite::Aes256Gcm => "aes256gcm",
        Suite::Aes128Gcm => "aes128gcm",
        Suite::ChaCha20Poly1305 => "chacha20poly1305",
    }
}

fn aead_benches(c: &mut Criterion) {
    let secret = Secret::from_bytes([7; 32]);
    let header = [0x40u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let mut g = c.benchmark_group("aead");
    for suite in Suite::ALL {
        let keys = Keys::new(suite, &secret, &Labels::QUILL);
        for len in [1200usize, 1452] {
            g.throughput(Throughput::Bytes(len as u64));
            let mut buf = vec![0xa5u8; len];
            let mut tag = [0u8; TAG_LEN];
            g.bench_function(format!("{}/seal/{len}", suite_id(suite)), |b| {
                b.iter(|| {
                    keys.packet
                        .seal_in_place(black_box(9), &header, &mut buf, &mut tag)
                        .unwrap()
                })
            });
            let mut sealed = vec![0xa5u8; len];
            keys.packet
                .seal_in_place(9, &header, &mut sealed, &mut tag)
                .unwrap();
            sealed.extend_from_slice(&tag);
            g.bench_function(format!("{}/open/{len}", suite_id(suite)), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |buf| keys.packet.open_in_place(9, &header, buf).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("header");
    let sample = [0x3cu8; 16];
    for suite in Suite::ALL {
        let keys = Keys::new(suite, &secret, &Labels::QUILL);
        g.bench_function(format!("{}/mask", suite_id(suite)), |b| {
            b.iter(|| keys.header.mask(black_box(&sample)).unwrap())
        });
    }
    g.finish();
}

fn password_benches(c: &mut Criterion) {
    let rng = OsRandom::new();
    let phc = quill_crypto::password::hash_password(b"correct horse", &rng).unwrap();
    let mut g = c.benchmark_group("password");
    g.sample_size(10);
    g.bench_function("argon2id_verify", |b| {
        b.iter(|| quill_crypto::password::verify_password(black_box(&phc), b"correct horse"))
    });
    g.finish();
}

criterion_group!(
    benches,
    kex_benches,
    schedule_benches,
    hostkey_benches,
    aead_benches,
    password_benches
);
criterion_main!(benches);

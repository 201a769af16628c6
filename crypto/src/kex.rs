//! Hybrid key exchange: ML-KEM-768 (FIPS 203, via `libcrux-ml-kem`) + X25519
//! (RFC 7748, ephemeral): public keys by `curve25519-dalek`'s fixed-base
//! multiplication, the shared secret by `ring` (each measured the faster one,
//! docs/BENCHMARKS.md "Implementations compared (issue 17)").
//!
//! Wire shapes, in the order TLS's X25519MLKEM768 uses:
//!
//! ```text
//! client share = mlkem768_ek (1184) || x25519_pub (32)   = 1216 bytes
//! server share = mlkem768_ct (1088) || x25519_pub (32)   = 1120 bytes
//! shared       = mlkem_ss    (32)   || x25519_ss  (32)   =   64 bytes
//! ```
//!
//! The server validates the encapsulation key (FIPS 203 §7.2); the client
//! checks the ciphertext length; both reject an all-zero X25519 result.

use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use ring::agreement;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::random::Random;
use crate::Error;

/// ML-KEM-768 encapsulation key length.
pub const MLKEM768_EK_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length.
pub const MLKEM768_CT_LEN: usize = 1088;
/// X25519 public key length.
pub const X25519_LEN: usize = 32;
/// Client key share: ML-KEM-768 ek (1184) || X25519 public key (32).
pub const CLIENT_SHARE_LEN: usize = MLKEM768_EK_LEN + X25519_LEN;
/// Server key share: ML-KEM-768 ciphertext (1088) || X25519 public key (32).
pub const SERVER_SHARE_LEN: usize = MLKEM768_CT_LEN + X25519_LEN;
/// Hybrid shared secret length: ML-KEM secret (32) || X25519 secret (32).
pub const SHARED_SECRET_LEN: usize = 64;

/// The 64-byte hybrid shared secret `mlkem_ss || x25519_ss`; zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; SHARED_SECRET_LEN]);

impl SharedSecret {
    /// The secret bytes, ML-KEM part first.
    pub fn as_bytes(&self) -> &[u8; SHARED_SECRET_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

/// The ML-KEM decapsulation key; libcrux's type does not zeroize itself.
struct MlKemSecret(MlKem768PrivateKey);

impl Drop for MlKemSecret {
    fn drop(&mut self) {
        self.0[0..].zeroize();
    }
}

/// Draws an X25519 ephemeral private scalar (32 bytes) from `rng`.
fn x25519_ephemeral(rng: &dyn Random) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut scalar = Zeroizing::new([0u8; 32]);
    rng.fill(&mut scalar[..])?;
    Ok(scalar)
}

/// X25519(k, 9), the public key of the (unclamped) scalar `k`: curve25519-dalek's
/// constant-time fixed-base multiplication (a precomputed Edwards-form table, then
/// the map to the Montgomery u-coordinate), clamping `k` as RFC 7748 §5 requires.
fn x25519_base(scalar: &[u8; 32]) -> [u8; 32] {
    curve25519_dalek::MontgomeryPoint::mul_base_clamped(*scalar).to_bytes()
}

/// A ring X25519 private key with exactly this (unclamped) scalar; ring clamps
/// it as RFC 7748 §5 requires.
///
/// ring only generates ephemeral keys from its own `SecureRandom`; feeding it
/// our bytes through `FixedSliceRandom` keeps key generation injectable
/// (deterministic tests) while the scalar arithmetic stays ring's.
pub(crate) fn x25519_from_scalar(
    scalar: &[u8; 32],
) -> Result<agreement::EphemeralPrivateKey, Error> {
    #[allow(deprecated)]
    let fixed = ring::test::rand::FixedSliceRandom { bytes: scalar };
    agreement::EphemeralPrivateKey::generate(&agreement::X25519, &fixed).map_err(|_| Error::Random)
}

/// X25519 with a ring ephemeral key. ring refuses an all-zero result
/// (RFC 7748 §6.1: "check for the all-zero value and abort if so"), which we
/// report as [`Error::InvalidX25519Share`].
fn x25519_agree(
    private: agreement::EphemeralPrivateKey,
    peer: &[u8],
    out: &mut [u8],
) -> Result<(), Error> {
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
    agreement::agree_ephemeral(private, &peer, |ss| {
        // Belt and braces: never accept an all-zero secret even if the
        // library's check were to change.
        if crate::ct_eq(ss, &[0u8; 32]) {
            return Err(Error::InvalidX25519Share);
        }
        out.copy_from_slice(ss);
        Ok(())
    })
    .map_err(|_| Error::InvalidX25519Share)?
}

/// RFC 7748 X25519(k, u) through ring, for known-answer tests and benches:
/// `scalar` is the raw 32-byte private scalar, `u` the peer's coordinate.
pub fn x25519(scalar: &[u8; 32], u: &[u8; 32]) -> Result<[u8; 32], Error> {
    let key = x25519_from_scalar(scalar)?;
    let mut out = [0u8; 32];
    x25519_agree(key, u, &mut out)?;
    Ok(out)
}

/// RFC 7748 X25519(k, 9): the public key for a raw 32-byte scalar.
pub fn x25519_public(scalar: &[u8; 32]) -> Result<[u8; 32], Error> {
    Ok(x25519_base(scalar))
}

/// The client's half of the exchange: holds both private keys until
/// [`finish`](Self::finish); zeroized on drop.
pub struct ClientKeyExchange {
    mlkem: MlKemSecret,
    /// The X25519 private scalar.
    x25519: Zeroizing<[u8; 32]>,
    share: Box<[u8; CLIENT_SHARE_LEN]>,
}

impl std::fmt::Debug for ClientKeyExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeyExchange(..)")
    }
}

impl ClientKeyExchange {
    /// Generates an ML-KEM-768 key pair (64 seed bytes `d || z` from `rng`)
    /// and an X25519 ephemeral key (32 bytes from `rng`).
    pub fn generate(rng: &dyn Random) -> Result<Self, Error> {
        let mut seed = [0u8; libcrux_ml_kem::KEY_GENERATION_SEED_SIZE];
        rng.fill(&mut seed)?;
        let pair = mlkem768::generate_key_pair(seed);
        seed.zeroize();
        let (sk, pk) = pair.into_parts();
        let mlkem = MlKemSecret(sk);

        let x25519 = x25519_ephemeral(rng)?;
        let x_pub = x25519_base(&x25519);

        let mut share = Box::new([0u8; CLIENT_SHARE_LEN]);
        share[..MLKEM768_EK_LEN].copy_from_slice(pk.as_slice());
        share[MLKEM768_EK_LEN..].copy_from_slice(&x_pub);
        Ok(ClientKeyExchange {
            mlkem,
            x25519,
            share,
        })
    }

    /// The client key share to send: [`CLIENT_SHARE_LEN`] bytes.
    pub fn share(&self) -> &[u8] {
        &self.share[..]
    }

    /// Completes the exchange with the server's share.
    ///
    /// Checks the length (the ML-KEM ciphertext length check of FIPS 203
    /// §7.3) and rejects an all-zero X25519 result. A well-formed but
    /// tampered ciphertext is not an error: ML-KEM's implicit rejection
    /// yields a pseudorandom secret that simply will not match the server's,
    /// and the handshake fails at Finished.
    pub fn finish(self, server_share: &[u8]) -> Result<SharedSecret, Error> {
        Error::check_len("server key share", SERVER_SHARE_LEN, server_share)?;
        let (ct, x_pub) = server_share.split_at(MLKEM768_CT_LEN);
        let ClientKeyExchange { mlkem, x25519, .. } = self;

        let mut out = SharedSecret([0u8; SHARED_SECRET_LEN]);
        x25519_agree(x25519_from_scalar(&x25519)?, x_pub, &mut out.0[32..])?;

        let ct = MlKem768Ciphertext::try_from(ct).map_err(|_| Error::InvalidLength {
            what: "ML-KEM-768 ciphertext",
            expected: MLKEM768_CT_LEN,
            actual: ct.len(),
        })?;
        let mut ss = mlkem768::decapsulate(&mlkem.0, &ct);
        out.0[..32].copy_from_slice(&ss);
        ss.zeroize();
        Ok(out)
    }

    /// The X25519 public key inside [`share`](Self::share) (its last 32 bytes).
    #[cfg(feature = "tls")]
    pub(crate) fn x25519_share(&self) -> &[u8] {
        &self.share[MLKEM768_EK_LEN..]
    }

    /// Completes only the X25519 half with the server's 32-byte X25519 share; the
    /// ML-KEM key is dropped unused. For a TLS server that chose plain X25519 from a
    /// ClientHello carrying this key's X25519 half as its own key share.
    #[cfg(feature = "tls")]
    pub(crate) fn finish_x25519(
        self,
        server_x25519: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, Error> {
        Error::check_len("X25519 key share", X25519_LEN, server_x25519)?;
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        x25519_agree(
            x25519_from_scalar(&self.x25519)?,
            server_x25519,
            &mut out[..],
        )?;
        Ok(out)
    }
}

/// The server's half: validates the client's encapsulation key
/// (FIPS 203 §7.2), encapsulates to it, and does X25519.
///
/// Returns the [`SERVER_SHARE_LEN`]-byte server share and the shared secret.
pub fn server_exchange(
    client_share: &[u8],
    rng: &dyn Random,
) -> Result<(Vec<u8>, SharedSecret), Error> {
    // FIPS 203 §7.2, ML-KEM.Encaps input checking:
    //   "1. (Type check) If ek is not an array of bytes of length 384k + 32
    //       for the value of k specified by the relevant parameter set, then
    //       input checking has failed.
    //    2. (Modulus check) Perform the computation
    //       test ← ByteEncode12(ByteDecode12(ek[0 : 384k])).
    //       If test ≠ ek[0 : 384k], then input checking has failed."
    Error::check_len("client key share", CLIENT_SHARE_LEN, client_share)?;
    let (ek, x_pub) = client_share.split_at(MLKEM768_EK_LEN);
    let ek = MlKem768PublicKey::try_from(ek).map_err(|_| Error::InvalidLength {
        what: "ML-KEM-768 encapsulation key",
        expected: MLKEM768_EK_LEN,
        actual: ek.len(),
    })?;
    if !mlkem768::validate_public_key(&ek) {
        return Err(Error::InvalidEncapsulationKey);
    }

    let mut out = SharedSecret([0u8; SHARED_SECRET_LEN]);
    let x25519 = x25519_ephemeral(rng)?;
    let mut share = Vec::with_capacity(SERVER_SHARE_LEN);
    share.resize(MLKEM768_CT_LEN, 0);
    share.extend_from_slice(&x25519_base(&x25519));
    x25519_agree(x25519_from_scalar(&x25519)?, x_pub, &mut out.0[32..])?;

    let mut m = [0u8; libcrux_ml_kem::ENCAPS_SEED_SIZE];
    rng.fill(&mut m)?;
    let (ct, mut ss) = mlkem768::encapsulate(&ek, m);
    m.zeroize();
    share[..MLKEM768_CT_LEN].copy_from_slice(ct.as_slice());
    out.0[..32].copy_from_slice(&ss);
    ss.zeroize();
    Ok((share, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn round_trip_agrees() {
        let rng = SeededRandom::new([1; 32]);
        let client = ClientKeyExchange::generate(&rng).unwrap();
        assert_eq!(client.share().len(), CLIENT_SHARE_LEN);
        let (server_share, server_ss) = server_exchange(client.share(), &rng).unwrap();
        assert_eq!(server_share.len(), SERVER_SHARE_LEN);
        let client_ss = client.finish(&server_share).unwrap();
        assert_eq!(client_ss.as_bytes(), server_ss.as_bytes());
        assert_ne!(client_ss.as_bytes(), &[0u8; 64]);
    }

    #[test]
    fn seeded_exchange_is_reproducible() {
        let run = |seed| {
            let rng = SeededRandom::new(seed);
            let c = ClientKeyExchange::generate(&rng).unwrap();
            let share = c.share().to_vec();
            let (s, ss) = server_exchange(&share, &rng).unwrap();
            (share, s, *ss.as_bytes())
        };
        assert_eq!(run([3; 32]), run([3; 32]));
        assert_ne!(run([3; 32]).2, run([4; 32]).2);
    }

    #[test]
    fn shared_secret_is_mlkem_then_x25519() {
        // Recompute both halves independently from the same seeded draws.
        let seed = [9u8; 32];
        let rng = SeededRandom::new(seed);
        let c = ClientKeyExchange::generate(&rng).unwrap();
        let (s, ss) = server_exchange(c.share(), &rng).unwrap();

        let replay = SeededRandom::new(seed);
        let mut kg = [0u8; 64];
        replay.fill(&mut kg).unwrap();
        let mut c_scalar = [0u8; 32];
        replay.fill(&mut c_scalar).unwrap();
        let mut s_scalar = [0u8; 32];
        replay.fill(&mut s_scalar).unwrap();
        let mut m = [0u8; 32];
        replay.fill(&mut m).unwrap();

        let pair = mlkem768::generate_key_pair(kg);
        let (ct, mlkem_ss) = mlkem768::encapsulate(pair.public_key(), m);
        assert_eq!(&s[..MLKEM768_CT_LEN], ct.as_slice());
        assert_eq!(&ss.as_bytes()[..32], &mlkem_ss[..]);
        let c_pub = x25519_public(&c_scalar).unwrap();
        assert_eq!(&c.share()[MLKEM768_EK_LEN..], &c_pub[..]);
        let x_ss = x25519(&s_scalar, &c_pub).unwrap();
        assert_eq!(&ss.as_bytes()[32..], &x_ss[..]);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let rng = SeededRandom::new([2; 32]);
        let c = ClientKeyExchange::generate(&rng).unwrap();
        let share = c.share().to_vec();
        for len in [0, 1, CLIENT_SHARE_LEN - 1, CLIENT_SHARE_LEN + 1] {
            let mut v = share.clone();
            v.resize(len, 0);
            assert!(matches!(
                server_exchange(&v, &rng),
                Err(Error::InvalidLength { .. })
            ));
        }
        let (s, _) = server_exchange(&share, &rng).unwrap();
        for len in [0, 32, SERVER_SHARE_LEN - 1, SERVER_SHARE_LEN + 1] {
            let c = ClientKeyExchange::generate(&rng).unwrap();
            let mut v = s.clone();
            v.resize(len, 0);
            assert!(matches!(c.finish(&v), Err(Error::InvalidLength { .. })));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// curve25519-dalek's fixed-base public key equals ring's (which made the
        /// public keys before issue 17), for any unclamped scalar.
        #[test]
        fn x25519_public_matches_ring(scalar in proptest::prelude::any::<[u8; 32]>()) {
            let ring_key = x25519_from_scalar(&scalar).unwrap();
            let ring_pub = ring_key.compute_public_key().unwrap();
            let public = x25519_public(&scalar).unwrap();
            proptest::prop_assert_eq!(&public[..], ring_pub.as_ref());
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let rng = SeededRandom::new([5; 32]);
        let c = ClientKeyExchange::generate(&rng).unwrap();
        let (_, ss) = server_exchange(c.share(), &rng).unwrap();
        assert_eq!(format!("{ss:?}"), "SharedSecret(..)");
        assert_eq!(format!("{c:?}"), "ClientKeyExchange(..)");
    }
}

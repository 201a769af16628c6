//! The TLS 1.3 key-exchange group `X25519MLKEM768` (codepoint 0x11EC) for rustls,
//! built on [`crate::kex`]: libcrux ML-KEM-768 and ring X25519.
//!
//! draft-ietf-tls-ecdhe-mlkem, §3 (construction) and §4 (X25519MLKEM768), summarised:
//! the client's `key_exchange` is its ML-KEM-768 encapsulation key (1184 bytes)
//! followed by its X25519 public key (32 bytes); the server's is the ML-KEM-768
//! ciphertext (1088 bytes) followed by its X25519 public key (32 bytes); the shared
//! secret is the ML-KEM shared secret followed by the X25519 shared secret (64 bytes).
//! [`crate::kex`] already has exactly this layout; this module only adapts it to
//! rustls's [`SupportedKxGroup`] / [`ActiveKeyExchange`].
//!
//! Any malformed peer share (wrong length, an ML-KEM key failing the FIPS 203 §7.2
//! check, a low-order X25519 point) is `PeerMisbehaved::InvalidKeyShare`, the error
//! rustls's own groups give, and the handshake ends with an alert.

use rustls::crypto::{
    ActiveKeyExchange, CompletedKeyExchange, GetRandomFailed, SharedSecret, SupportedKxGroup,
};
use rustls::{NamedGroup, PeerMisbehaved, ProtocolVersion};

use crate::kex::{self, ClientKeyExchange};
use crate::random::OsRandom;

/// The `X25519MLKEM768` group (draft-ietf-tls-ecdhe-mlkem), ML-KEM-768 first.
///
/// Put it first in a [`rustls::crypto::CryptoProvider`]'s `kx_groups` to prefer it; with
/// rustls's `X25519` also in the list, a client sends the X25519 half a second time as
/// an `X25519` key share in the same ClientHello, so a classical server answers without
/// a HelloRetryRequest (draft-ietf-tls-hybrid-design §3.2 allows reusing the share).
pub static X25519MLKEM768: &dyn SupportedKxGroup = &X25519MlKem768;

#[derive(Debug)]
struct X25519MlKem768;

/// Maps a [`crate::Error`] from [`crate::kex`] to rustls's.
fn tls_error(e: crate::Error) -> rustls::Error {
    match e {
        crate::Error::Random => GetRandomFailed.into(),
        // Lengths, the ML-KEM modulus check, low-order X25519 points: all the peer's.
        _ => PeerMisbehaved::InvalidKeyShare.into(),
    }
}

impl SupportedKxGroup for X25519MlKem768 {
    /// The client's half: a fresh ML-KEM-768 key pair and X25519 key.
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let kx = ClientKeyExchange::generate(&OsRandom::new()).map_err(tls_error)?;
        Ok(Box::new(ClientHalf(kx)))
    }

    /// The server's half: a KEM, so the server's share depends on the client's
    /// (encapsulation to the client's key) and both happen in one step.
    fn start_and_complete(
        &self,
        client_share: &[u8],
    ) -> Result<CompletedKeyExchange, rustls::Error> {
        let (pub_key, secret) =
            kex::server_exchange(client_share, &OsRandom::new()).map_err(tls_error)?;
        Ok(CompletedKeyExchange {
            group: NamedGroup::X25519MLKEM768,
            pub_key,
            // rustls's SharedSecret zeroizes its copy on drop; ours does too.
            secret: SharedSecret::from(&secret.as_bytes()[..]),
        })
    }

    fn ffdhe_group(&self) -> Option<rustls::ffdhe_groups::FfdheGroup<'static>> {
        None
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }

    /// draft-ietf-tls-ecdhe-mlkem defines the group for TLS 1.3 only.
    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

/// A client's pending exchange; the private keys are zeroized when it is dropped
/// (by [`ClientKeyExchange`]).
struct ClientHalf(ClientKeyExchange);

impl ActiveKeyExchange for ClientHalf {
    fn complete(self: Box<Self>, server_share: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let secret = self.0.finish(server_share).map_err(tls_error)?;
        Ok(SharedSecret::from(&secret.as_bytes()[..]))
    }

    /// The X25519 half, offered again on its own as an `X25519` key share.
    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        Some((NamedGroup::X25519, self.0.x25519_share()))
    }

    /// The server chose plain `X25519` with the share from [`Self::hybrid_component`].
    fn complete_hybrid_component(
        self: Box<Self>,
        server_share: &[u8],
    ) -> Result<SharedSecret, rustls::Error> {
        let secret = self.0.finish_x25519(server_share).map_err(tls_error)?;
        Ok(SharedSecret::from(&secret[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.0.share()
    }

    fn ffdhe_group(&self) -> Option<rustls::ffdhe_groups::FfdheGroup<'static>> {
        None
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kex::{CLIENT_SHARE_LEN, MLKEM768_CT_LEN, MLKEM768_EK_LEN, SERVER_SHARE_LEN};

    fn invalid_share(r: Result<impl Sized, rustls::Error>) -> bool {
        matches!(
            r.map(|_| ()),
            Err(rustls::Error::PeerMisbehaved(
                PeerMisbehaved::InvalidKeyShare
            ))
        )
    }

    #[test]
    fn client_and_server_agree_on_64_bytes() {
        let client = X25519MLKEM768.start().unwrap();
        assert_eq!(client.group(), NamedGroup::X25519MLKEM768);
        assert_eq!(client.pub_key().len(), CLIENT_SHARE_LEN);
        let server = X25519MLKEM768.start_and_complete(client.pub_key()).unwrap();
        assert_eq!(server.group, NamedGroup::X25519MLKEM768);
        assert_eq!(server.pub_key.len(), SERVER_SHARE_LEN);
        let secret = client.complete(&server.pub_key).unwrap();
        assert_eq!(secret.secret_bytes().len(), 64);
        assert_eq!(secret.secret_bytes(), server.secret.secret_bytes());
    }

    #[test]
    fn hybrid_component_is_the_x25519_tail_and_agrees_with_ring() {
        use rustls::crypto::ring::kx_group::X25519;
        let client = X25519MLKEM768.start().unwrap();
        let (group, x_pub) = client.hybrid_component().unwrap();
        assert_eq!(group, NamedGroup::X25519);
        assert_eq!(x_pub, &client.pub_key()[MLKEM768_EK_LEN..]);
        // rustls's own X25519 server half against our client's X25519 half.
        let server = X25519.start_and_complete(x_pub).unwrap();
        let secret = client.complete_hybrid_component(&server.pub_key).unwrap();
        assert_eq!(secret.secret_bytes(), server.secret.secret_bytes());
    }

    #[test]
    fn x25519_half_is_the_tail_of_the_secret() {
        // The server's X25519 public key is the tail of its share; completing only the
        // X25519 half with it must give the tail of the hybrid secret.
        let client = ClientKeyExchange::generate(&OsRandom::new()).unwrap();
        let (share, secret) = kex::server_exchange(client.share(), &OsRandom::new()).unwrap();
        let x = client.finish_x25519(&share[MLKEM768_CT_LEN..]).unwrap();
        assert_eq!(&x[..], &secret.as_bytes()[32..]);
    }

    #[test]
    fn malformed_client_shares_are_refused() {
        let good = X25519MLKEM768.start().unwrap().pub_key().to_vec();
        for len in [0, 1, 32, CLIENT_SHARE_LEN - 1, CLIENT_SHARE_LEN + 1] {
            let mut v = good.clone();
            v.resize(len, 0);
            assert!(
                invalid_share(X25519MLKEM768.start_and_complete(&v)),
                "{len}"
            );
        }
        // Low-order X25519 point (u = 0).
        let mut v = good.clone();
        v[MLKEM768_EK_LEN..].fill(0);
        assert!(invalid_share(X25519MLKEM768.start_and_complete(&v)));
        // An ML-KEM key with a coefficient ≥ q fails the FIPS 203 §7.2 modulus check.
        let mut v = good;
        v[..3].fill(0xff);
        assert!(invalid_share(X25519MLKEM768.start_and_complete(&v)));
    }

    #[test]
    fn malformed_server_shares_are_refused() {
        let client_share = X25519MLKEM768.start().unwrap().pub_key().to_vec();
        let good = X25519MLKEM768
            .start_and_complete(&client_share)
            .unwrap()
            .pub_key;
        for len in [
            0,
            32,
            SERVER_SHARE_LEN - 1,
            SERVER_SHARE_LEN + 1,
            CLIENT_SHARE_LEN,
        ] {
            let mut v = good.clone();
            v.resize(len, 0);
            let client = X25519MLKEM768.start().unwrap();
            assert!(invalid_share(client.complete(&v)), "{len}");
        }
        let mut v = good;
        v[MLKEM768_CT_LEN..].fill(0);
        assert!(invalid_share(X25519MLKEM768.start().unwrap().complete(&v)));
        // The classical half alone: wrong length and low-order point.
        for bad in [&[9u8; 31][..], &[9u8; 33][..], &[0u8; 32][..]] {
            let client = X25519MLKEM768.start().unwrap();
            assert!(invalid_share(client.complete_hybrid_component(bad)));
        }
    }

    #[test]
    fn only_tls13() {
        assert!(X25519MLKEM768.usable_for_version(ProtocolVersion::TLSv1_3));
        assert!(!X25519MLKEM768.usable_for_version(ProtocolVersion::TLSv1_2));
        assert_eq!(X25519MLKEM768.name(), NamedGroup::X25519MLKEM768);
        assert_eq!(u16::from(NamedGroup::X25519MLKEM768), 0x11ec);
    }
}

//! The packet-protection seam (RFC 9001 §5): quill's own keys
//! (`quill_crypto::packet`, derived from quill's key schedule) or the keys rustls
//! derives for QUIC v1 (`rustls::quic`). An enum, not a trait object: quill's own
//! version seals and opens through a direct call to ring as before, and only the
//! QUIC v1 variant goes through rustls's boxed keys.

use quill_crypto::packet::{self as qp, Labels, Suite, TAG_LEN};
use quill_crypto::schedule::{self, Secret};

use crate::proto::handshake::compat::TrafficSecret;

/// The key-derivation labels quill's own version uses on the wire.
pub(crate) fn labels() -> &'static Labels {
    &Labels::QUILL
}

/// A key of either version. quill's own key is inline (not boxed like rustls's) so
/// that its bulk path reaches ring without another indirection; the keys live in
/// boxed `SpaceKeys`/`OneRtt` anyway.
#[allow(clippy::large_enum_variant)]
pub(crate) enum EitherKey<Q, T> {
    /// quill's own version.
    Quill(Q),
    /// QUIC v1, from rustls.
    Tls(T),
}

/// An AEAD packet key of either version.
pub(crate) type PacketKey = EitherKey<qp::PacketKey, Box<dyn rustls::quic::PacketKey>>;

/// A header-protection key of either version.
pub(crate) type HeaderKey = EitherKey<qp::HeaderKey, Box<dyn rustls::quic::HeaderProtectionKey>>;

impl PacketKey {
    /// Seals `payload` in place and writes the tag (RFC 9001 §5.3).
    #[inline]
    pub fn seal_in_place(
        &self,
        pn: u64,
        header: &[u8],
        payload: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), ()> {
        match self {
            PacketKey::Quill(k) => k.seal_in_place(pn, header, payload, tag).map_err(drop),
            PacketKey::Tls(k) => {
                let t = k.encrypt_in_place(pn, header, payload).map_err(drop)?;
                let t = t.as_ref();
                if t.len() != TAG_LEN {
                    return Err(());
                }
                tag.copy_from_slice(t);
                Ok(())
            }
        }
    }

    /// Opens `ciphertext || tag` in place; returns the plaintext length.
    #[inline]
    pub fn open_in_place(&self, pn: u64, header: &[u8], body: &mut [u8]) -> Result<usize, ()> {
        match self {
            PacketKey::Quill(k) => k.open_in_place(pn, header, body).map_err(drop),
            PacketKey::Tls(k) => k
                .decrypt_in_place(pn, header, body)
                .map(|p| p.len())
                .map_err(drop),
        }
    }
}

impl HeaderKey {
    /// The 5-byte mask for a 16-byte sample (RFC 9001 §5.4.1), of which the caller
    /// uses the low 4 (long header) or 5 (short header) bits of the first byte.
    #[inline]
    pub fn mask(&self, sample: &[u8]) -> Result<[u8; 5], ()> {
        match self {
            HeaderKey::Quill(k) => k.mask(sample).map_err(drop),
            HeaderKey::Tls(k) => {
                // rustls applies the mask rather than returning it: apply it to a
                // short-header first byte claiming a 4-byte packet number (so all
                // four number bytes are masked) and to zeros, and read it back.
                let mut first = 0x03u8;
                let mut pn = [0u8; 4];
                k.encrypt_in_place(sample, &mut first, &mut pn)
                    .map_err(drop)?;
                Ok([(first ^ 0x03) & 0x1f, pn[0], pn[1], pn[2], pn[3]])
            }
        }
    }
}

/// The packet and header keys of one direction at one encryption level.
pub(crate) struct Keys {
    pub packet: PacketKey,
    pub header: HeaderKey,
}

impl Keys {
    /// quill's own keys from one traffic secret.
    pub fn quill(suite: Suite, secret: &Secret) -> Self {
        let k = qp::Keys::new(suite, secret, labels());
        Keys {
            packet: PacketKey::Quill(k.packet),
            header: HeaderKey::Quill(k.header),
        }
    }

    /// Keys made elsewhere on ring (QUIC v2 after an upgrade, compat.rs).
    pub fn ring(k: qp::Keys) -> Self {
        Keys {
            packet: PacketKey::Quill(k.packet),
            header: HeaderKey::Quill(k.header),
        }
    }

    /// rustls's keys of one direction.
    pub fn tls(k: rustls::quic::DirectionalKeys) -> Self {
        Keys {
            packet: PacketKey::Tls(k.packet),
            header: HeaderKey::Tls(k.header),
        }
    }
}

/// Where the next generation of 1-RTT packet keys comes from (RFC 9001 §6).
pub(crate) enum KeyUpdate {
    /// quill's own version: each direction's secret, advanced on its own.
    Quill {
        suite: Suite,
        local_secret: Secret,
        next_remote_secret: Secret,
    },
    /// QUIC v1: rustls's secrets, which advance both directions at once; a
    /// generation fetched for one direction keeps the other's key until it is
    /// needed (one side runs at most one generation ahead of the other).
    Tls(Box<TlsKeyUpdate>),
    /// QUIC v2 after a compatible upgrade: TLS's secrets under v2's labels, each
    /// direction advanced on its own.
    V2(Box<V2KeyUpdate>),
}

/// The 1-RTT secrets of a QUIC v2 connection (see [`KeyUpdate::V2`]).
pub(crate) struct V2KeyUpdate {
    aead: Suite,
    local: TrafficSecret,
    next_remote: TrafficSecret,
}

/// rustls's 1-RTT secrets and the keys fetched for one direction but not yet used.
pub(crate) struct TlsKeyUpdate {
    secrets: rustls::quic::Secrets,
    local: std::collections::VecDeque<Box<dyn rustls::quic::PacketKey>>,
    remote: std::collections::VecDeque<Box<dyn rustls::quic::PacketKey>>,
}

impl KeyUpdate {
    /// quill's own version, after installing generation 0 from these secrets.
    pub fn quill(suite: Suite, local_secret: Secret, remote_secret: &Secret) -> Self {
        KeyUpdate::Quill {
            suite,
            local_secret,
            next_remote_secret: remote_secret.clone(),
        }
    }

    /// QUIC v2: generation 0's secrets, whose keys are installed.
    pub fn v2(aead: Suite, local: TrafficSecret, remote: TrafficSecret) -> Self {
        KeyUpdate::V2(Box::new(V2KeyUpdate {
            aead,
            local,
            next_remote: remote,
        }))
    }

    /// QUIC v1: the secrets rustls handed over with the 1-RTT keys.
    pub fn tls(secrets: rustls::quic::Secrets) -> Self {
        KeyUpdate::Tls(Box::new(TlsKeyUpdate {
            secrets,
            local: Default::default(),
            remote: Default::default(),
        }))
    }

    /// Our sending key of the next generation.
    pub fn next_local(&mut self) -> PacketKey {
        self.next(true)
    }

    /// The peer's key of the next generation.
    pub fn next_remote(&mut self) -> PacketKey {
        self.next(false)
    }

    fn next(&mut self, local: bool) -> PacketKey {
        match self {
            KeyUpdate::Quill {
                suite,
                local_secret,
                next_remote_secret,
            } => {
                let secret = if local {
                    local_secret
                } else {
                    next_remote_secret
                };
                *secret = schedule::next_generation(secret, labels());
                PacketKey::Quill(qp::PacketKey::new(*suite, secret, labels()))
            }
            KeyUpdate::V2(v) => {
                let secret = if local {
                    &mut v.local
                } else {
                    &mut v.next_remote
                };
                *secret = secret.next();
                PacketKey::Quill(secret.packet_key(v.aead))
            }
            KeyUpdate::Tls(t) => {
                if (if local { &t.local } else { &t.remote }).is_empty() {
                    let set = t.secrets.next_packet_keys();
                    t.local.push_back(set.local);
                    t.remote.push_back(set.remote);
                }
                let queue = if local { &mut t.local } else { &mut t.remote };
                PacketKey::Tls(queue.pop_front().expect("fetched above"))
            }
        }
    }
}

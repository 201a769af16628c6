//! QUIC v2 (RFC 9369) by compatible version negotiation (RFC 9368 §2.3) on the
//! connection: which long headers of the other version are opened, and how.
//!
//! - **Server.** The TLS handshake decides once the client's ClientHello is read
//!   (`Output::VersionChanged`, handshake/compat.rs); from then on the server sends
//!   in v2, with v2's Initial keys from the same client Destination CID. RFC 9369
//!   §4.1: "The server MUST NOT discard its original version Initial receive keys
//!   until it successfully processes a packet with the negotiated version": the v1
//!   Initial keys stay in [`Connection::other_initial`] and open the client's v1
//!   Initials (its ClientHello may span several) until the Initial space goes.
//! - **Client.** It offers v2 in version_information and starts in v1. The first
//!   Initial in v2 that opens under v2's Initial keys moves the connection to v2 for
//!   good (RFC 9369 §4.1: "Once the client has processed a packet using the
//!   negotiated version, it SHOULD send subsequent Initial packets using that
//!   version"); one that does not open changes nothing. Handshake and 1-RTT packets
//!   are only ever accepted in the connection's version ("An endpoint MUST drop
//!   packets using any other version").

use std::time::Instant;

use super::{Connection, Space};
use crate::proto::handshake::Handshake;
use crate::proto::streams::Side;
use crate::wire::{QUIC_V1, QUIC_V2};

impl Connection {
    /// A long header of `version`, not the connection's: makes the keys to open it
    /// the Initial space's and returns true, or returns false (drop it).
    pub(super) fn open_other_version(
        &mut self,
        now: Instant,
        space: Space,
        packet: &[u8],
        version: u32,
        pn_offset: usize,
    ) -> bool {
        if space != Space::Initial || self.spaces[Space::Initial as usize].discarded {
            return false;
        }
        match self.side {
            Side::Server => {
                // The client's Initials of the original version, after the upgrade.
                if version != QUIC_V1 || self.version != QUIC_V2 || self.other_initial.is_none() {
                    return false;
                }
                let sp = &mut self.spaces[Space::Initial as usize];
                std::mem::swap(&mut sp.keys, &mut self.other_initial);
                true
            }
            Side::Client => {
                let may = matches!(&self.hs, Handshake::Tls(t) if t.may_upgrade());
                if !may || version != QUIC_V2 || self.version != QUIC_V1 {
                    return false;
                }
                // Only a packet that opens under v2's keys moves the connection.
                let v2 = self.initial_keys(QUIC_V2, self.initial_keys_dcid);
                let v1 = self.spaces[Space::Initial as usize].keys.replace(v2);
                let mut trial = packet.to_vec();
                if self
                    .unprotect(now, Space::Initial, &mut trial, pn_offset, false)
                    .is_none()
                {
                    self.spaces[Space::Initial as usize].keys = v1;
                    return false;
                }
                self.version = QUIC_V2;
                if let Handshake::Tls(t) = &mut self.hs {
                    t.upgrade_to_v2();
                }
                tracing::info!("the server chose QUIC v2 (compatible version negotiation)");
                true
            }
        }
    }

    /// After a packet opened by [`Connection::open_other_version`]: the server puts
    /// its negotiated version's Initial keys back.
    pub(super) fn close_other_version(&mut self) {
        if self.side == Side::Server && self.other_initial.is_some() {
            let sp = &mut self.spaces[Space::Initial as usize];
            std::mem::swap(&mut sp.keys, &mut self.other_initial);
        }
    }

    /// Server: the handshake chose `version` (QUIC v2) over the client's original
    /// v1; everything sent from now on is in it.
    pub(super) fn server_upgrade(&mut self, version: u32) {
        if self.side != Side::Server || self.version == version {
            return;
        }
        self.other_initial = self.spaces[Space::Initial as usize].keys.take();
        self.version = version;
        self.install_initial_keys(self.initial_keys_dcid);
        tracing::info!("QUIC v1 client upgraded to QUIC v2 (compatible version negotiation)");
    }
}

//! A client's active migration to a new local address (RFC 9000 §9.2, §9.5).
//!
//! The driver moves the client to a new socket and calls [`Connection::migrate`]:
//! from then on every packet goes out from the new address. The client switches to
//! a connection ID the server has not seen yet (retiring the old one, so that the
//! two paths cannot be linked, §9.5) and validates the new path with a
//! PATH_CHALLENGE in a datagram of at least 1200 bytes (§8.2.1); the server answers
//! with PATH_RESPONSE on it. The server's address is the same, and so congestion
//! control and the RTT estimate carry over (as for a NAT rebinding, §9.4: the path
//! beyond the client's first hop is the one it had).

use super::Connection;
use crate::proto::streams::Side;

/// Why [`Connection::migrate`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateError {
    /// Only a client migrates actively.
    NotClient,
    /// The handshake is not confirmed yet (RFC 9000 §9: "MUST NOT initiate
    /// connection migration before the handshake is confirmed").
    NotConfirmed,
    /// The server sent `disable_active_migration` (§18.2).
    DisabledByPeer,
    /// The connection is closing or closed.
    Closed,
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MigrateError::NotClient => "only a client can migrate",
            MigrateError::NotConfirmed => "the handshake is not confirmed yet",
            MigrateError::DisabledByPeer => "the server disabled active migration",
            MigrateError::Closed => "the connection is closed",
        })
    }
}

impl std::error::Error for MigrateError {}

impl Connection {
    /// Client: the driver now sends from a new local address. Switches to an unused
    /// connection ID of the server's (if it gave one: otherwise the current one stays,
    /// as on a NAT rebinding) and validates the new path with PATH_CHALLENGE. Returns
    /// whether a new connection ID is in use.
    pub fn migrate(&mut self) -> Result<bool, MigrateError> {
        if self.side != Side::Client {
            return Err(MigrateError::NotClient);
        }
        if self.is_closed() || self.error.is_some() {
            return Err(MigrateError::Closed);
        }
        if !self.handshake_confirmed {
            return Err(MigrateError::NotConfirmed);
        }
        if self
            .peer_params
            .as_ref()
            .is_some_and(|p| p.disable_active_migration)
        {
            return Err(MigrateError::DisabledByPeer);
        }
        let fresh_cid = self.rotate_remote_cid();
        if !fresh_cid {
            tracing::debug!("migrating without a spare connection ID: the paths can be linked");
        }
        let mut challenge = [0u8; 8];
        if self.rng.fill(&mut challenge).is_ok() {
            self.path_challenge = Some(challenge);
            self.path_challenge_pending = true;
        }
        self.ecn.on_new_path();
        self.stats.local_migrations += 1;
        // Send the challenge (and whatever waits) now, from the new address.
        self.ping_pending = true;
        tracing::debug!(cid = %self.remote_cid, "migrated to a new local address");
        Ok(fresh_cid)
    }
}

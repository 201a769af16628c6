//! Connection IDs beyond the handshake's (RFC 9000 §5.1): the ones we issue to the
//! peer with NEW_CONNECTION_ID (supplied by the endpoint, which routes them), and the
//! ones the peer issues to us, which we may switch to and must retire on request.

use std::collections::{BTreeMap, VecDeque};

use crate::wire::ConnectionId;

/// How many connection IDs we accept from the peer at once (advertised as
/// `active_connection_id_limit`).
pub(crate) const ACTIVE_CID_LIMIT: u64 = 4;

/// Bounds on queues a peer can make us fill.
pub(crate) const MAX_PENDING_RETIRES: usize = 64;

/// A connection ID the peer gave us.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteCid {
    pub cid: ConnectionId,
    pub reset_token: [u8; 16],
}

#[derive(Debug)]
pub(crate) struct CidState {
    /// Our CIDs the peer may use, by sequence number (0 is the handshake's).
    pub local: BTreeMap<u64, (ConnectionId, [u8; 16])>,
    /// Next sequence number for a CID we issue.
    pub next_local_seq: u64,
    /// Issued CIDs whose NEW_CONNECTION_ID still has to be sent (or was lost).
    pub new_pending: VecDeque<u64>,
    /// Our CIDs the peer retired; the endpoint unmaps them.
    pub retired_local: VecDeque<ConnectionId>,
    /// The peer's CIDs we hold, by sequence number (0 is the handshake's).
    pub remote: BTreeMap<u64, RemoteCid>,
    /// Sequence number of the peer CID we use now.
    pub remote_seq: u64,
    /// Peer CIDs to retire with RETIRE_CONNECTION_ID.
    pub retire_pending: VecDeque<u64>,
    /// Largest `retire_prior_to` seen from the peer.
    pub retire_prior_to: u64,
}

impl CidState {
    pub fn new(local: ConnectionId, local_token: [u8; 16], remote: ConnectionId) -> Self {
        let mut l = BTreeMap::new();
        l.insert(0, (local, local_token));
        let mut r = BTreeMap::new();
        r.insert(
            0,
            RemoteCid {
                cid: remote,
                reset_token: [0; 16],
            },
        );
        CidState {
            local: l,
            next_local_seq: 1,
            new_pending: VecDeque::new(),
            retired_local: VecDeque::new(),
            remote: r,
            remote_seq: 0,
            retire_pending: VecDeque::new(),
            retire_prior_to: 0,
        }
    }

    /// Whether `cid` is one of ours that the peer may use.
    pub fn is_local(&self, cid: &ConnectionId) -> bool {
        self.local.values().any(|(c, _)| c == cid)
    }

    /// The handshake's remote CID changed (the server's choice, or a Retry).
    pub fn set_initial_remote(&mut self, cid: ConnectionId) {
        if let Some(r) = self.remote.get_mut(&0) {
            r.cid = cid;
        }
    }

    /// The peer's stateless reset token for the handshake CID (transport parameter).
    pub fn set_initial_reset_token(&mut self, token: [u8; 16]) {
        if let Some(r) = self.remote.get_mut(&0) {
            r.reset_token = token;
        }
    }

    /// Whether `tail` is a reset token of any peer CID we hold (constant-time compare).
    pub fn is_reset_token(&self, tail: &[u8]) -> bool {
        let mut hit = false;
        for r in self.remote.values() {
            hit |= r.reset_token != [0; 16] && quill_crypto::ct_eq(&r.reset_token, tail);
        }
        hit
    }
}

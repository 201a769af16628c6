//! Transport parameters (RFC 9000 §18, RFC 9221 §3).
//!
//! RFC 9000 §18: "The extension_data field [...] contains a sequence of transport
//! parameters [...] Transport Parameter { Transport Parameter ID (i),
//! Transport Parameter Length (i), Transport Parameter Value (..) }".
//!
//! Decoding ignores unknown ids (§18.1: "An endpoint MUST ignore transport parameters
//! that it does not support"), rejects duplicates of known ids, and range-checks
//! values (§7.4: "An endpoint MUST treat receipt of a transport parameter with an
//! invalid value as a connection error of type TRANSPORT_PARAMETER_ERROR"). Every
//! error is a [`DecodeError::TransportParameter`] or
//! [`DecodeError::DuplicateTransportParameter`], i.e. TRANSPORT_PARAMETER_ERROR.
//!
//! Duplicates of unknown ids are not detected: that would need memory or time that
//! grows with the input. `preferred_address` (0x0d) is decoded into
//! [`PreferredAddress`] (§18.2, §9.6). Which side may send which
//! parameter (§18.2: server-only ids) is checked by the caller, which knows the
//! role: see [`TransportParameters::has_server_only`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::codec::{DecodeError, LenCounter, Reader, Sink, Writer};
use super::packet::ConnectionId;
use super::varint::varint_len;

mod id {
    pub const ORIGINAL_DESTINATION_CONNECTION_ID: u64 = 0x00;
    pub const MAX_IDLE_TIMEOUT: u64 = 0x01;
    pub const STATELESS_RESET_TOKEN: u64 = 0x02;
    pub const MAX_UDP_PAYLOAD_SIZE: u64 = 0x03;
    pub const INITIAL_MAX_DATA: u64 = 0x04;
    pub const INITIAL_MAX_STREAM_DATA_BIDI_LOCAL: u64 = 0x05;
    pub const INITIAL_MAX_STREAM_DATA_BIDI_REMOTE: u64 = 0x06;
    pub const INITIAL_MAX_STREAM_DATA_UNI: u64 = 0x07;
    pub const INITIAL_MAX_STREAMS_BIDI: u64 = 0x08;
    pub const INITIAL_MAX_STREAMS_UNI: u64 = 0x09;
    pub const ACK_DELAY_EXPONENT: u64 = 0x0a;
    pub const MAX_ACK_DELAY: u64 = 0x0b;
    pub const DISABLE_ACTIVE_MIGRATION: u64 = 0x0c;
    pub const PREFERRED_ADDRESS: u64 = 0x0d;
    pub const ACTIVE_CONNECTION_ID_LIMIT: u64 = 0x0e;
    pub const INITIAL_SOURCE_CONNECTION_ID: u64 = 0x0f;
    pub const RETRY_SOURCE_CONNECTION_ID: u64 = 0x10;
    /// RFC 9368 §3.
    pub const VERSION_INFORMATION: u64 = 0x11;
    /// RFC 9221 §3.
    pub const MAX_DATAGRAM_FRAME_SIZE: u64 = 0x20;
    /// draft-ietf-quic-ack-frequency §3.
    pub const MIN_ACK_DELAY: u64 = 0xff04_de1b;
}

/// A server's `preferred_address` (RFC 9000 §18.2, §9.6): an address of each family
/// (absent = all zeros on the wire), the connection ID to use there (sequence number
/// 1, §5.1.1) and its stateless reset token.
///
/// ```text
/// Preferred Address {
///   IPv4 Address (32), IPv4 Port (16),
///   IPv6 Address (128), IPv6 Port (16),
///   Connection ID Length (8), Connection ID (..),
///   Stateless Reset Token (128),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreferredAddress {
    /// The IPv4 address and port, if offered.
    pub ipv4: Option<SocketAddrV4>,
    /// The IPv6 address and port, if offered.
    pub ipv6: Option<SocketAddrV6>,
    /// The connection ID for the new path; never empty.
    pub connection_id: ConnectionId,
    /// The stateless reset token of `connection_id`.
    pub stateless_reset_token: [u8; 16],
}

impl PreferredAddress {
    /// The offered address of the same family as `current` (the path in use): a client
    /// does not change address family to follow it.
    pub fn for_family_of(&self, current: SocketAddr) -> Option<SocketAddr> {
        match current {
            SocketAddr::V4(_) => self.ipv4.map(SocketAddr::V4),
            SocketAddr::V6(_) => self.ipv6.map(SocketAddr::V6),
        }
    }

    fn emit(&self, s: &mut impl Sink) {
        let v4 = self
            .ipv4
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let v6 = self
            .ipv6
            .unwrap_or(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
        s.put_slice(&v4.ip().octets());
        s.put_slice(&v4.port().to_be_bytes());
        s.put_slice(&v6.ip().octets());
        s.put_slice(&v6.port().to_be_bytes());
        s.put_u8(self.connection_id.len() as u8);
        s.put_slice(self.connection_id.as_ref());
        s.put_slice(&self.stateless_reset_token);
    }

    fn value_len(&self) -> usize {
        4 + 2 + 16 + 2 + 1 + self.connection_id.len() + 16
    }

    fn decode(v: &[u8]) -> Result<Self, DecodeError> {
        let bad = DecodeError::TransportParameter;
        let mut r = Reader::new(v);
        let ip4 = Ipv4Addr::from(r.array::<4>()?);
        let port4 = r.u16()?;
        let ip6 = Ipv6Addr::from(r.array::<16>()?);
        let port6 = r.u16()?;
        let n = usize::from(r.u8()?);
        // §18.2: "a server MUST NOT include a zero-length connection ID in this
        // transport parameter. A client MUST treat a violation of these requirements
        // as a connection error of type TRANSPORT_PARAMETER_ERROR."
        if n == 0 {
            return Err(bad("preferred_address with a zero-length connection ID"));
        }
        let connection_id = cid_value(r.bytes(n)?)?;
        let stateless_reset_token = r.array::<16>()?;
        if !r.is_empty() {
            return Err(bad("preferred_address longer than its fields"));
        }
        // §18.2: "Servers MAY choose to only send a preferred address of one address
        // family by sending an all-zero address and port (0.0.0.0:0 or [::]:0) for the
        // other family."
        let ipv4 = (!ip4.is_unspecified() || port4 != 0).then(|| SocketAddrV4::new(ip4, port4));
        let ipv6 =
            (!ip6.is_unspecified() || port6 != 0).then(|| SocketAddrV6::new(ip6, port6, 0, 0));
        Ok(PreferredAddress {
            ipv4,
            ipv6,
            connection_id,
            stateless_reset_token,
        })
    }
}

/// The transport parameters one endpoint declares (RFC 9000 §18.2). [`Default`]
/// gives the RFC defaults, which is also what an absent parameter means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportParameters {
    /// 0x00, server only: the DCID of the client's first Initial.
    pub original_destination_connection_id: Option<ConnectionId>,
    /// 0x01: idle timeout in milliseconds; 0 = none.
    pub max_idle_timeout_ms: u64,
    /// 0x02, server only: stateless reset token.
    pub stateless_reset_token: Option<[u8; 16]>,
    /// 0x03: largest UDP payload the endpoint accepts; default 65527, at least 1200.
    pub max_udp_payload_size: u64,
    /// 0x04: initial connection flow-control limit.
    pub initial_max_data: u64,
    /// 0x05: initial limit for locally initiated bidirectional streams.
    pub initial_max_stream_data_bidi_local: u64,
    /// 0x06: initial limit for peer-initiated bidirectional streams.
    pub initial_max_stream_data_bidi_remote: u64,
    /// 0x07: initial limit for unidirectional streams.
    pub initial_max_stream_data_uni: u64,
    /// 0x08: bidirectional streams the peer may open; at most 2^60.
    pub initial_max_streams_bidi: u64,
    /// 0x09: unidirectional streams the peer may open; at most 2^60.
    pub initial_max_streams_uni: u64,
    /// 0x0a: ACK Delay exponent; default 3, at most 20.
    pub ack_delay_exponent: u64,
    /// 0x0b: maximum ACK delay in milliseconds; default 25, below 2^14.
    pub max_ack_delay_ms: u64,
    /// 0x0c: the endpoint does not support active migration.
    pub disable_active_migration: bool,
    /// 0x0d, server only: an address to move to after the handshake (§9.6).
    pub preferred_address: Option<PreferredAddress>,
    /// 0x0e: connection IDs the endpoint is willing to store; default 2, at least 2.
    pub active_connection_id_limit: u64,
    /// 0x0f: the SCID of the endpoint's first Initial.
    pub initial_source_connection_id: Option<ConnectionId>,
    /// 0x10, server only: the SCID of the Retry packet.
    pub retry_source_connection_id: Option<ConnectionId>,
    /// 0x20 (RFC 9221): largest DATAGRAM frame accepted; `None` = no datagrams.
    pub max_datagram_frame_size: Option<u64>,
    /// 0x11 (RFC 9368 §3): the version in use and the versions the endpoint
    /// supports, for compatible version negotiation; `None` = absent.
    pub version_information: Option<VersionInformation>,
    /// 0xff04de1b (draft-ietf-quic-ack-frequency §3): the shortest ACK delay the
    /// endpoint can keep, in microseconds; present = it accepts ACK_FREQUENCY and
    /// IMMEDIATE_ACK. At most `max_ack_delay_ms` × 1000.
    pub min_ack_delay_us: Option<u64>,
}

/// The `version_information` transport parameter (RFC 9368 §3):
///
/// ```text
/// Version Information { Chosen Version (32), Available Versions (32) ... }
/// ```
///
/// Kept inline (the parameters are `Copy`): at most
/// [`VersionInformation::MAX_AVAILABLE`] available versions are kept, the rest of a
/// longer list is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInformation {
    /// The version the sender uses for this connection.
    pub chosen: u32,
    available: [u32; VersionInformation::MAX_AVAILABLE],
    count: u8,
}

impl VersionInformation {
    /// Most available versions kept.
    pub const MAX_AVAILABLE: usize = 8;

    /// `chosen`, and the first [`Self::MAX_AVAILABLE`] of `available`.
    pub fn new(chosen: u32, available: &[u32]) -> Self {
        let mut v = VersionInformation {
            chosen,
            available: [0; Self::MAX_AVAILABLE],
            count: 0,
        };
        for &a in available.iter().take(Self::MAX_AVAILABLE) {
            v.available[usize::from(v.count)] = a;
            v.count += 1;
        }
        v
    }

    /// The Available Versions field, in order.
    pub fn available(&self) -> &[u32] {
        &self.available[..usize::from(self.count)]
    }

    fn encoded_len(&self) -> usize {
        4 * (1 + self.available().len())
    }

    fn decode(v: &[u8]) -> Result<Self, DecodeError> {
        let bad = DecodeError::TransportParameter;
        // RFC 9368 §3: the field is a Chosen Version and zero or more Available
        // Versions of 32 bits each; "if an endpoint receives a Chosen Version equal
        // to zero, or any Available Version equal to zero, it MUST treat it as a
        // parsing failure".
        if v.len() < 4 || !v.len().is_multiple_of(4) {
            return Err(bad("version_information not a list of 32-bit versions"));
        }
        let mut words = v
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        let chosen = words.next().unwrap_or(0);
        let mut out = VersionInformation::new(chosen, &[]);
        for w in words {
            if w == 0 {
                return Err(bad("version_information lists version 0"));
            }
            if usize::from(out.count) < Self::MAX_AVAILABLE {
                out.available[usize::from(out.count)] = w;
                out.count += 1;
            }
        }
        if chosen == 0 {
            return Err(bad("version_information chose version 0"));
        }
        Ok(out)
    }
}

impl Default for TransportParameters {
    fn default() -> Self {
        TransportParameters {
            original_destination_connection_id: None,
            max_idle_timeout_ms: 0,
            stateless_reset_token: None,
            max_udp_payload_size: 65527,
            initial_max_data: 0,
            initial_max_stream_data_bidi_local: 0,
            initial_max_stream_data_bidi_remote: 0,
            initial_max_stream_data_uni: 0,
            initial_max_streams_bidi: 0,
            initial_max_streams_uni: 0,
            ack_delay_exponent: 3,
            max_ack_delay_ms: 25,
            disable_active_migration: false,
            preferred_address: None,
            active_connection_id_limit: 2,
            initial_source_connection_id: None,
            retry_source_connection_id: None,
            max_datagram_frame_size: None,
            version_information: None,
            min_ack_delay_us: None,
        }
    }
}

fn emit_int(s: &mut impl Sink, id: u64, v: u64, default: u64) {
    if v != default {
        s.put_varint(id);
        s.put_varint(varint_len(v) as u64);
        s.put_varint(v);
    }
}

fn emit_bytes(s: &mut impl Sink, id: u64, v: &[u8]) {
    s.put_varint(id);
    s.put_varint(v.len() as u64);
    s.put_slice(v);
}

fn tp_err(e: DecodeError) -> DecodeError {
    match e {
        DecodeError::UnexpectedEnd => DecodeError::TransportParameter("truncated"),
        DecodeError::InvalidVarint => {
            DecodeError::TransportParameter("value length does not match its varint")
        }
        other => other,
    }
}

/// A parameter value that must be exactly one varint.
fn int_value(v: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader::new(v);
    let x = r.varint().map_err(|_| DecodeError::InvalidVarint)?;
    if !r.is_empty() {
        return Err(DecodeError::InvalidVarint);
    }
    Ok(x)
}

fn cid_value(v: &[u8]) -> Result<ConnectionId, DecodeError> {
    ConnectionId::from_slice(v)
        .map_err(|_| DecodeError::TransportParameter("connection ID too long"))
}

impl TransportParameters {
    /// Writes every parameter that differs from its default (CIDs and the reset
    /// token whenever present), in increasing id order.
    ///
    /// # Panics
    ///
    /// If the writer is shorter than [`TransportParameters::encoded_len`] or a value
    /// exceeds 2^62 - 1.
    pub fn encode(&self, w: &mut Writer) {
        self.emit(w);
    }

    /// Exactly how many bytes [`TransportParameters::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        LenCounter::count(|c| self.emit(c))
    }

    fn emit(&self, s: &mut impl Sink) {
        let d = TransportParameters::default();
        if let Some(cid) = &self.original_destination_connection_id {
            emit_bytes(s, id::ORIGINAL_DESTINATION_CONNECTION_ID, cid.as_ref());
        }
        emit_int(
            s,
            id::MAX_IDLE_TIMEOUT,
            self.max_idle_timeout_ms,
            d.max_idle_timeout_ms,
        );
        if let Some(token) = &self.stateless_reset_token {
            emit_bytes(s, id::STATELESS_RESET_TOKEN, token);
        }
        emit_int(
            s,
            id::MAX_UDP_PAYLOAD_SIZE,
            self.max_udp_payload_size,
            d.max_udp_payload_size,
        );
        emit_int(s, id::INITIAL_MAX_DATA, self.initial_max_data, 0);
        emit_int(
            s,
            id::INITIAL_MAX_STREAM_DATA_BIDI_LOCAL,
            self.initial_max_stream_data_bidi_local,
            0,
        );
        emit_int(
            s,
            id::INITIAL_MAX_STREAM_DATA_BIDI_REMOTE,
            self.initial_max_stream_data_bidi_remote,
            0,
        );
        emit_int(
            s,
            id::INITIAL_MAX_STREAM_DATA_UNI,
            self.initial_max_stream_data_uni,
            0,
        );
        emit_int(
            s,
            id::INITIAL_MAX_STREAMS_BIDI,
            self.initial_max_streams_bidi,
            0,
        );
        emit_int(
            s,
            id::INITIAL_MAX_STREAMS_UNI,
            self.initial_max_streams_uni,
            0,
        );
        emit_int(
            s,
            id::ACK_DELAY_EXPONENT,
            self.ack_delay_exponent,
            d.ack_delay_exponent,
        );
        emit_int(
            s,
            id::MAX_ACK_DELAY,
            self.max_ack_delay_ms,
            d.max_ack_delay_ms,
        );
        if self.disable_active_migration {
            emit_bytes(s, id::DISABLE_ACTIVE_MIGRATION, &[]);
        }
        if let Some(pa) = &self.preferred_address {
            s.put_varint(id::PREFERRED_ADDRESS);
            s.put_varint(pa.value_len() as u64);
            pa.emit(s);
        }
        emit_int(
            s,
            id::ACTIVE_CONNECTION_ID_LIMIT,
            self.active_connection_id_limit,
            d.active_connection_id_limit,
        );
        if let Some(cid) = &self.initial_source_connection_id {
            emit_bytes(s, id::INITIAL_SOURCE_CONNECTION_ID, cid.as_ref());
        }
        if let Some(cid) = &self.retry_source_connection_id {
            emit_bytes(s, id::RETRY_SOURCE_CONNECTION_ID, cid.as_ref());
        }
        if let Some(vi) = &self.version_information {
            s.put_varint(id::VERSION_INFORMATION);
            s.put_varint(vi.encoded_len() as u64);
            s.put_slice(&vi.chosen.to_be_bytes());
            for &v in vi.available() {
                s.put_slice(&v.to_be_bytes());
            }
        }
        if let Some(size) = self.max_datagram_frame_size {
            s.put_varint(id::MAX_DATAGRAM_FRAME_SIZE);
            s.put_varint(varint_len(size) as u64);
            s.put_varint(size);
        }
        if let Some(us) = self.min_ack_delay_us {
            s.put_varint(id::MIN_ACK_DELAY);
            s.put_varint(varint_len(us) as u64);
            s.put_varint(us);
        }
    }

    /// Decodes a transport parameters blob (the whole of `buf`).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut tp = TransportParameters::default();
        // bit i: id i seen (ids 0..=0x11), bit 62: min_ack_delay, bit 63: id 0x20
        let mut seen: u64 = 0;
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let pid = r.varint().map_err(tp_err)?;
            let n = r.varint_len_prefix().map_err(tp_err)?;
            let v = r.bytes(n).map_err(tp_err)?;
            let bit = match pid {
                0..=0x11 => Some(pid),
                id::MAX_DATAGRAM_FRAME_SIZE => Some(63),
                id::MIN_ACK_DELAY => Some(62),
                _ => None,
            };
            if let Some(bit) = bit {
                if seen & (1 << bit) != 0 {
                    // RFC 9000 §7.4: "An endpoint SHOULD treat receipt of duplicate
                    // transport parameters as a connection error of type
                    // TRANSPORT_PARAMETER_ERROR."
                    return Err(DecodeError::DuplicateTransportParameter(pid));
                }
                seen |= 1 << bit;
            }
            tp.apply(pid, v).map_err(tp_err)?;
        }
        // draft-ietf-quic-ack-frequency §3: "Endpoints that support this extension
        // MUST treat receipt of a min_ack_delay that is greater than the received
        // max_ack_delay as a connection error of type TRANSPORT_PARAMETER_ERROR."
        if tp
            .min_ack_delay_us
            .is_some_and(|us| us > tp.max_ack_delay_ms * 1000)
        {
            return Err(DecodeError::TransportParameter(
                "min_ack_delay above max_ack_delay",
            ));
        }
        Ok(tp)
    }

    fn apply(&mut self, pid: u64, v: &[u8]) -> Result<(), DecodeError> {
        let bad = DecodeError::TransportParameter;
        match pid {
            id::ORIGINAL_DESTINATION_CONNECTION_ID => {
                self.original_destination_connection_id = Some(cid_value(v)?)
            }
            id::MAX_IDLE_TIMEOUT => self.max_idle_timeout_ms = int_value(v)?,
            id::STATELESS_RESET_TOKEN => {
                // §18.2: "This parameter is a sequence of 16 bytes."
                let t: [u8; 16] = v
                    .try_into()
                    .map_err(|_| bad("stateless_reset_token not 16 bytes"))?;
                self.stateless_reset_token = Some(t);
            }
            id::MAX_UDP_PAYLOAD_SIZE => {
                let x = int_value(v)?;
                // §18.2: "Values below 1200 are invalid."
                if x < 1200 {
                    return Err(bad("max_udp_payload_size below 1200"));
                }
                self.max_udp_payload_size = x;
            }
            id::INITIAL_MAX_DATA => self.initial_max_data = int_value(v)?,
            id::INITIAL_MAX_STREAM_DATA_BIDI_LOCAL => {
                self.initial_max_stream_data_bidi_local = int_value(v)?
            }
            id::INITIAL_MAX_STREAM_DATA_BIDI_REMOTE => {
                self.initial_max_stream_data_bidi_remote = int_value(v)?
            }
            id::INITIAL_MAX_STREAM_DATA_UNI => self.initial_max_stream_data_uni = int_value(v)?,
            id::INITIAL_MAX_STREAMS_BIDI | id::INITIAL_MAX_STREAMS_UNI => {
                let x = int_value(v)?;
                // §18.2: "If a max_streams transport parameter [...] is received with a
                // value greater than 2^60, [...] the connection MUST be closed
                // immediately with a connection error of type TRANSPORT_PARAMETER_ERROR"
                if x > 1 << 60 {
                    return Err(bad("initial_max_streams above 2^60"));
                }
                if pid == id::INITIAL_MAX_STREAMS_BIDI {
                    self.initial_max_streams_bidi = x;
                } else {
                    self.initial_max_streams_uni = x;
                }
            }
            id::ACK_DELAY_EXPONENT => {
                let x = int_value(v)?;
                // §18.2: "Values above 20 are invalid."
                if x > 20 {
                    return Err(bad("ack_delay_exponent above 20"));
                }
                self.ack_delay_exponent = x;
            }
            id::MAX_ACK_DELAY => {
                let x = int_value(v)?;
                // §18.2: "Values of 2^14 or greater are invalid."
                if x >= 1 << 14 {
                    return Err(bad("max_ack_delay of 2^14 or more"));
                }
                self.max_ack_delay_ms = x;
            }
            id::DISABLE_ACTIVE_MIGRATION => {
                // §18.2: "This parameter is a zero-length value."
                if !v.is_empty() {
                    return Err(bad("disable_active_migration has a value"));
                }
                self.disable_active_migration = true;
            }
            id::PREFERRED_ADDRESS => self.preferred_address = Some(PreferredAddress::decode(v)?),
            id::ACTIVE_CONNECTION_ID_LIMIT => {
                let x = int_value(v)?;
                // §18.2: "The value of the active_connection_id_limit parameter MUST be
                // at least 2. An endpoint that receives a value less than 2 MUST close
                // the connection with an error of type TRANSPORT_PARAMETER_ERROR."
                if x < 2 {
                    return Err(bad("active_connection_id_limit below 2"));
                }
                self.active_connection_id_limit = x;
            }
            id::INITIAL_SOURCE_CONNECTION_ID => {
                self.initial_source_connection_id = Some(cid_value(v)?)
            }
            id::RETRY_SOURCE_CONNECTION_ID => self.retry_source_connection_id = Some(cid_value(v)?),
            id::MAX_DATAGRAM_FRAME_SIZE => self.max_datagram_frame_size = Some(int_value(v)?),
            id::VERSION_INFORMATION => {
                self.version_information = Some(VersionInformation::decode(v)?)
            }
            id::MIN_ACK_DELAY => self.min_ack_delay_us = Some(int_value(v)?),
            // §18.1: "An endpoint MUST ignore transport parameters that it does not support."
            _ => {}
        }
        Ok(())
    }

    /// True if any parameter that only a server may send is present.
    ///
    /// RFC 9000 §18.2: "A client MUST NOT include any server-only transport parameter:
    /// original_destination_connection_id, preferred_address,
    /// retry_source_connection_id, or stateless_reset_token. A server MUST treat
    /// receipt of any of these transport parameters as a connection error of type
    /// TRANSPORT_PARAMETER_ERROR."
    pub fn has_server_only(&self) -> bool {
        self.original_destination_connection_id.is_some()
            || self.preferred_address.is_some()
            || self.retry_source_connection_id.is_some()
            || self.stateless_reset_token.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::VARINT_MAX;
    use proptest::prelude::*;

    fn enc(tp: &TransportParameters) -> Vec<u8> {
        crate::wire::codec::encode_exact(tp.encoded_len(), |w| tp.encode(w))
    }

    /// RFC 9368 §3: Chosen Version then the Available Versions, 32 bits each;
    /// zero anywhere, or a length that is not a multiple of 4, is an error.
    #[test]
    fn version_information_bytes() {
        let tp = TransportParameters {
            version_information: Some(VersionInformation::new(1, &[0x6b33_43cf, 1])),
            ..TransportParameters::default()
        };
        let bytes = enc(&tp);
        assert_eq!(
            bytes,
            [0x11, 12, 0, 0, 0, 1, 0x6b, 0x33, 0x43, 0xcf, 0, 0, 0, 1]
        );
        assert_eq!(TransportParameters::decode(&bytes).unwrap(), tp);
        let vi = tp.version_information.unwrap();
        assert_eq!((vi.chosen, vi.available()), (1, &[0x6b33_43cf, 1][..]));
        for bad in [
            &[0x11, 4, 0, 0, 0, 0][..],
            &[0x11, 8, 0, 0, 0, 1, 0, 0, 0, 0],
            &[0x11, 5, 0, 0, 0, 1, 2],
            &[0x11, 0],
            &[0x11, 4, 0, 0, 0, 1, 0x11, 4, 0, 0, 0, 1],
        ] {
            assert!(TransportParameters::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_encode_to_nothing() {
        assert!(enc(&TransportParameters::default()).is_empty());
        assert_eq!(
            TransportParameters::decode(&[]).unwrap(),
            TransportParameters::default()
        );
    }

    #[test]
    fn byte_exact_both_ways() {
        let tp = TransportParameters {
            original_destination_connection_id: Some(ConnectionId::from_slice(&[1, 2]).unwrap()),
            max_idle_timeout_ms: 30_000,
            stateless_reset_token: Some([0xee; 16]),
            max_udp_payload_size: 1452,
            initial_max_data: 1 << 20,
            initial_max_stream_data_bidi_local: 10,
            initial_max_stream_data_bidi_remote: 11,
            initial_max_stream_data_uni: 12,
            initial_max_streams_bidi: 100,
            initial_max_streams_uni: 3,
            ack_delay_exponent: 2,
            max_ack_delay_ms: 20,
            disable_active_migration: true,
            preferred_address: None,
            active_connection_id_limit: 4,
            initial_source_connection_id: Some(ConnectionId::EMPTY),
            retry_source_connection_id: Some(ConnectionId::from_slice(&[9]).unwrap()),
            max_datagram_frame_size: Some(65535),
            version_information: None,
            min_ack_delay_us: None,
        };
        let expect = [
            "00020102",                             // original_destination_connection_id
            "01048000 7530",                        // max_idle_timeout 30000
            "0210eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", // stateless_reset_token
            "030245ac",                             // max_udp_payload_size 1452
            "040480100000",                         // initial_max_data 2^20
            "05010a",
            "06010b",
            "07010c", // stream data limits
            "08024064",
            "090103", // stream counts
            "0a0102",
            "0b0114",
            "0c00",
            "0e0104", // ack exp, max ack delay, migration, cid limit
            "0f00",
            "100109",        // initial / retry source CIDs
            "2004 8000ffff", // max_datagram_frame_size 65535
        ]
        .concat()
        .replace(' ', "");
        assert_eq!(hex::encode(enc(&tp)), expect);
        assert_eq!(
            TransportParameters::decode(&hex::decode(&expect).unwrap()).unwrap(),
            tp
        );
        assert!(tp.has_server_only());
        assert!(!TransportParameters::default().has_server_only());
    }

    /// draft-ietf-quic-ack-frequency §3: min_ack_delay (an 8-byte id) in
    /// microseconds, at most max_ack_delay; above it, or twice, is an error.
    #[test]
    fn min_ack_delay() {
        let tp = TransportParameters {
            min_ack_delay_us: Some(1000),
            ..TransportParameters::default()
        };
        assert_eq!(hex::encode(enc(&tp)), "c0000000ff04de1b0243e8");
        let d = |h: &str| TransportParameters::decode(&hex::decode(h).unwrap());
        assert_eq!(d("c0000000ff04de1b0243e8").unwrap(), tp);
        // 25 000 µs = the default max_ack_delay of 25 ms: accepted; 25 001 is not.
        assert_eq!(
            d("c0000000ff04de1b04800061a8").unwrap().min_ack_delay_us,
            Some(25_000)
        );
        assert!(matches!(
            d("c0000000ff04de1b04800061a9"),
            Err(DecodeError::TransportParameter(_))
        ));
        // Checked against the max_ack_delay received, in whichever order: 10 ms.
        assert!(d("c0000000ff04de1b04800061a80b010a").is_err());
        assert!(d("0b010ac0000000ff04de1b04800061a8").is_err());
        assert_eq!(
            d("c0000000ff04de1b0100c0000000ff04de1b0100"),
            Err(DecodeError::DuplicateTransportParameter(0xff04_de1b))
        );
        // Not a single varint.
        assert!(d("c0000000ff04de1b020100").is_err());
        assert!(d("c0000000ff04de1b00").is_err());
    }

    #[test]
    fn unknown_ignored_duplicates_and_bad_values_rejected() {
        let d = |h: &str| TransportParameters::decode(&hex::decode(h).unwrap());
        // Reserved/grease id 31*1+27 = 58 = 0x3a (§18.1).
        assert_eq!(d("3a03aabbcc").unwrap(), TransportParameters::default());
        assert_eq!(
            d("010105010106"),
            Err(DecodeError::DuplicateTransportParameter(1))
        );
        assert_eq!(
            d("2001002001ff"),
            Err(DecodeError::DuplicateTransportParameter(0x20))
        );
        // 0x20 and 0x3f share no bit: unknown 0x3f twice is accepted.
        assert!(d("3f003f00").is_ok());
        let long_cid = format!("0f15{}", "00".repeat(21));
        let rejected = [
            "030244af",             // max_udp_payload_size 1199
            "0a0115",               // ack_delay_exponent 21
            "0b028000",             // 4-byte varint in a 2-byte value
            "0b0480004000",         // max_ack_delay 2^14
            "0e0101",               // active_connection_id_limit 1
            "0c0100",               // disable_active_migration with a value
            "020fee",               // stateless_reset_token: 15 bytes declared, 1 given
            "0808d000000000000001", // initial_max_streams_bidi 2^60 + 1
            &long_cid,              // initial_source_connection_id of 21 bytes
            "0102",                 // truncated
            "010201",               // truncated value
            "01020101",             // trailing byte in value
            "0d00",                 // preferred_address without its fields
        ];
        for h in rejected {
            assert!(
                matches!(d(h), Err(DecodeError::TransportParameter(_))),
                "{h}: {:?}",
                d(h)
            );
        }
        for h in ["030244b0", "0a0114", "0b027fff", "0908d000000000000000"] {
            assert!(d(h).is_ok(), "{h}: {:?}", d(h)); // the limits themselves
        }
        assert_eq!(
            d("010105010106").unwrap_err().transport_error_code(),
            crate::wire::TransportErrorCode::TRANSPORT_PARAMETER_ERROR
        );
    }

    fn preferred() -> PreferredAddress {
        PreferredAddress {
            ipv4: Some("192.0.2.1:4434".parse().unwrap()),
            ipv6: None,
            connection_id: ConnectionId::from_slice(&[0xc1, 0xd2]).unwrap(),
            stateless_reset_token: [0x5a; 16],
        }
    }

    #[test]
    fn preferred_address_byte_exact() {
        let tp = TransportParameters {
            preferred_address: Some(preferred()),
            ..TransportParameters::default()
        };
        let expect = [
            "0d 2b",                                 // id, length 43 = 4+2+16+2+1+2+16
            "c0000201 1152",                         // 192.0.2.1, port 4434
            "00000000000000000000000000000000 0000", // no IPv6: all zeros
            "02 c1d2",                               // connection ID
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",      // stateless reset token
        ]
        .concat()
        .replace(' ', "");
        assert_eq!(hex::encode(enc(&tp)), expect);
        let back = TransportParameters::decode(&hex::decode(&expect).unwrap()).unwrap();
        assert_eq!(back, tp);
        assert!(
            tp.has_server_only(),
            "§18.2: preferred_address is server-only"
        );
        let pa = back.preferred_address.unwrap();
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(
            pa.for_family_of(v4),
            Some("192.0.2.1:4434".parse().unwrap())
        );
        assert_eq!(pa.for_family_of(v6), None);
        // §18.2: a zero-length connection ID is a TRANSPORT_PARAMETER_ERROR; so are
        // a truncated value, trailing bytes and a duplicate.
        let zero_cid = expect.replace("0d2b", "0d29").replace("02c1d2", "00");
        let long = expect.replace("0d2b", "0d2c") + "00";
        let twice = format!("{expect}{expect}");
        for h in [&zero_cid, &expect[..expect.len() - 2], &long] {
            assert!(
                matches!(
                    TransportParameters::decode(&hex::decode(h).unwrap()),
                    Err(DecodeError::TransportParameter(_))
                ),
                "{h}"
            );
        }
        assert_eq!(
            TransportParameters::decode(&hex::decode(&twice).unwrap()),
            Err(DecodeError::DuplicateTransportParameter(0x0d))
        );
    }

    fn arb_preferred() -> impl Strategy<Value = Option<PreferredAddress>> {
        proptest::option::of(
            (
                proptest::option::of((any::<[u8; 4]>(), 1u16..)),
                proptest::option::of((any::<[u8; 16]>(), 1u16..)),
                proptest::collection::vec(any::<u8>(), 1..=20),
                any::<[u8; 16]>(),
            )
                .prop_map(|(v4, v6, cid, token)| PreferredAddress {
                    ipv4: v4.map(|(ip, port)| SocketAddrV4::new(ip.into(), port)),
                    ipv6: v6.map(|(ip, port)| SocketAddrV6::new(ip.into(), port, 0, 0)),
                    connection_id: ConnectionId::from_slice(&cid).unwrap(),
                    stateless_reset_token: token,
                }),
        )
    }

    fn arb_cid() -> impl Strategy<Value = Option<ConnectionId>> {
        proptest::option::of(
            proptest::collection::vec(any::<u8>(), 0..=20)
                .prop_map(|v| ConnectionId::from_slice(&v).unwrap()),
        )
    }

    fn arb_tp() -> impl Strategy<Value = TransportParameters> {
        let v = || prop_oneof![Just(0u64), 0u64..64, 0u64..(1 << 20), 0..=VARINT_MAX];
        (
            (
                arb_cid(),
                v(),
                proptest::option::of(any::<[u8; 16]>()),
                1200..=VARINT_MAX,
                v(),
                v(),
            ),
            (
                v(),
                v(),
                0u64..=(1 << 60),
                0u64..=(1 << 60),
                0u64..=20,
                0u64..(1 << 14),
            ),
            (
                any::<bool>(),
                2..=VARINT_MAX,
                arb_cid(),
                arb_cid(),
                proptest::option::of(v()),
                arb_preferred(),
                proptest::option::of((
                    1..=u32::MAX,
                    proptest::collection::vec(1..=u32::MAX, 0..=VersionInformation::MAX_AVAILABLE),
                )),
            ),
        )
            .prop_map(
                |((a, b, c, d, e, f), (g, h, i, j, k, l), (m, n, o, p, q, r, vi))| {
                    TransportParameters {
                        original_destination_connection_id: a,
                        max_idle_timeout_ms: b,
                        stateless_reset_token: c,
                        max_udp_payload_size: d,
                        initial_max_data: e,
                        initial_max_stream_data_bidi_local: f,
                        initial_max_stream_data_bidi_remote: g,
                        initial_max_stream_data_uni: h,
                        initial_max_streams_bidi: i,
                        initial_max_streams_uni: j,
                        ack_delay_exponent: k,
                        max_ack_delay_ms: l,
                        disable_active_migration: m,
                        preferred_address: r,
                        active_connection_id_limit: n,
                        initial_source_connection_id: o,
                        retry_source_connection_id: p,
                        max_datagram_frame_size: q,
                        version_information: vi.map(|(c, a)| VersionInformation::new(c, &a)),
                        // At most max_ack_delay, as the decoder requires.
                        min_ack_delay_us: (b % 2 == 0).then_some(l * 1000 / 3),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn roundtrip(tp in arb_tp()) {
            let bytes = enc(&tp);
            prop_assert_eq!(bytes.len(), tp.encoded_len());
            prop_assert_eq!(TransportParameters::decode(&bytes).unwrap(), tp);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = TransportParameters::decode(&bytes);
        }

        #[test]
        fn random_known_ids_never_panic(params in proptest::collection::vec((0u8..0x22, proptest::collection::vec(any::<u8>(), 0..24)), 0..8)) {
            // Well-framed parameters with known ids and random values.
            let mut b = Vec::new();
            for (pid, v) in &params {
                b.push(*pid);
                b.push(v.len() as u8);
                b.extend_from_slice(v);
            }
            if let Ok(tp) = TransportParameters::decode(&b) {
                // Whatever decodes re-encodes and decodes to the same value.
                prop_assert_eq!(TransportParameters::decode(&enc(&tp)).unwrap(), tp);
            }
        }
    }
}

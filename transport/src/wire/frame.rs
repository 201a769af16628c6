//! Frames (RFC 9000 §12.4 and §19, RFC 9221 §4): zero-copy decoding of a
//! decrypted payload, exact-length encoding, and header-only encoders for
//! STREAM, CRYPTO and DATAGRAM so that senders copy data straight into the packet.
//!
//! Decisions recorded here:
//! - RFC 9000 §12.4: "a frame type MUST use the shortest possible encoding. [...]
//!   An endpoint MAY treat the receipt of a frame type that uses a longer encoding
//!   than necessary as a connection error of type PROTOCOL_VIOLATION." quill does:
//!   a non-minimal type is [`DecodeError::NonMinimalFrameType`].
//! - A run of PADDING bytes decodes as one `Frame::Padding { len }`.
//! - A STREAM or DATAGRAM frame without a Length field extends to the end of the payload.
//! - `Frame::encode` always writes STREAM and DATAGRAM frames with a Length field;
//!   use [`encode_stream_header`] / [`encode_datagram_header`] to omit it.

use super::ack::AckFrame;
use super::codec::{DecodeError, LenCounter, Reader, Sink, Writer};
use super::packet::ConnectionId;
use super::varint::{varint_len, VARINT_MAX};

/// Frame type codes (RFC 9000 §12.4 Table 3, RFC 9221 §4).
pub mod frame_type {
    /// PADDING.
    pub const PADDING: u64 = 0x00;
    /// PING.
    pub const PING: u64 = 0x01;
    /// ACK.
    pub const ACK: u64 = 0x02;
    /// ACK with ECN counts.
    pub const ACK_ECN: u64 = 0x03;
    /// RESET_STREAM.
    pub const RESET_STREAM: u64 = 0x04;
    /// STOP_SENDING.
    pub const STOP_SENDING: u64 = 0x05;
    /// CRYPTO.
    pub const CRYPTO: u64 = 0x06;
    /// NEW_TOKEN.
    pub const NEW_TOKEN: u64 = 0x07;
    /// STREAM (0x08-0x0f; low bits OFF=0x04, LEN=0x02, FIN=0x01).
    pub const STREAM: u64 = 0x08;
    /// STREAM OFF bit.
    pub const STREAM_OFF: u64 = 0x04;
    /// STREAM LEN bit.
    pub const STREAM_LEN: u64 = 0x02;
    /// STREAM FIN bit.
    pub const STREAM_FIN: u64 = 0x01;
    /// MAX_DATA.
    pub const MAX_DATA: u64 = 0x10;
    /// MAX_STREAM_DATA.
    pub const MAX_STREAM_DATA: u64 = 0x11;
    /// MAX_STREAMS (bidirectional).
    pub const MAX_STREAMS_BIDI: u64 = 0x12;
    /// MAX_STREAMS (unidirectional).
    pub const MAX_STREAMS_UNI: u64 = 0x13;
    /// DATA_BLOCKED.
    pub const DATA_BLOCKED: u64 = 0x14;
    /// STREAM_DATA_BLOCKED.
    pub const STREAM_DATA_BLOCKED: u64 = 0x15;
    /// STREAMS_BLOCKED (bidirectional).
    pub const STREAMS_BLOCKED_BIDI: u64 = 0x16;
    /// STREAMS_BLOCKED (unidirectional).
    pub const STREAMS_BLOCKED_UNI: u64 = 0x17;
    /// NEW_CONNECTION_ID.
    pub const NEW_CONNECTION_ID: u64 = 0x18;
    /// RETIRE_CONNECTION_ID.
    pub const RETIRE_CONNECTION_ID: u64 = 0x19;
    /// PATH_CHALLENGE.
    pub const PATH_CHALLENGE: u64 = 0x1a;
    /// PATH_RESPONSE.
    pub const PATH_RESPONSE: u64 = 0x1b;
    /// CONNECTION_CLOSE (transport error).
    pub const CONNECTION_CLOSE: u64 = 0x1c;
    /// CONNECTION_CLOSE (application error).
    pub const CONNECTION_CLOSE_APP: u64 = 0x1d;
    /// HANDSHAKE_DONE.
    pub const HANDSHAKE_DONE: u64 = 0x1e;
    /// IMMEDIATE_ACK (draft-ietf-quic-ack-frequency §5).
    pub const IMMEDIATE_ACK: u64 = 0x1f;
    /// ACK_FREQUENCY (draft-ietf-quic-ack-frequency §4).
    pub const ACK_FREQUENCY: u64 = 0xaf;
    /// DATAGRAM without Length (RFC 9221).
    pub const DATAGRAM: u64 = 0x30;
    /// DATAGRAM with Length (RFC 9221).
    pub const DATAGRAM_LEN: u64 = 0x31;
}
use frame_type as ft;

/// RFC 9000 §19.11: "This value cannot exceed 2^60, as it is not possible to encode
/// stream IDs larger than 2^62-1."
pub const MAX_STREAMS_LIMIT: u64 = 1 << 60;

/// The packet number space a frame travels in. quill sends no 0-RTT, so `Data`
/// means 1-RTT packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Initial packets.
    Initial,
    /// Handshake packets.
    Handshake,
    /// 1-RTT (application data) packets.
    Data,
}

/// One frame, borrowing any payload bytes from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A run of `len` PADDING bytes (RFC 9000 §19.1).
    Padding {
        /// Number of 0x00 bytes.
        len: usize,
    },
    /// PING (§19.2).
    Ping,
    /// ACK (§19.3).
    Ack(AckFrame<'a>),
    /// RESET_STREAM (§19.4).
    ResetStream {
        /// Stream ID.
        id: u64,
        /// Application protocol error code.
        code: u64,
        /// Final size of the stream.
        final_size: u64,
    },
    /// STOP_SENDING (§19.5).
    StopSending {
        /// Stream ID.
        id: u64,
        /// Application protocol error code.
        code: u64,
    },
    /// CRYPTO (§19.6).
    Crypto {
        /// Byte offset in the crypto stream.
        offset: u64,
        /// Crypto data.
        data: &'a [u8],
    },
    /// NEW_TOKEN (§19.7); the token is never empty.
    NewToken {
        /// Address validation token.
        token: &'a [u8],
    },
    /// STREAM (§19.8).
    Stream {
        /// Stream ID.
        id: u64,
        /// Byte offset in the stream.
        offset: u64,
        /// Stream data.
        data: &'a [u8],
        /// FIN: this frame ends the stream.
        fin: bool,
    },
    /// MAX_DATA (§19.9).
    MaxData(u64),
    /// MAX_STREAM_DATA (§19.10).
    MaxStreamData {
        /// Stream ID.
        id: u64,
        /// Maximum stream data, in bytes.
        max: u64,
    },
    /// MAX_STREAMS (§19.11).
    MaxStreams {
        /// Bidirectional (0x12) or unidirectional (0x13).
        bidi: bool,
        /// Cumulative stream count, at most 2^60.
        max: u64,
    },
    /// DATA_BLOCKED (§19.12).
    DataBlocked(u64),
    /// STREAM_DATA_BLOCKED (§19.13).
    StreamDataBlocked {
        /// Stream ID.
        id: u64,
        /// Offset at which the sender is blocked.
        limit: u64,
    },
    /// STREAMS_BLOCKED (§19.14).
    StreamsBlocked {
        /// Bidirectional (0x16) or unidirectional (0x17).
        bidi: bool,
        /// Stream limit at the time of blocking, at most 2^60.
        limit: u64,
    },
    /// NEW_CONNECTION_ID (§19.15).
    NewConnectionId {
        /// Sequence number.
        seq: u64,
        /// Retire Prior To; never more than `seq`.
        retire_prior_to: u64,
        /// The connection ID, 1 to 20 bytes.
        cid: ConnectionId,
        /// Stateless reset token.
        reset_token: [u8; 16],
    },
    /// RETIRE_CONNECTION_ID (§19.16).
    RetireConnectionId {
        /// Sequence number of the retired connection ID.
        seq: u64,
    },
    /// PATH_CHALLENGE (§19.17).
    PathChallenge([u8; 8]),
    /// PATH_RESPONSE (§19.18).
    PathResponse([u8; 8]),
    /// CONNECTION_CLOSE (§19.19).
    ConnectionClose {
        /// Application close (0x1d) rather than transport close (0x1c).
        app: bool,
        /// Error code (a transport or application code according to `app`).
        code: u64,
        /// For transport closes, the type of the frame that triggered the error
        /// (0 when unknown); always `None` for application closes.
        frame_type: Option<u64>,
        /// Reason phrase (meant to be UTF-8, not checked).
        reason: &'a [u8],
    },
    /// HANDSHAKE_DONE (§19.20).
    HandshakeDone,
    /// DATAGRAM (RFC 9221 §4).
    Datagram {
        /// Datagram payload.
        data: &'a [u8],
    },
    /// ACK_FREQUENCY (draft-ietf-quic-ack-frequency §4): how often the receiver
    /// should acknowledge.
    AckFrequency(AckFrequency),
    /// IMMEDIATE_ACK (draft-ietf-quic-ack-frequency §5): acknowledge this packet at once.
    ImmediateAck,
}

/// The fields of an ACK_FREQUENCY frame (draft-ietf-quic-ack-frequency §4):
///
/// ```text
/// ACK_FREQUENCY Frame {
///   Type (i) = 0xaf,
///   Sequence Number (i),
///   Ack-Eliciting Threshold (i),
///   Requested Max Ack Delay (i),
///   Reordering Threshold (i),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFrequency {
    /// Sequence number; a receiver ignores a frame whose number is not above the
    /// largest it has seen.
    pub seq: u64,
    /// Ack-eliciting packets the receiver may get without acknowledging at once
    /// (0: acknowledge every one).
    pub ack_eliciting_threshold: u64,
    /// The max_ack_delay the receiver should use, in microseconds.
    pub request_max_ack_delay_us: u64,
    /// How far out of order packets may arrive before an immediate ACK
    /// (0: ignore reordering; 1: RFC 9000 §13.2.1 behaviour).
    pub reordering_threshold: u64,
}

/// RFC 9000 §19.8: "The largest offset delivered on a stream -- the sum of the offset
/// and data length -- cannot exceed 2^62-1 [...]. Receipt of a frame that exceeds this
/// limit MUST be treated as a connection error of type FRAME_ENCODING_ERROR or
/// FLOW_CONTROL_ERROR." (§19.6 says the same of CRYPTO.)
fn check_end(offset: u64, len: usize) -> Result<(), DecodeError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= VARINT_MAX => Ok(()),
        _ => Err(DecodeError::Malformed("offset + length exceeds 2^62 - 1")),
    }
}

impl<'a> Frame<'a> {
    /// Decodes one frame from `r`. On error the reader's position is unspecified.
    pub fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let (ty, len) = r.varint_with_len()?;
        if len != varint_len(ty) {
            return Err(DecodeError::NonMinimalFrameType(ty));
        }
        Ok(match ty {
            ft::PADDING => {
                let extra = r.peek_rest().iter().take_while(|b| **b == 0).count();
                r.skip(extra)?;
                Frame::Padding { len: 1 + extra }
            }
            ft::PING => Frame::Ping,
            ft::ACK | ft::ACK_ECN => Frame::Ack(AckFrame::decode_body(r, ty == ft::ACK_ECN)?),
            ft::RESET_STREAM => Frame::ResetStream {
                id: r.varint()?,
                code: r.varint()?,
                final_size: r.varint()?,
            },
            ft::STOP_SENDING => Frame::StopSending {
                id: r.varint()?,
                code: r.varint()?,
            },
            ft::CRYPTO => {
                let offset = r.varint()?;
                let n = r.varint_len_prefix()?;
                check_end(offset, n)?;
                Frame::Crypto {
                    offset,
                    data: r.bytes(n)?,
                }
            }
            ft::NEW_TOKEN => {
                let n = r.varint_len_prefix()?;
                // RFC 9000 §19.7: "A client MUST treat receipt of a NEW_TOKEN frame with
                // an empty Token field as a connection error of type FRAME_ENCODING_ERROR."
                if n == 0 {
                    return Err(DecodeError::Malformed("empty NEW_TOKEN"));
                }
                Frame::NewToken { token: r.bytes(n)? }
            }
            0x08..=0x0f => {
                let id = r.varint()?;
                let offset = if ty & ft::STREAM_OFF != 0 {
                    r.varint()?
                } else {
                    0
                };
                // RFC 9000 §19.8: "When the LEN bit is not set, the Length field is
                // absent and the Stream Data field extends to the end of the packet."
                let data = if ty & ft::STREAM_LEN != 0 {
                    let n = r.varint_len_prefix()?;
                    r.bytes(n)?
                } else {
                    r.rest()
                };
                check_end(offset, data.len())?;
                Frame::Stream {
                    id,
                    offset,
                    data,
                    fin: ty & ft::STREAM_FIN != 0,
                }
            }
            ft::MAX_DATA => Frame::MaxData(r.varint()?),
            ft::MAX_STREAM_DATA => Frame::MaxStreamData {
                id: r.varint()?,
                max: r.varint()?,
            },
            ft::MAX_STREAMS_BIDI | ft::MAX_STREAMS_UNI => Frame::MaxStreams {
                bidi: ty == ft::MAX_STREAMS_BIDI,
                max: stream_count(r, "MAX_STREAMS above 2^60")?,
            },
            ft::DATA_BLOCKED => Frame::DataBlocked(r.varint()?),
            ft::STREAM_DATA_BLOCKED => Frame::StreamDataBlocked {
                id: r.varint()?,
                limit: r.varint()?,
            },
            ft::STREAMS_BLOCKED_BIDI | ft::STREAMS_BLOCKED_UNI => Frame::StreamsBlocked {
                bidi: ty == ft::STREAMS_BLOCKED_BIDI,
                limit: stream_count(r, "STREAMS_BLOCKED above 2^60")?,
            },
            ft::NEW_CONNECTION_ID => {
                let seq = r.varint()?;
                let retire_prior_to = r.varint()?;
                // RFC 9000 §19.15: "Receiving a value in the Retire Prior To field that
                // is greater than that in the Sequence Number field MUST be treated as a
                // connection error of type FRAME_ENCODING_ERROR."
                if retire_prior_to > seq {
                    return Err(DecodeError::Malformed(
                        "Retire Prior To above Sequence Number",
                    ));
                }
                // "Values less than 1 and greater than 20 are invalid and MUST be treated
                // as a connection error of type FRAME_ENCODING_ERROR."
                let n = usize::from(r.u8()?);
                if !(1..=ConnectionId::MAX_LEN).contains(&n) {
                    return Err(DecodeError::Malformed(
                        "NEW_CONNECTION_ID length not 1..=20",
                    ));
                }
                let cid = ConnectionId::from_slice(r.bytes(n)?)?;
                Frame::NewConnectionId {
                    seq,
                    retire_prior_to,
                    cid,
                    reset_token: r.array()?,
                }
            }
            ft::RETIRE_CONNECTION_ID => Frame::RetireConnectionId { seq: r.varint()? },
            ft::PATH_CHALLENGE => Frame::PathChallenge(r.array()?),
            ft::PATH_RESPONSE => Frame::PathResponse(r.array()?),
            ft::CONNECTION_CLOSE | ft::CONNECTION_CLOSE_APP => {
                let app = ty == ft::CONNECTION_CLOSE_APP;
                let code = r.varint()?;
                let frame_type = if app { None } else { Some(r.varint()?) };
                let n = r.varint_len_prefix()?;
                Frame::ConnectionClose {
                    app,
                    code,
                    frame_type,
                    reason: r.bytes(n)?,
                }
            }
            ft::HANDSHAKE_DONE => Frame::HandshakeDone,
            ft::IMMEDIATE_ACK => Frame::ImmediateAck,
            ft::ACK_FREQUENCY => Frame::AckFrequency(AckFrequency {
                seq: r.varint()?,
                ack_eliciting_threshold: r.varint()?,
                request_max_ack_delay_us: r.varint()?,
                reordering_threshold: r.varint()?,
            }),
            ft::DATAGRAM => Frame::Datagram { data: r.rest() },
            ft::DATAGRAM_LEN => {
                let n = r.varint_len_prefix()?;
                Frame::Datagram { data: r.bytes(n)? }
            }
            _ => return Err(DecodeError::UnknownFrameType(ty)),
        })
    }

    fn emit(&self, s: &mut impl Sink) {
        match *self {
            Frame::Padding { len } => s.put_zeros(len),
            Frame::Ping => s.put_varint(ft::PING),
            Frame::Ack(ref a) => a.emit(s),
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => put_varints(s, &[ft::RESET_STREAM, id, code, final_size]),
            Frame::StopSending { id, code } => put_varints(s, &[ft::STOP_SENDING, id, code]),
            Frame::Crypto { offset, data } => {
                emit_crypto_header(s, offset, data.len());
                s.put_slice(data);
            }
            Frame::NewToken { token } => {
                s.put_varint(ft::NEW_TOKEN);
                s.put_varint(token.len() as u64);
                s.put_slice(token);
            }
            Frame::Stream {
                id,
                offset,
                data,
                fin,
            } => {
                emit_stream_header(s, id, offset, data.len(), fin, true);
                s.put_slice(data);
            }
            Frame::MaxData(v) => put_varints(s, &[ft::MAX_DATA, v]),
            Frame::MaxStreamData { id, max } => put_varints(s, &[ft::MAX_STREAM_DATA, id, max]),
            Frame::MaxStreams { bidi, max } => {
                let ty = [ft::MAX_STREAMS_UNI, ft::MAX_STREAMS_BIDI][usize::from(bidi)];
                put_varints(s, &[ty, max]);
            }
            Frame::DataBlocked(v) => put_varints(s, &[ft::DATA_BLOCKED, v]),
            Frame::StreamDataBlocked { id, limit } => {
                put_varints(s, &[ft::STREAM_DATA_BLOCKED, id, limit])
            }
            Frame::StreamsBlocked { bidi, limit } => {
                let ty = [ft::STREAMS_BLOCKED_UNI, ft::STREAMS_BLOCKED_BIDI][usize::from(bidi)];
                put_varints(s, &[ty, limit]);
            }
            Frame::NewConnectionId {
                seq,
                retire_prior_to,
                ref cid,
                ref reset_token,
            } => {
                s.put_varint(ft::NEW_CONNECTION_ID);
                s.put_varint(seq);
                s.put_varint(retire_prior_to);
                s.put_u8(cid.len() as u8);
                s.put_slice(cid.as_ref());
                s.put_slice(reset_token);
            }
            Frame::RetireConnectionId { seq } => put_varints(s, &[ft::RETIRE_CONNECTION_ID, seq]),
            Frame::PathChallenge(ref d) => {
                s.put_varint(ft::PATH_CHALLENGE);
                s.put_slice(d);
            }
            Frame::PathResponse(ref d) => {
                s.put_varint(ft::PATH_RESPONSE);
                s.put_slice(d);
            }
            Frame::ConnectionClose {
                app,
                code,
                frame_type,
                reason,
            } => {
                s.put_varint(if app {
                    ft::CONNECTION_CLOSE_APP
                } else {
                    ft::CONNECTION_CLOSE
                });
                s.put_varint(code);
                if !app {
                    s.put_varint(frame_type.unwrap_or(0));
                }
                s.put_varint(reason.len() as u64);
                s.put_slice(reason);
            }
            Frame::HandshakeDone => s.put_varint(ft::HANDSHAKE_DONE),
            Frame::Datagram { data } => {
                emit_datagram_header(s, data.len(), true);
                s.put_slice(data);
            }
            Frame::AckFrequency(f) => put_varints(
                s,
                &[
                    ft::ACK_FREQUENCY,
                    f.seq,
                    f.ack_eliciting_threshold,
                    f.request_max_ack_delay_us,
                    f.reordering_threshold,
                ],
            ),
            Frame::ImmediateAck => s.put_varint(ft::IMMEDIATE_ACK),
        }
    }

    /// Writes the frame. STREAM and DATAGRAM frames get a Length field.
    ///
    /// # Panics
    ///
    /// If the writer has less room than [`Frame::encoded_len`], or a field is
    /// above 2^62 - 1.
    pub fn encode(&self, w: &mut Writer) {
        self.emit(w);
    }

    /// Exactly how many bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        LenCounter::count(|c| self.emit(c))
    }

    /// The frame type [`Frame::encode`] writes (for STREAM, with the LEN bit set).
    pub fn ty(&self) -> u64 {
        match *self {
            Frame::Padding { .. } => ft::PADDING,
            Frame::Ping => ft::PING,
            Frame::Ack(ref a) => {
                if a.ecn.is_some() {
                    ft::ACK_ECN
                } else {
                    ft::ACK
                }
            }
            Frame::ResetStream { .. } => ft::RESET_STREAM,
            Frame::StopSending { .. } => ft::STOP_SENDING,
            Frame::Crypto { .. } => ft::CRYPTO,
            Frame::NewToken { .. } => ft::NEW_TOKEN,
            Frame::Stream { offset, fin, .. } => stream_type(offset, fin, true),
            Frame::MaxData(_) => ft::MAX_DATA,
            Frame::MaxStreamData { .. } => ft::MAX_STREAM_DATA,
            Frame::MaxStreams { bidi: true, .. } => ft::MAX_STREAMS_BIDI,
            Frame::MaxStreams { bidi: false, .. } => ft::MAX_STREAMS_UNI,
            Frame::DataBlocked(_) => ft::DATA_BLOCKED,
            Frame::StreamDataBlocked { .. } => ft::STREAM_DATA_BLOCKED,
            Frame::StreamsBlocked { bidi: true, .. } => ft::STREAMS_BLOCKED_BIDI,
            Frame::StreamsBlocked { bidi: false, .. } => ft::STREAMS_BLOCKED_UNI,
            Frame::NewConnectionId { .. } => ft::NEW_CONNECTION_ID,
            Frame::RetireConnectionId { .. } => ft::RETIRE_CONNECTION_ID,
            Frame::PathChallenge(_) => ft::PATH_CHALLENGE,
            Frame::PathResponse(_) => ft::PATH_RESPONSE,
            Frame::ConnectionClose { app: false, .. } => ft::CONNECTION_CLOSE,
            Frame::ConnectionClose { app: true, .. } => ft::CONNECTION_CLOSE_APP,
            Frame::HandshakeDone => ft::HANDSHAKE_DONE,
            Frame::Datagram { .. } => ft::DATAGRAM_LEN,
            Frame::AckFrequency(_) => ft::ACK_FREQUENCY,
            Frame::ImmediateAck => ft::IMMEDIATE_ACK,
        }
    }

    /// RFC 9002 §2: "Ack-eliciting frames: All frames other than ACK, PADDING, and
    /// CONNECTION_CLOSE are considered ack-eliciting."
    pub fn is_ack_eliciting(&self) -> bool {
        !matches!(
            self,
            Frame::Padding { .. } | Frame::Ack(_) | Frame::ConnectionClose { .. }
        )
    }

    /// RFC 9000 §12.4 Table 3: may this frame appear in packets of `space`?
    ///
    /// PADDING, PING, ACK and CRYPTO may appear in Initial, Handshake and 1-RTT
    /// packets; "A CONNECTION_CLOSE frame of type 0x1c can appear in Initial,
    /// Handshake, and 1-RTT packets, whereas a CONNECTION_CLOSE of type 0x1d can only
    /// appear in a 1-RTT packet"; every other frame (DATAGRAM too, RFC 9221 §4) is
    /// 1-RTT only. A violation is a PROTOCOL_VIOLATION (RFC 9000 §12.4: "An endpoint
    /// MUST treat receipt of a frame in a packet type that is not permitted as a
    /// connection error of type PROTOCOL_VIOLATION").
    pub fn allowed_in(&self, space: Space) -> bool {
        match self {
            Frame::Padding { .. } | Frame::Ping | Frame::Ack(_) | Frame::Crypto { .. } => true,
            Frame::ConnectionClose { app: false, .. } => true,
            _ => space == Space::Data,
        }
    }
}

/// Iterator over the frames of a decrypted packet payload. Yields
/// `Err` once for the first undecodable frame and then stops.
///
/// An empty payload yields nothing; RFC 9000 §12.4: "An endpoint MUST treat receipt
/// of a packet containing no frames as a connection error of type PROTOCOL_VIOLATION"
/// -- that check belongs to the caller.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    r: Reader<'a>,
    done: bool,
}

impl<'a> Frames<'a> {
    /// Frames of `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Frames {
            r: Reader::new(payload),
            done: false,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.r.is_empty() {
            return None;
        }
        let f = Frame::decode(&mut self.r);
        self.done = f.is_err();
        Some(f)
    }
}

impl core::iter::FusedIterator for Frames<'_> {}

fn stream_type(offset: u64, fin: bool, with_len: bool) -> u64 {
    let mut ty = ft::STREAM;
    if offset != 0 {
        ty |= ft::STREAM_OFF;
    }
    if with_len {
        ty |= ft::STREAM_LEN;
    }
    if fin {
        ty |= ft::STREAM_FIN;
    }
    ty
}

fn emit_stream_header(
    s: &mut impl Sink,
    id: u64,
    offset: u64,
    len: usize,
    fin: bool,
    with_len: bool,
) {
    s.put_varint(stream_type(offset, fin, with_len));
    s.put_varint(id);
    if offset != 0 {
        s.put_varint(offset);
    }
    if with_len {
        s.put_varint(len as u64);
    }
}

fn emit_crypto_header(s: &mut impl Sink, offset: u64, len: usize) {
    s.put_varint(ft::CRYPTO);
    s.put_varint(offset);
    s.put_varint(len as u64);
}

fn emit_datagram_header(s: &mut impl Sink, len: usize, with_len: bool) {
    if with_len {
        s.put_varint(ft::DATAGRAM_LEN);
        s.put_varint(len as u64);
    } else {
        s.put_varint(ft::DATAGRAM);
    }
}

/// The stream count of a MAX_STREAMS or STREAMS_BLOCKED frame; `what` names the
/// frame in the error.
///
/// RFC 9000 §19.11: "Receipt of a frame that permits opening of a stream larger than
/// this limit MUST be treated as a connection error of type FRAME_ENCODING_ERROR."
/// §19.14: "This value cannot exceed 2^60 [...]. Receipt of a frame that encodes a
/// larger stream ID MUST be treated as a connection error of type STREAM_LIMIT_ERROR
/// or FRAME_ENCODING_ERROR."
fn stream_count(r: &mut Reader<'_>, what: &'static str) -> Result<u64, DecodeError> {
    let n = r.varint()?;
    if n > MAX_STREAMS_LIMIT {
        return Err(DecodeError::Malformed(what));
    }
    Ok(n)
}

/// Writes `values` as varints: the frames made of a type and integer fields.
fn put_varints(s: &mut impl Sink, values: &[u64]) {
    for &v in values {
        s.put_varint(v);
    }
}

/// Length of the STREAM frame header [`encode_stream_header`] writes (the OFF bit
/// is set only for a non-zero offset).
pub fn stream_header_len(id: u64, offset: u64, len: usize, with_len: bool) -> usize {
    LenCounter::count(|c| emit_stream_header(c, id, offset, len, false, with_len))
}

/// Writes a STREAM frame header for `len` bytes of data that the caller then copies
/// in. Without `with_len` the data must run to the end of the packet.
pub fn encode_stream_header(
    w: &mut Writer,
    id: u64,
    offset: u64,
    len: usize,
    fin: bool,
    with_len: bool,
) {
    emit_stream_header(w, id, offset, len, fin, with_len);
}

/// Length of the CRYPTO frame header [`encode_crypto_header`] writes.
pub fn crypto_header_len(offset: u64, len: usize) -> usize {
    1 + varint_len(offset) + varint_len(len as u64)
}

/// Writes a CRYPTO frame header for `len` bytes of data that the caller then copies in.
pub fn encode_crypto_header(w: &mut Writer, offset: u64, len: usize) {
    emit_crypto_header(w, offset, len);
}

/// Length of the DATAGRAM frame header [`encode_datagram_header`] writes.
pub fn datagram_header_len(len: usize, with_len: bool) -> usize {
    if with_len {
        1 + varint_len(len as u64)
    } else {
        1
    }
}

/// Writes a DATAGRAM frame header (type 0x31 with Length, or 0x30 running to the end
/// of the packet) for `len` bytes that the caller then copies in.
pub fn encode_datagram_header(w: &mut Writer, len: usize, with_len: bool) {
    emit_datagram_header(w, len, with_len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(f: &Frame) -> Vec<u8> {
        crate::wire::codec::encode_exact(f.encoded_len(), |w| f.encode(w))
    }

    fn dec(bytes: &[u8]) -> Result<Frame<'_>, DecodeError> {
        let mut r = Reader::new(bytes);
        let f = Frame::decode(&mut r)?;
        assert!(r.is_empty(), "trailing bytes after {f:?}");
        Ok(f)
    }

    fn cid(b: &[u8]) -> ConnectionId {
        ConnectionId::from_slice(b).unwrap()
    }

    /// Hand-computed encodings, checked in both directions.
    #[test]
    fn byte_exact_both_ways() {
        let cases: Vec<(Frame, &str)> = vec![
            (Frame::Padding { len: 3 }, "000000"),
            (Frame::Ping, "01"),
            (
                Frame::ResetStream {
                    id: 4,
                    code: 0x25,
                    final_size: 15_293,
                },
                "0404257bbd",
            ),
            (
                Frame::StopSending {
                    id: 1,
                    code: 494_878_333,
                },
                "05019d7f3e7d",
            ),
            (
                Frame::Crypto {
                    offset: 0,
                    data: b"hi",
                },
                "0600026869",
            ),
            (
                Frame::Crypto {
                    offset: 100,
                    data: b"x",
                },
                "0640640178",
            ),
            (
                Frame::NewToken {
                    token: &[0xab, 0xcd],
                },
                "0702abcd",
            ),
            (
                Frame::Stream {
                    id: 4,
                    offset: 0,
                    data: b"ab",
                    fin: false,
                },
                "0a04026162",
            ),
            (
                Frame::Stream {
                    id: 0,
                    offset: 5,
                    data: b"",
                    fin: true,
                },
                "0f000500",
            ),
            (
                Frame::MaxData(151_288_809_941_952_652),
                "10c2197c5eff14e88c",
            ),
            (Frame::MaxStreamData { id: 2, max: 64 }, "11024040"),
            (
                Frame::MaxStreams {
                    bidi: true,
                    max: 100,
                },
                "124064",
            ),
            (
                Frame::MaxStreams {
                    bidi: false,
                    max: 1,
                },
                "1301",
            ),
            (Frame::DataBlocked(7), "1407"),
            (Frame::StreamDataBlocked { id: 3, limit: 9 }, "150309"),
            (
                Frame::StreamsBlocked {
                    bidi: true,
                    limit: 2,
                },
                "1602",
            ),
            (
                Frame::StreamsBlocked {
                    bidi: false,
                    limit: 3,
                },
                "1703",
            ),
            (
                Frame::NewConnectionId {
                    seq: 2,
                    retire_prior_to: 1,
                    cid: cid(&[0xaa, 0xbb]),
                    reset_token: [0x11; 16],
                },
                "18020102aabb11111111111111111111111111111111",
            ),
            (Frame::RetireConnectionId { seq: 5 }, "1905"),
            (
                Frame::PathChallenge([1, 2, 3, 4, 5, 6, 7, 8]),
                "1a0102030405060708",
            ),
            (Frame::PathResponse([8; 8]), "1b0808080808080808"),
            (
                Frame::ConnectionClose {
                    app: false,
                    code: 0x0a,
                    frame_type: Some(0x08),
                    reason: b"no",
                },
                "1c0a08026e6f",
            ),
            (
                Frame::ConnectionClose {
                    app: true,
                    code: 0x100,
                    frame_type: None,
                    reason: b"",
                },
                "1d410000",
            ),
            (Frame::HandshakeDone, "1e"),
            (Frame::Datagram { data: b"dg" }, "31026467"),
            (Frame::ImmediateAck, "1f"),
            (
                Frame::AckFrequency(AckFrequency {
                    seq: 1,
                    ack_eliciting_threshold: 9,
                    request_max_ack_delay_us: 25_000,
                    reordering_threshold: 2,
                }),
                "40af0109800061a802",
            ),
        ];
        for (frame, hex_str) in cases {
            assert_eq!(hex::encode(enc(&frame)), hex_str, "{frame:?}");
            assert_eq!(
                dec(&hex::decode(hex_str).unwrap()).unwrap(),
                frame,
                "{hex_str}"
            );
            assert_eq!(frame.encoded_len(), hex_str.len() / 2);
            if !matches!(frame, Frame::Padding { .. }) && frame.ty() < 0x40 {
                assert_eq!(
                    frame.ty(),
                    u64::from(hex::decode(hex_str).unwrap()[0]),
                    "{frame:?}"
                );
            }
        }
    }

    #[test]
    fn stream_without_len_extends_to_end() {
        // 0x0d = STREAM | OFF | FIN, no LEN.
        let bytes = hex::decode("0d0840106869").unwrap();
        assert_eq!(
            dec(&bytes).unwrap(),
            Frame::Stream {
                id: 8,
                offset: 16,
                data: b"hi",
                fin: true
            }
        );
        let bytes = hex::decode("30616263").unwrap();
        assert_eq!(dec(&bytes).unwrap(), Frame::Datagram { data: b"abc" });
    }

    #[test]
    fn header_only_encoders() {
        let mut buf = [0u8; 32];
        let mut w = Writer::new(&mut buf);
        encode_stream_header(&mut w, 4, 0, 2, false, false);
        assert_eq!(w.len(), stream_header_len(4, 0, 2, false));
        encode_stream_header(&mut w, 4, 1000, 300, true, true);
        encode_crypto_header(&mut w, 70, 5);
        encode_datagram_header(&mut w, 2, true);
        encode_datagram_header(&mut w, 2, false);
        assert_eq!(
            w.len(),
            stream_header_len(4, 0, 2, false)
                + stream_header_len(4, 1000, 300, true)
                + crypto_header_len(70, 5)
                + datagram_header_len(2, true)
                + datagram_header_len(2, false)
        );
        assert_eq!(hex::encode(w.written()), "08040f0443e8412c06404605310230");
    }

    #[test]
    fn padding_runs_collapse() {
        let payload = hex::decode("0000000001000000").unwrap();
        let frames: Vec<_> = Frames::new(&payload).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            frames,
            [
                Frame::Padding { len: 4 },
                Frame::Ping,
                Frame::Padding { len: 3 }
            ]
        );
    }

    #[test]
    fn decode_errors() {
        let err = |h: &str| {
            let b = hex::decode(h).unwrap();
            Frame::decode(&mut Reader::new(&b)).unwrap_err()
        };
        assert_eq!(err("21"), DecodeError::UnknownFrameType(0x21));
        assert_eq!(err("4001"), DecodeError::NonMinimalFrameType(1));
        assert_eq!(err("0702ab"), DecodeError::UnexpectedEnd);
        assert!(matches!(err("0700"), DecodeError::Malformed(_)));
        assert!(matches!(err("18010200aabb"), DecodeError::Malformed(_))); // retire > seq
        assert!(matches!(
            err("1801000011111111111111111111111111111111"),
            DecodeError::Malformed(_)
        )); // len 0
        assert!(matches!(err("180100150000"), DecodeError::Malformed(_))); // len 21
        assert!(matches!(
            err("12d000000000000001"),
            DecodeError::Malformed(_)
        )); // 2^60 + 1
        assert!(dec(&hex::decode("12d000000000000000").unwrap()).is_ok()); // 2^60
        assert!(matches!(
            err("17d000000000000001"),
            DecodeError::Malformed(_)
        ));
        // STREAM at offset 2^62 - 1 with one byte of data.
        assert!(matches!(
            err("0e00ffffffffffffffff0178"),
            DecodeError::Malformed(_)
        ));
        assert!(dec(&hex::decode("0e00ffffffffffffffff00").unwrap()).is_ok());
        assert!(matches!(
            err("06ffffffffffffffff0178"),
            DecodeError::Malformed(_)
        ));
        assert_eq!(err("1a01020304050607"), DecodeError::UnexpectedEnd);
        assert_eq!(err("1c00"), DecodeError::UnexpectedEnd);
        // ACK_FREQUENCY cut short at every field, and with a bad varint: all
        // FRAME_ENCODING_ERROR (RFC 9000 §12.4), never a panic.
        for cut in [
            "40af",
            "40af01",
            "40af0109",
            "40af0109800061a8",
            "40af0109800061",
        ] {
            let e = err(cut);
            assert_eq!(e, DecodeError::UnexpectedEnd, "{cut}");
            assert_eq!(
                e.transport_error_code(),
                crate::wire::error_code::TransportErrorCode::FRAME_ENCODING_ERROR
            );
        }
        // Non-minimal types of the two frames: PROTOCOL_VIOLATION.
        assert_eq!(err("401f"), DecodeError::NonMinimalFrameType(0x1f));
        assert_eq!(err("800000af"), DecodeError::NonMinimalFrameType(0xaf));
    }

    #[test]
    fn frames_stops_after_first_error() {
        let payload = hex::decode("01ff01").unwrap();
        let v: Vec<_> = Frames::new(&payload).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], Ok(Frame::Ping));
        assert!(v[1].is_err());
        assert_eq!(Frames::new(&[]).count(), 0);
    }

    #[test]
    fn ack_eliciting_and_spaces() {
        assert!(Frame::Ping.is_ack_eliciting());
        assert!(!Frame::Padding { len: 1 }.is_ack_eliciting());
        let close = Frame::ConnectionClose {
            app: false,
            code: 0,
            frame_type: Some(0),
            reason: b"",
        };
        let app_close = Frame::ConnectionClose {
            app: true,
            code: 0,
            frame_type: None,
            reason: b"",
        };
        assert!(!close.is_ack_eliciting());
        assert!(close.allowed_in(Space::Initial) && close.allowed_in(Space::Handshake));
        assert!(!app_close.allowed_in(Space::Initial) && app_close.allowed_in(Space::Data));
        let crypto = Frame::Crypto {
            offset: 0,
            data: b"",
        };
        assert!(crypto.allowed_in(Space::Initial) && crypto.allowed_in(Space::Handshake));
        for f in [
            Frame::HandshakeDone,
            Frame::Stream {
                id: 0,
                offset: 0,
                data: b"",
                fin: false,
            },
            Frame::NewToken { token: b"t" },
            Frame::Datagram { data: b"" },
            Frame::MaxData(1),
            Frame::PathChallenge([0; 8]),
            Frame::ImmediateAck,
            Frame::AckFrequency(AckFrequency {
                seq: 0,
                ack_eliciting_threshold: 1,
                request_max_ack_delay_us: 1000,
                reordering_threshold: 1,
            }),
        ] {
            assert!(
                !f.allowed_in(Space::Initial) && !f.allowed_in(Space::Handshake),
                "{f:?}"
            );
            assert!(f.allowed_in(Space::Data));
            assert!(f.is_ack_eliciting());
        }
    }

    /// Owned inputs from which every non-ACK frame type is built (ACK has its own
    /// property tests in `ack.rs`).
    #[derive(Debug, Clone)]
    struct Spec {
        sel: u8,
        a: u64,
        b: u64,
        c: u64,
        flag: bool,
        data: Vec<u8>,
        cid: Vec<u8>,
        token: [u8; 16],
    }

    fn arb_varint() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..64, 0u64..16384, 0u64..(1 << 30), 0..=VARINT_MAX]
    }

    fn arb_spec() -> impl Strategy<Value = Spec> {
        (
            0u8..23,
            arb_varint(),
            arb_varint(),
            arb_varint(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 1..=20),
            any::<[u8; 16]>(),
        )
            .prop_map(|(sel, a, b, c, flag, data, cid, token)| Spec {
                sel,
                a,
                b,
                c,
                flag,
                data,
                cid,
                token,
            })
    }

    fn build(s: &Spec) -> Frame<'_> {
        let (a, b, c) = (s.a, s.b, s.c);
        let data = &s.data[..];
        let room = VARINT_MAX - data.len() as u64;
        let eight: [u8; 8] = s.token[..8].try_into().unwrap();
        match s.sel {
            0 => Frame::Padding {
                len: data.len() + 1,
            },
            1 => Frame::Ping,
            2 => Frame::ResetStream {
                id: a,
                code: b,
                final_size: c,
            },
            3 => Frame::StopSending { id: a, code: b },
            4 => Frame::Crypto {
                offset: b.min(room),
                data,
            },
            5 => Frame::NewToken {
                token: if data.is_empty() { &s.token } else { data },
            },
            6 => Frame::Stream {
                id: a,
                offset: b.min(room),
                data,
                fin: s.flag,
            },
            7 => Frame::MaxData(a),
            8 => Frame::MaxStreamData { id: a, max: b },
            9 => Frame::MaxStreams {
                bidi: s.flag,
                max: a % (MAX_STREAMS_LIMIT + 1),
            },
            10 => Frame::DataBlocked(a),
            11 => Frame::StreamDataBlocked { id: a, limit: b },
            12 => Frame::StreamsBlocked {
                bidi: s.flag,
                limit: a % (MAX_STREAMS_LIMIT + 1),
            },
            13 => Frame::NewConnectionId {
                seq: a,
                retire_prior_to: b.min(a),
                cid: cid(&s.cid),
                reset_token: s.token,
            },
            14 => Frame::RetireConnectionId { seq: a },
            15 => Frame::PathChallenge(eight),
            16 => Frame::PathResponse(eight),
            17 => Frame::ConnectionClose {
                app: false,
                code: a,
                frame_type: Some(b),
                reason: data,
            },
            18 => Frame::ConnectionClose {
                app: true,
                code: a,
                frame_type: None,
                reason: data,
            },
            19 => Frame::HandshakeDone,
            20 => Frame::ImmediateAck,
            21 => Frame::AckFrequency(AckFrequency {
                seq: a,
                ack_eliciting_threshold: b,
                request_max_ack_delay_us: c,
                reordering_threshold: a ^ b,
            }),
            _ => Frame::Datagram { data },
        }
    }

    proptest! {
        #[test]
        fn frame_roundtrip(spec in arb_spec()) {
            let f = build(&spec);
            let bytes = enc(&f);
            prop_assert_eq!(bytes.len(), f.encoded_len());
            prop_assert_eq!(dec(&bytes).unwrap(), f);
        }

        #[test]
        fn frames_roundtrip(specs in proptest::collection::vec(arb_spec(), 0..8)) {
            // Padding runs would merge with neighbours; leave them out here.
            let frames: Vec<_> = specs.iter().filter(|s| s.sel != 0).map(build).collect();
            let mut buf = vec![0u8; frames.iter().map(Frame::encoded_len).sum()];
            let mut w = Writer::new(&mut buf);
            for f in &frames {
                f.encode(&mut w);
            }
            prop_assert_eq!(w.remaining(), 0);
            let got: Vec<_> = Frames::new(&buf).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn stream_header_roundtrip(id in arb_varint(), offset in arb_varint(), data in proptest::collection::vec(any::<u8>(), 0..100), fin: bool) {
            let offset = offset.min(VARINT_MAX - data.len() as u64);
            let mut buf = vec![0u8; stream_header_len(id, offset, data.len(), true) + data.len()];
            let mut w = Writer::new(&mut buf);
            encode_stream_header(&mut w, id, offset, data.len(), fin, true);
            w.put_slice(&data);
            prop_assert_eq!(w.remaining(), 0);
            prop_assert_eq!(dec(&buf).unwrap(), Frame::Stream { id, offset, data: &data, fin });
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            crate::wire::fuzz_support::decode_frames(&bytes);
        }

        #[test]
        fn typed_random_bodies_never_panic(ty in 0u8..0x32, bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Random bytes rarely start with a valid type; force one.
            let mut b = vec![ty];
            b.extend_from_slice(&bytes);
            crate::wire::fuzz_support::decode_frames(&b);
        }
    }
}

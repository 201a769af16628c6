//! The receiving half of a stream: reassembly, final size and stream-level
//! flow-control checks (RFC 9000 §3.2, §4.1, §4.5).

use super::assembler::Assembler;
use super::flow::RecvWindow;
use super::{ReadError, ReadOutcome, StreamsError};
use crate::wire::TransportErrorCode;

/// Where the receiving half is in its life (RFC 9000 §3.2, simplified to what the
/// application can observe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvState {
    /// Receiving; data is delivered to the application.
    Recv,
    /// The peer reset the stream with this code; the application has not seen it yet.
    Reset(u64),
    /// The application called `stop_sending`; data is discarded until the final
    /// size is known.
    Stopped,
    /// The application saw the end (FIN or reset); nothing more to deliver.
    Done,
}

/// What a received frame did, for connection-level accounting.
#[derive(Debug, Default)]
pub(crate) struct RecvOutcome {
    /// Newly consumed connection-level credit (growth of the highest offset).
    pub delta: u64,
    /// Credit released back to the connection immediately (discarded data).
    pub released: u64,
    /// The application has something new to read (data, FIN or reset).
    pub notify: bool,
}

#[derive(Debug)]
pub(crate) struct RecvStream {
    pub asm: Assembler,
    pub window: RecvWindow,
    /// Highest offset received (the credit this stream consumed).
    pub max_received: u64,
    pub final_size: Option<u64>,
    pub state: RecvState,
    /// Bytes released to the connection-level window (read or discarded).
    pub credited: u64,
    /// A `Readable` event is outstanding.
    pub readable_signaled: bool,
    /// A MAX_STREAM_DATA for this stream is queued.
    pub max_data_queued: bool,
}

impl RecvStream {
    pub fn new(window: u64, max_window: u64) -> Self {
        Self {
            asm: Assembler::new(max_window.max(window)),
            window: RecvWindow::new(window, max_window),
            max_received: 0,
            final_size: None,
            state: RecvState::Recv,
            credited: 0,
            readable_signaled: false,
            max_data_queued: false,
        }
    }

    /// Whether the receiving half needs nothing more (the stream may be freed).
    pub fn is_done(&self) -> bool {
        match self.state {
            RecvState::Done => true,
            RecvState::Stopped => self.final_size.is_some(),
            _ => false,
        }
    }

    /// Whether a MAX_STREAM_DATA update would still be useful.
    pub fn wants_credit(&self) -> bool {
        self.final_size.is_none() && matches!(self.state, RecvState::Recv)
    }

    /// Validates and absorbs a STREAM frame ending at `end` (`offset + data.len()`).
    /// `conn_credit` is what is left of the connection-level window.
    pub fn on_data(
        &mut self,
        offset: u64,
        data: &[u8],
        fin: bool,
        conn_credit: u64,
    ) -> Result<RecvOutcome, StreamsError> {
        let end = offset + data.len() as u64;
        let delta = self.check_end(end, fin, conn_credit)?;
        self.max_received = self.max_received.max(end);
        if fin {
            self.final_size = Some(end);
        }
        let mut out = self.outcome(delta);
        if let RecvState::Recv = self.state {
            // Cannot fail: the flow-control check above keeps `end` within the
            // window, and the assembler's cap is the largest window.
            self.asm.insert(offset, data).map_err(|_| {
                StreamsError::new(
                    TransportErrorCode::FLOW_CONTROL_ERROR,
                    "reassembly limit exceeded",
                )
            })?;
            out.notify = self.asm.readable() > 0 || self.final_size == Some(self.asm.read_offset());
        }
        Ok(out)
    }

    /// The outcome of a frame whose new data takes `delta` bytes of connection
    /// credit. A stopped stream discards the data: its credit is given back at once.
    /// What a frame does in the `Recv` state is up to the caller; after a reset
    /// nothing more happens.
    fn outcome(&mut self, delta: u64) -> RecvOutcome {
        let mut out = RecvOutcome {
            delta,
            ..RecvOutcome::default()
        };
        if let RecvState::Stopped = self.state {
            out.released = delta;
            self.credited += delta;
        }
        out
    }

    /// The final-size and flow-control rules for data up to `end` from a STREAM frame
    /// (a final size of `end` with `fin`) or a RESET_STREAM (`fin`, final size `end`);
    /// returns the connection credit the new data takes (`end` beyond what arrived).
    fn check_end(&self, end: u64, fin: bool, conn_credit: u64) -> Result<u64, StreamsError> {
        // RFC 9000 §4.5: "Once a final size for a stream is known, it cannot change.
        // If a RESET_STREAM or STREAM frame is received indicating a change in the
        // final size for the stream, an endpoint SHOULD respond with an error of type
        // FINAL_SIZE_ERROR [...]. A receiver SHOULD treat receipt of data at or
        // beyond the final size as an error of type FINAL_SIZE_ERROR, even after a
        // stream is closed."
        if let Some(fs) = self.final_size {
            if end > fs || (fin && end != fs) {
                return Err(StreamsError::new(
                    TransportErrorCode::FINAL_SIZE_ERROR,
                    "data beyond or changing the final size",
                ));
            }
        }
        // RFC 9000 §4.5: "If a RESET_STREAM or STREAM frame is received indicating
        // [...] a final size that is lower than the size of stream data that is
        // already received, an endpoint SHOULD respond with an error of type
        // FINAL_SIZE_ERROR".
        if fin && end < self.max_received {
            return Err(StreamsError::new(
                TransportErrorCode::FINAL_SIZE_ERROR,
                "final size below data received",
            ));
        }
        // RFC 9000 §4.1: "A receiver MUST close the connection with an error of type
        // FLOW_CONTROL_ERROR if the sender violates the advertised connection or
        // stream data limits" (a final size counts as data sent, §4.5).
        if end > self.window.limit() {
            return Err(StreamsError::new(
                TransportErrorCode::FLOW_CONTROL_ERROR,
                "stream data limit exceeded",
            ));
        }
        let delta = end.saturating_sub(self.max_received);
        if delta > conn_credit {
            return Err(StreamsError::new(
                TransportErrorCode::FLOW_CONTROL_ERROR,
                "connection data limit exceeded",
            ));
        }
        Ok(delta)
    }

    /// Validates and applies a RESET_STREAM frame.
    pub fn on_reset(
        &mut self,
        code: u64,
        final_size: u64,
        conn_credit: u64,
    ) -> Result<RecvOutcome, StreamsError> {
        // A RESET_STREAM carries the final size: the checks of a STREAM frame with FIN.
        let delta = self.check_end(final_size, true, conn_credit)?;
        self.max_received = final_size;
        self.final_size = Some(final_size);
        let mut out = self.outcome(delta);
        if let RecvState::Recv = self.state {
            // The application will never read the rest: release it all now.
            self.state = RecvState::Reset(code);
            out.released = final_size - self.credited;
            self.credited = final_size;
            self.asm.clear();
            out.notify = true;
        }
        Ok(out)
    }

    /// Application read; returns the outcome. Bytes read must be credited by the caller.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, ReadError> {
        self.read_with(|asm| asm.read(buf))
    }

    /// Like [`RecvStream::read`], but hands at most `max` contiguous bytes to `f`
    /// where they lie (up to two slices, in order) instead of copying them out.
    pub fn read_in_place(
        &mut self,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<ReadOutcome, ReadError> {
        self.read_with(|asm| {
            let (a, b) = asm.peek();
            let a = &a[..a.len().min(max)];
            let b = &b[..b.len().min(max - a.len())];
            let n = a.len() + b.len();
            if !a.is_empty() {
                f(a);
            }
            if !b.is_empty() {
                f(b);
            }
            asm.consume(n);
            n
        })
    }

    /// The state logic of a read; `take` moves data out of the assembler and says
    /// how much.
    fn read_with(
        &mut self,
        take: impl FnOnce(&mut Assembler) -> usize,
    ) -> Result<ReadOutcome, ReadError> {
        self.readable_signaled = false;
        match self.state {
            RecvState::Done | RecvState::Stopped => Err(ReadError::ClosedStream),
            RecvState::Reset(code) => {
                self.state = RecvState::Done;
                Err(ReadError::Reset(code))
            }
            RecvState::Recv => {
                let n = take(&mut self.asm);
                if n > 0 {
                    Ok(ReadOutcome::Data(n))
                } else if self.final_size == Some(self.asm.read_offset()) {
                    self.state = RecvState::Done;
                    Ok(ReadOutcome::Finished)
                } else {
                    Ok(ReadOutcome::Blocked)
                }
            }
        }
    }

    /// The application is no longer interested. Returns the credit released, and
    /// whether a STOP_SENDING frame is worth sending.
    pub fn stop(&mut self) -> (u64, bool) {
        if self.state != RecvState::Recv {
            return (0, false);
        }
        self.state = RecvState::Stopped;
        let released = self.max_received - self.credited;
        self.credited = self.max_received;
        self.asm.clear();
        // RFC 9000 §3.5: STOP_SENDING is useless once the final size is known
        // ("Size Known" or later: all data has been sent).
        (released, self.final_size.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TransportErrorCode;

    #[test]
    fn final_size_rules() {
        let mut r = RecvStream::new(100, 100);
        r.on_data(0, b"abcd", false, 1000).unwrap();
        // FIN below data already received.
        assert_eq!(
            r.on_data(0, b"ab", true, 1000).unwrap_err().code,
            TransportErrorCode::FINAL_SIZE_ERROR
        );
        r.on_data(4, b"ef", true, 1000).unwrap();
        // Data past the final size, and a different final size.
        assert_eq!(
            r.on_data(6, b"g", false, 1000).unwrap_err().code,
            TransportErrorCode::FINAL_SIZE_ERROR
        );
        assert_eq!(
            r.on_data(0, b"abc", true, 1000).unwrap_err().code,
            TransportErrorCode::FINAL_SIZE_ERROR
        );
        assert_eq!(
            r.on_reset(0, 7, 1000).unwrap_err().code,
            TransportErrorCode::FINAL_SIZE_ERROR
        );
        // Retransmission of the same final chunk is fine.
        r.on_data(4, b"ef", true, 1000).unwrap();
    }

    #[test]
    fn flow_control_rules() {
        let mut r = RecvStream::new(10, 10);
        assert_eq!(
            r.on_data(5, &[0; 6], false, 1000).unwrap_err().code,
            TransportErrorCode::FLOW_CONTROL_ERROR
        );
        assert_eq!(
            r.on_data(0, &[0; 5], false, 4).unwrap_err().code,
            TransportErrorCode::FLOW_CONTROL_ERROR
        );
        let o = r.on_data(0, &[0; 10], false, 10).unwrap();
        assert_eq!(o.delta, 10);
        // A duplicate consumes no new credit.
        assert_eq!(r.on_data(0, &[0; 10], false, 0).unwrap().delta, 0);
        assert_eq!(
            r.on_reset(0, 11, 1000).unwrap_err().code,
            TransportErrorCode::FLOW_CONTROL_ERROR
        );
        assert_eq!(
            r.on_reset(0, 9, 1000).unwrap_err().code,
            TransportErrorCode::FINAL_SIZE_ERROR
        );
    }

    #[test]
    fn reset_releases_unread_credit_and_is_reported_once() {
        let mut r = RecvStream::new(100, 100);
        r.on_data(0, &[1; 20], false, 1000).unwrap();
        let mut buf = [0; 5];
        assert_eq!(r.read(&mut buf), Ok(ReadOutcome::Data(5)));
        r.credited += 5;
        let o = r.on_reset(9, 30, 1000).unwrap();
        assert_eq!((o.delta, o.released, o.notify), (10, 25, true));
        assert_eq!(r.read(&mut buf), Err(ReadError::Reset(9)));
        assert!(r.is_done());
        assert_eq!(r.read(&mut buf), Err(ReadError::ClosedStream));
    }

    #[test]
    fn stopped_stream_discards_and_releases() {
        let mut r = RecvStream::new(100, 100);
        r.on_data(0, &[1; 20], false, 1000).unwrap();
        assert_eq!(r.stop(), (20, true));
        let o = r.on_data(20, &[1; 10], false, 1000).unwrap();
        assert_eq!((o.delta, o.released), (10, 10));
        assert!(!r.is_done());
        let o = r.on_reset(0, 40, 1000).unwrap();
        assert_eq!((o.delta, o.released), (10, 10));
        assert!(r.is_done());
        assert_eq!(r.credited, 40);
    }
}

//! The ECHO service's pump (docs/SPEC.md §10): what the peer sends on a bidirectional
//! stream goes back on it, then FIN after the peer's FIN.

use crate::proto::{Connection, ReadOutcome, StreamId, WriteError};

/// One echoed stream: bytes read but not yet written back, and whether the peer
/// finished.
#[derive(Debug, Default)]
pub struct Echo {
    pending: Vec<u8>,
    fin: bool,
}

/// What one [`Echo::pump`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    /// The stream goes on; this many bytes were written back.
    Moved(usize),
    /// Everything was echoed and the stream finished.
    Done,
    /// The peer reset or stopped the stream: give it up.
    Failed,
}

impl Echo {
    /// An echo whose first bytes (those that came with the request line) are `first`.
    pub fn new(first: Vec<u8>) -> Echo {
        Echo {
            pending: first,
            fin: false,
        }
    }

    /// Whether the peer finished its side.
    pub fn peer_finished(&self) -> bool {
        self.fin
    }

    /// Reads while fewer than `hold` bytes wait (back-pressure), writes them back, and
    /// goes on until the stream blocks or `budget` bytes were written; finishes the
    /// stream once the peer finished and everything went back. `buf` is scratch space.
    pub fn pump(
        &mut self,
        c: &mut Connection,
        id: StreamId,
        buf: &mut [u8],
        hold: usize,
        budget: usize,
    ) -> Pumped {
        let mut moved = 0;
        loop {
            while self.pending.len() < hold && !self.fin {
                let room = (hold - self.pending.len()).min(buf.len());
                match c.read(id, &mut buf[..room]) {
                    Ok(ReadOutcome::Data(n)) => self.pending.extend_from_slice(&buf[..n]),
                    Ok(ReadOutcome::Finished) => self.fin = true,
                    Ok(ReadOutcome::Blocked) => break,
                    Err(_) => return Pumped::Failed,
                }
            }
            let mut wrote = 0;
            while wrote < self.pending.len() {
                match c.write(id, &self.pending[wrote..]) {
                    Ok(0) | Err(WriteError::Blocked) => break,
                    Ok(n) => wrote += n,
                    Err(_) => return Pumped::Failed,
                }
            }
            self.pending.drain(..wrote);
            moved += wrote;
            if wrote == 0 || self.fin || moved >= budget {
                break;
            }
        }
        if self.fin && self.pending.is_empty() {
            let _ = c.finish(id);
            return Pumped::Done;
        }
        Pumped::Moved(moved)
    }
}

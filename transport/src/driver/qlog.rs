//! [`QlogDir`]: writes each connection's qlog trace to `DIR/<odcid>_<role>.sqlog`
//! (`--qlog-dir`), on one writer thread.
//!
//! Connections hand batches of records to a queue bounded in bytes
//! ([`DEFAULT_QUEUE_BYTES`]); the event loop never waits for the disk. When the
//! queue is full the batch is refused at once and the connection counts its events as
//! dropped (`proto::connection::qlog` reports the count in the trace's last record and
//! in a log line). The writer thread opens a file per batch, appends and closes it, so
//! no file stays open for an idle connection and a lost batch leaves no handle behind.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::proto::{QlogSink, QlogStream, Side};
use crate::wire::ConnectionId;

/// Bytes of records waiting for the writer before batches are dropped.
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;

/// A directory of qlog traces, one JSON-SEQ file per connection; a [`QlogSink`] for
/// [`TransportConfig::qlog`](crate::proto::TransportConfig::qlog).
#[derive(Debug)]
pub struct QlogDir {
    dir: PathBuf,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer: a batch arrived or the directory was dropped.
    work: Condvar,
    /// Wakes [`QlogDir::finish`]: a batch was written or a trace ended.
    progress: Condvar,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<Batch>,
    bytes: usize,
    /// Traces whose connection still exists.
    open_traces: usize,
    /// The writer is writing a batch it took.
    busy: bool,
    /// The [`QlogDir`] was dropped: write what is queued, then stop.
    closed: bool,
}

#[derive(Debug)]
struct Batch {
    path: Arc<PathBuf>,
    data: Vec<u8>,
    /// The trace's first batch: create (or truncate) the file.
    create: bool,
}

impl QlogDir {
    /// Uses `dir` (created if missing) and starts the writer thread. Fails at once
    /// if the directory cannot be created or written to, so a bad `--qlog-dir` is
    /// reported at startup rather than per connection.
    pub fn create(dir: &Path) -> io::Result<Arc<QlogDir>> {
        QlogDir::with_capacity(dir, DEFAULT_QUEUE_BYTES)
    }

    /// [`QlogDir::create`] with a queue of `capacity` bytes.
    pub fn with_capacity(dir: &Path, capacity: usize) -> io::Result<Arc<QlogDir>> {
        fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create the directory: {e}")))?;
        if !fs::metadata(dir)?.is_dir() {
            return Err(io::Error::other("not a directory"));
        }
        // Writable? Try it once, now.
        let probe = dir.join(format!(".quill-qlog-probe-{}", std::process::id()));
        File::create(&probe)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write there: {e}")))?;
        let _ = fs::remove_file(&probe);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            capacity,
        });
        let for_thread = shared.clone();
        thread::Builder::new()
            .name("quill-qlog".into())
            .spawn(move || writer(&for_thread))?;
        Ok(Arc::new(QlogDir {
            dir: dir.to_path_buf(),
            shared,
        }))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the connection whose client chose `odcid`, on `side`.
    pub fn path_of(&self, odcid: &ConnectionId, side: Side) -> PathBuf {
        let role = match side {
            Side::Client => "client",
            Side::Server => "server",
        };
        self.dir.join(format!("{odcid}_{role}.sqlog"))
    }

    /// Waits, at most `timeout`, until every traced connection has ended and all of
    /// its records are written. Returns whether that happened in time (call it before
    /// the process exits).
    pub fn finish(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.lock();
        loop {
            if q.open_traces == 0 && q.batches.is_empty() && !q.busy {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            q = self
                .shared
                .progress
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for QlogDir {
    fn drop(&mut self) {
        // The writer finishes what is queued and exits; nobody waits for it here.
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

impl QlogSink for QlogDir {
    fn open(&self, odcid: &ConnectionId, side: Side) -> Option<Box<dyn QlogStream>> {
        self.shared.lock().open_traces += 1;
        Some(Box::new(FileTrace {
            shared: self.shared.clone(),
            path: Arc::new(self.path_of(odcid, side)),
            created: false,
        }))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's file.
struct FileTrace {
    shared: Arc<Shared>,
    path: Arc<PathBuf>,
    created: bool,
}

impl QlogStream for FileTrace {
    fn write(&mut self, data: Vec<u8>) -> bool {
        let mut q = self.shared.lock();
        if q.closed || q.bytes + data.len() > self.shared.capacity {
            return false;
        }
        q.bytes += data.len();
        q.batches.push_back(Batch {
            path: self.path.clone(),
            data,
            create: !self.created,
        });
        drop(q);
        self.created = true;
        self.shared.work.notify_one();
        true
    }
}

impl Drop for FileTrace {
    fn drop(&mut self) {
        self.shared.lock().open_traces -= 1;
        self.shared.progress.notify_all();
    }
}

/// The writer thread: takes batches in order and appends them to their files.
fn writer(shared: &Shared) {
    let mut last_failed: Option<Arc<PathBuf>> = None;
    loop {
        let batch = {
            let mut q = shared.lock();
            loop {
                if let Some(b) = q.batches.pop_front() {
                    q.busy = true;
                    break b;
                }
                if q.closed {
                    return;
                }
                q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        if let Err(e) = append(&batch) {
            // One line per failing file, not one per batch.
            if last_failed.as_ref() != Some(&batch.path) {
                tracing::warn!("qlog: cannot write {}: {e}", batch.path.display());
                last_failed = Some(batch.path.clone());
            }
        }
        let mut q = shared.lock();
        q.busy = false;
        q.bytes -= batch.data.len();
        drop(q);
        shared.progress.notify_all();
    }
}

fn append(batch: &Batch) -> io::Result<()> {
    let mut f = if batch.create {
        File::create(&*batch.path)?
    } else {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&*batch.path)?
    };
    f.write_all(&batch.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(b: u8) -> ConnectionId {
        ConnectionId::from_slice(&[b; 8]).unwrap()
    }

    #[test]
    fn writes_one_file_per_connection_and_finishes() {
        let dir = std::env::temp_dir().join(format!("quill-qlog-test-{}", std::process::id()));
        let q = QlogDir::create(&dir).unwrap();
        let mut a = q.open(&cid(1), Side::Client).unwrap();
        let mut b = q.open(&cid(1), Side::Server).unwrap();
        assert!(a.write(b"\x1e{\"a\":1}\n".to_vec()));
        assert!(b.write(b"\x1e{\"b\":1}\n".to_vec()));
        assert!(a.write(b"\x1e{\"a\":2}\n".to_vec()));
        assert!(!q.finish(Duration::ZERO), "traces are still open");
        drop((a, b));
        assert!(q.finish(Duration::from_secs(10)));
        let client = fs::read_to_string(dir.join("0101010101010101_client.sqlog")).unwrap();
        assert_eq!(client, "\u{1e}{\"a\":1}\n\u{1e}{\"a\":2}\n");
        let server = fs::read_to_string(dir.join("0101010101010101_server.sqlog")).unwrap();
        assert_eq!(server, "\u{1e}{\"b\":1}\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stuck_writer_makes_writes_fail_at_once_instead_of_blocking() {
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("quill-qlog-full-{}", std::process::id()));
        let q = QlogDir::with_capacity(&dir, 1010).unwrap();
        // The trace's file is a FIFO nobody reads yet: the writer blocks opening it,
        // as on a hung disk.
        let path = q.path_of(&cid(3), Side::Client);
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let mut t = q.open(&cid(3), Side::Client).unwrap();
        assert!(t.write(vec![b'a'; 10]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !q.shared.lock().busy {
            assert!(Instant::now() < deadline, "the writer never took the batch");
            thread::sleep(Duration::from_millis(1));
        }
        // The batch being written counts: room for ten more, the other 190 are refused
        // at once.
        let accepted = (0..200).filter(|_| t.write(vec![b'b'; 100])).count();
        assert_eq!(accepted, 10);
        // Unstick the writer: read everything (it reopens the FIFO for each batch).
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            for _ in 0..100 {
                File::open(&path).unwrap().read_to_end(&mut all).unwrap();
                if all.len() >= 1010 {
                    break;
                }
            }
            all
        });
        drop(t);
        assert!(q.finish(Duration::from_secs(10)));
        let all = reader.join().unwrap();
        assert_eq!(all.len(), 1010);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_that_cannot_be_created_fails_at_once() {
        let file = std::env::temp_dir().join(format!("quill-qlog-file-{}", std::process::id()));
        fs::write(&file, b"").unwrap();
        let e = QlogDir::create(&file.join("sub")).unwrap_err();
        assert!(e.to_string().contains("cannot create the directory"), "{e}");
        fs::remove_file(&file).unwrap();
    }
}

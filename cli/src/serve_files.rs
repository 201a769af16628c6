//! The server's side of the file requests (docs/SPEC.md §10): GET, PUT, LIST, MKDIR,
//! RM in the logged-in account's own space, `ROOT/<account>/`.
//!
//! The event loop only parses the request and checks what needs no disk (the upload
//! cap); everything that touches the disk — creating the account's space, resolving
//! the path, hashing for GET, creating a PUT's temporary file, listing, creating and
//! removing — runs in [`run_file_job`] on the worker pool. A PUT's data then streams
//! on the loop as before (`server.rs`).

use std::path::PathBuf;

use quill_transport::service::space::{self, ListEntry};
use quill_transport::service::{account_space, resolve_get, Answer, Files, Request, Upload};

use crate::server::{answer, refuse, start_get, Service};

/// One file request, with what the pool needs to serve it.
pub(crate) struct FileJob {
    root: PathBuf,
    account: String,
    request: Request,
    /// Bytes that came after the request line (the start of a PUT's data).
    rest: Vec<u8>,
    max_upload_size: Option<u64>,
}

impl FileJob {
    /// A file request of the account logged in on the connection; refused without a
    /// root, and a PUT above the upload cap before any data moves.
    pub(crate) fn new(
        files: Files<'_>,
        account: Option<&str>,
        request: Request,
        rest: Vec<u8>,
    ) -> Result<FileJob, String> {
        let root = files.root.ok_or("file service disabled")?;
        let account = account.ok_or("not logged in")?;
        if let Request::Put { size, .. } = &request {
            if let Some(max) = files.max_upload_size.filter(|max| size > max) {
                return Err(format!(
                    "the file is {size} bytes; this server takes at most {max} bytes per upload"
                ));
            }
        }
        Ok(FileJob {
            root: root.to_path_buf(),
            account: account.to_owned(),
            request,
            rest,
            max_upload_size: files.max_upload_size,
        })
    }

    /// The stream's state while the pool works: an upload's data waits unread.
    pub(crate) fn waiting(&self) -> Service {
        match self.request {
            Request::Put { .. } | Request::PutStream { .. } => Service::Pending,
            _ => Service::Waiting,
        }
    }
}

/// On the pool: serves a file request in the account's space (created on first use).
pub(crate) fn run_file_job(job: FileJob) -> Service {
    let space = match account_space(&job.root, &job.account) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let started = |up: Result<Upload, String>| match up {
        Ok(mut up) => match up.write(&job.rest) {
            Ok(()) => Service::Put(Box::new(up)),
            Err(e) => refuse(e),
        },
        Err(e) => refuse(e),
    };
    let done = |r: Result<(), String>| match r {
        Ok(()) => answer(Answer::Ok),
        Err(e) => refuse(e),
    };
    match job.request {
        Request::Get { path } => match resolve_get(&space, &path) {
            Ok(p) => start_get(&p),
            Err(e) => refuse(e),
        },
        Request::Put { size, sha256, path } => started(Upload::start(&space, &path, size, sha256)),
        Request::PutStream { path } => started(Upload::start_streamed(
            &space,
            &path,
            job.max_upload_size.unwrap_or(u64::MAX),
        )),
        Request::List { path } => match space::list(&space, path.as_deref()) {
            Ok(entries) => listing(&entries),
            Err(e) => refuse(e),
        },
        Request::Mkdir { path, parents } => done(space::make_dir(&space, &path, parents)),
        Request::Remove { path, recursive } => done(space::remove(&space, &path, recursive)),
        Request::Echo | Request::Sink | Request::Source { .. } | Request::Stats => {
            refuse("not a file request")
        }
    }
}

/// LIST's answer: `OK <n>`, then one line per entry (at most
/// [`space::MAX_LIST_ENTRIES`], each under 300 bytes).
fn listing(entries: &[ListEntry]) -> Service {
    let mut out = Answer::Count(entries.len() as u64).line().into_bytes();
    for e in entries {
        out.extend_from_slice(e.line().as_bytes());
    }
    Service::Answer { out, pos: 0 }
}

//! Login verification on the worker pool, answered on the loop thread.
//!
//! The event loop hands an [`Event::LoginRequested`](crate::proto::Event) to the
//! application; [`verify_on_pool`] moves the slow part (Argon2id, database reads and
//! writes) to the worker pool and, when it is done, accepts or refuses the login on
//! the loop thread. A successful login's bookkeeping write (`last_login`) is a second
//! pool job queued once the answer is given, so the client never waits for it.
//! A public-key login that the verifier's key cache can accept from memory
//! (`LoginVerifier::decide_cached`: no I/O) skips the pool: it is answered on the loop
//! thread in the same turn, right after the event that asked. Meanwhile the loop
//! keeps serving every other connection — and this one too: it keeps acknowledging
//! and keeping alive while it waits for the verdict.
//!
//! Limits applied here, on the loop thread:
//! - the per-address session cap (`LoginVerifier::sessions`) before any work is queued,
//!   and the per-account cap when the verdict accepts; the slot is attached to the
//!   connection and released when the endpoint frees it;
//! - a refusal is answered at [`Decision::answer_at`](crate::auth::login::Decision)
//!   through `Connection::refuse_login_at` (a connection timer), so backoff slows a
//!   guesser down without holding the loop or a worker.
//!
//! Every verdict is logged here, on the loop thread, as one `info` line (target
//! `quill::login`) with the client's address, the connection ID, the user name as
//! sent, and the reason as the server knows it (`Decision::log_reason`: "wrong
//! password", "unknown account", a cap, ...), while the client still gets one answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::event_loop::{Completion, Context, Handler};
use crate::auth::login::{Decision, LoginRecord, LoginVerifier, Verdict};
use crate::auth::sessions::SessionSlot;
use crate::proto::endpoint::ConnectionHandle;
use crate::proto::{LoginMethod, LoginRequest};
use crate::wire::ConnectionId;

/// Reason given when the worker pool's queue is full (nothing about the account).
pub const BUSY: &str = "server busy, try again";

/// Verifies `req` for connection `conn` with `verifier` on the worker pool; the verdict
/// is applied on the loop thread (a refusal at its [`Decision`]'s `answer_at`). If the
/// address has its most sessions (`verifier.sessions`) the login is refused at once
/// with the cap as the reason, and if the pool's queue is full, with [`BUSY`] (the
/// loop never waits). An accepted login beyond the account's cap is refused the same
/// way. A public-key login the key cache accepts from memory
/// ([`LoginVerifier::decide_cached`]) is answered without the pool, later in the same
/// loop turn. `on_verdict` runs on the loop thread after a verdict is applied
/// (for logging or counting); pass `|_, _, _| {}` if unused. A verdict whose session
/// ended meanwhile (its handle may already serve another client, told apart by the
/// connection ID) is dropped, and `on_verdict` is not called for it.
///
/// [`Decision`]: crate::auth::login::Decision
pub fn verify_on_pool<H: Handler>(
    ctx: &mut Context<'_, H>,
    verifier: &Arc<LoginVerifier>,
    conn: ConnectionHandle,
    req: LoginRequest,
    on_verdict: impl FnOnce(&mut H, ConnectionHandle, &Verdict) + Send + 'static,
) {
    let now = ctx.now();
    let Some((peer, cid)) = ctx
        .connection(conn)
        .map(|c| (c.remote_address(), c.local_cid()))
    else {
        return;
    };
    let source = peer.ip();
    let who = Who {
        peer,
        cid,
        user: req.user.clone(),
        method: method_name(&req.method),
    };
    let slot = match verifier.sessions.admit_address(source) {
        Ok(slot) => slot,
        Err(cap) => {
            who.refused("too many sessions from the address", None);
            if let Some(c) = ctx.connection(conn) {
                c.refuse_login(now, &cap.to_string());
            }
            return;
        }
    };
    // A public-key login whose account and key are in the key cache is decided here,
    // from memory: no hop to a worker thread and back.
    let unix_now = unix_seconds();
    if let Some((decision, record)) = verifier.decide_cached(&req, source, now, unix_now) {
        let answer = answer(
            verifier.clone(),
            decision,
            record,
            who,
            slot,
            conn,
            on_verdict,
        );
        ctx.run_soon(answer);
        return;
    }
    if !ctx.pool_has_room() {
        who.refused("worker pool full (server busy)", None);
        if let Some(c) = ctx.connection(conn) {
            c.refuse_login(now, BUSY);
        }
        return;
    }
    let verifier = verifier.clone();
    let job = move || -> Completion<H> {
        let (decision, record) =
            verifier.decide_deferred(&req, source, Instant::now(), unix_seconds());
        answer(verifier, decision, record, who, slot, conn, on_verdict)
    };
    if ctx.spawn(job).is_err() {
        if let Some(c) = ctx.connection(conn) {
            c.refuse_login(now, BUSY);
        }
    }
}

/// The clock `last_login` is written in.
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The loop-thread half of [`verify_on_pool`]: applies `decision` to the session (if it
/// is still the one that asked), queues `record` on the pool, logs, and calls
/// `on_verdict`.
fn answer<H: Handler>(
    verifier: Arc<LoginVerifier>,
    decision: Decision,
    record: Option<LoginRecord>,
    who: Who,
    mut slot: SessionSlot,
    conn: ConnectionHandle,
    on_verdict: impl FnOnce(&mut H, ConnectionHandle, &Verdict) + Send + 'static,
) -> Completion<H> {
    Box::new(move |handler: &mut H, ctx: &mut Context<'_, H>| {
        let now = ctx.now();
        // The login's bookkeeping write goes back to the pool: the answer below
        // does not wait for it.
        if let Some(r) = record {
            let write = move || -> Completion<H> {
                verifier.record(r);
                Box::new(|_: &mut H, _: &mut Context<'_, H>| {})
            };
            if ctx.spawn(write).is_err() {
                tracing::debug!("worker pool full: a login's last_login was not recorded");
            }
        }
        let mut verdict = decision.verdict;
        let mut log_reason = decision.log_reason;
        if let Verdict::Accept { account, .. } = &verdict {
            if let Err(cap) = slot.admit_user(account) {
                verdict = Verdict::Refuse {
                    reason: cap.to_string(),
                };
                log_reason = "too many sessions for the account";
            }
        }
        // The session may have ended while the verdict was computed (handshake
        // timeout, eviction) and its handle been reused by another client's
        // session: its connection ID tells them apart, so a verdict never lands
        // on the wrong session.
        // A stale verdict is dropped whole: `on_verdict` is not called either, so a
        // handler that logs or counts per handle never credits it to the newcomer.
        let Some(c) = ctx.connection(conn).filter(|c| c.local_cid() == who.cid) else {
            tracing::debug!("{conn:?}: login verdict for a session that has ended; dropped");
            return;
        };
        match &verdict {
            Verdict::Accept { account, message } => {
                who.accepted(account, log_reason);
                c.accept_login(now, account, message);
                c.attach(Box::new(slot));
            }
            Verdict::Refuse { reason } => {
                let held = decision.answer_at.saturating_duration_since(now);
                who.refused(log_reason, Some(held));
                c.refuse_login_at(now, reason, decision.answer_at)
            }
        }
        on_verdict(handler, conn, &verdict);
    })
}

/// Who asked to log in, for the log lines of [`verify_on_pool`].
struct Who {
    peer: SocketAddr,
    cid: ConnectionId,
    /// The name as the client sent it (network input: logged as a quoted, escaped
    /// string, never raw).
    user: String,
    method: &'static str,
}

impl Who {
    fn accepted(&self, account: &str, how: &str) {
        tracing::info!(
            target: "quill::login",
            peer = %self.peer,
            cid = %self.cid,
            user = account,
            method = how,
            "login accepted"
        );
    }

    /// `held`: how long the answer is held back (backoff), when it is.
    fn refused(&self, reason: &str, held: Option<Duration>) {
        let held = held.filter(|d| !d.is_zero()).map(|d| format!("{d:.1?}"));
        tracing::info!(
            target: "quill::login",
            peer = %self.peer,
            cid = %self.cid,
            user = self.user.as_str(),
            method = self.method,
            reason,
            answer_held = held.as_deref(),
            "login refused"
        );
    }
}

fn method_name(m: &LoginMethod) -> &'static str {
    match m {
        LoginMethod::Password(_) => "password",
        LoginMethod::PublicKey(_) => "public key",
        LoginMethod::Register { .. } => "registration",
    }
}

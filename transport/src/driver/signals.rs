//! Signals for servers built on the event loop: SIGINT and SIGTERM (and, when asked
//! for, SIGHUP) are blocked in every thread and collected by one thread with `sigwait`,
//! which then asks the loop to shut down gracefully or to reload its configuration (the
//! loop thread itself is never interrupted). A blocked SIGHUP never takes its default
//! action (ending the process), so a server that asked for it survives every SIGHUP.

/// SIGINT and SIGTERM (and SIGHUP with [`TerminationSignals::block_with_hangup`]),
/// blocked so that only [`TerminationSignals::wait`] receives them.
#[derive(Clone, Copy)]
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread and in every thread it spawns
    /// afterwards. Call it first in `main` (or before the server spawns any thread), so
    /// that no thread is left that would take the signal's default action.
    pub fn block() -> TerminationSignals {
        Self::block_set(&[libc::SIGINT, libc::SIGTERM])
    }

    /// [`TerminationSignals::block`], and SIGHUP too (the reload signal of daemons):
    /// [`TerminationSignals::wait`] then also returns `libc::SIGHUP`.
    pub fn block_with_hangup() -> TerminationSignals {
        Self::block_set(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
    }

    fn block_set(signals: &[libc::c_int]) -> TerminationSignals {
        // SAFETY: sigemptyset/sigaddset initialise a set we own; pthread_sigmask changes
        // only the calling thread's mask.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &sig in signals {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        TerminationSignals { set }
    }

    /// Waits until one of the blocked signals arrives and returns its number; `None`
    /// if `sigwait` failed.
    pub fn wait(&self) -> Option<i32> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` is an initialised signal set, blocked in every thread.
        (unsafe { libc::sigwait(&self.set, &mut sig) } == 0).then_some(sig)
    }

    /// Spawns a thread that waits for a signal and then calls `then` with its number.
    pub fn on_signal(self, then: impl FnOnce(i32) + Send + 'static) {
        std::thread::spawn(move || {
            if let Some(sig) = self.wait() {
                then(sig);
            }
        });
    }

    /// Spawns a thread that calls `each` with every signal that arrives, until `each`
    /// returns false (for example after a termination signal) or `sigwait` fails.
    pub fn on_signals(self, mut each: impl FnMut(i32) -> bool + Send + 'static) {
        std::thread::spawn(move || {
            while let Some(sig) = self.wait() {
                if !each(sig) {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_hangup_is_collected_not_fatal() {
        // The mask is per thread: block in a thread of our own, so the test harness's
        // other threads keep theirs (a SIGHUP sent to this thread alone is pending
        // until sigwait takes it).
        let got = std::thread::spawn(|| {
            let signals = TerminationSignals::block_with_hangup();
            // SAFETY: pthread_kill on the calling thread with a signal it blocks.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGHUP) };
            signals.wait()
        })
        .join()
        .expect("the thread survived SIGHUP");
        assert_eq!(got, Some(libc::SIGHUP));
    }
}

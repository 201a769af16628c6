//! Termination signals for servers built on the event loop: SIGINT and SIGTERM are
//! blocked in every thread and collected by one thread with `sigwait`, which then asks
//! the loop to shut down gracefully (the loop thread itself is never interrupted).

/// SIGINT and SIGTERM, blocked so that only [`TerminationSignals::wait`] receives them.
#[derive(Clone, Copy)]
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread and in every thread it spawns
    /// afterwards. Call it first in `main` (or before the server spawns any thread), so
    /// that no thread is left that would take the signal's default action.
    pub fn block() -> TerminationSignals {
        // SAFETY: sigemptyset/sigaddset initialise a set we own; pthread_sigmask changes
        // only the calling thread's mask.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        TerminationSignals { set }
    }

    /// Waits until SIGINT or SIGTERM arrives and returns its number; `None` if
    /// `sigwait` failed.
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
}

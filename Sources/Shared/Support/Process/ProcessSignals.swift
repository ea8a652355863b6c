import Foundation

/// Set by SIGTERM or SIGINT once `ProcessSignals.install()` ran; long-running loops poll it.
nonisolated(unsafe) public var stopRequested: Int32 = 0

/// Graceful-stop signals for the long-running executables (scheduler, worker).
public enum ProcessSignals {
    /// Unblocks every signal (a parent such as a test runner or a shell may have blocked them, and
    /// children inherit the mask), turns SIGTERM and SIGINT into `stopRequested`, ignores SIGPIPE.
    public static func install() {
        var all = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_UNBLOCK, &all, nil)
        signal(SIGTERM) { _ in stopRequested = 1 }
        signal(SIGINT) { _ in stopRequested = 1 }
        signal(SIGPIPE, SIG_IGN)
    }
}

import Foundation

/// What the long-running executables do with signals before they start their services.
public enum ProcessSignals {
    /// Unblocks every signal (a parent such as a test runner or a shell may have blocked them, and
    /// children inherit the mask: SIGTERM would then be ignored) and ignores SIGPIPE. SIGTERM and
    /// SIGINT are then handled in one place, the `ServiceGroup` of each executable
    /// (swift-service-lifecycle), which starts the services' graceful shutdown.
    public static func prepare() {
        var all = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_UNBLOCK, &all, nil)
        signal(SIGPIPE, SIG_IGN)
    }
}

import Foundation

/// Monotonic seconds, for measuring intervals and deadlines unaffected by wall-clock changes.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Sleeps the calling thread (the clients are blocking by design; see docs/ARCHITECTURE notes).
public func sleepSeconds(_ seconds: Double) {
    guard seconds > 0 else { return }
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - floor(seconds)) * 1e9))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// Another host's clock (Postgres's `now()`), as last read, carried forward on this host's
/// monotonic clock: ages, timeouts and retry times are judged on the server's clock, never by
/// comparing this host's wall clock with timestamps the server wrote. Off by at most the round trip
/// of the read that set it. Thread-safe.
public final class ServerClock: @unchecked Sendable {
    private let lock = NSLock()
    private var base: Date?
    private var baseMono = 0.0

    public init() {}

    /// Records that the server's clock read `now` (a statement's result, just received).
    public func set(_ now: Date) {
        lock.withLock {
            base = now
            baseMono = monotonicSeconds()
        }
    }

    /// The server's time now; this host's until the first `set`.
    public func now() -> Date {
        lock.withLock {
            guard let base else { return Date() }
            return base.addingTimeInterval(monotonicSeconds() - baseMono)
        }
    }
}

import ETLSupport
import Logging

/// How a long-running loop backs off after errors it survives: 0.5 s doubling to 30 s, and one
/// log line per kind of error (its type and first line) until a pass succeeds again.
struct ErrorBackoff {
    private let backoff = Backoff(base: 0.5, cap: 30, jitter: 0)
    private var failures = 0
    private var seen = Set<String>()

    /// Logs `error` when its kind is new since the last success; returns the seconds to wait.
    mutating func failed(_ error: Error, logger: Logger) -> Double {
        let kind = "\(type(of: error)): " + String("\(error)".split(separator: "\n").first ?? "")
        if seen.insert(kind).inserted {
            logger.error("\(kind); retrying with backoff (logged once until a pass succeeds)")
        }
        defer { failures += 1 }
        return backoff.delay(attempt: failures)
    }

    mutating func succeeded(logger: Logger) {
        if !seen.isEmpty { logger.info("recovered after \(seen.count) kind(s) of error") }
        seen.removeAll()
        failures = 0
    }
}

import Logging

extension Backoff {
    /// Calls `open` until it succeeds, sleeping with this backoff between failures that
    /// `isRetryable` accepts, until `timeout` seconds have passed; then the last error is thrown.
    /// Shared by the Postgres and Redis clients' reconnect.
    public func retry<T>(
        timeout: Double, server: String, endpoint: String, logger: Logger,
        isRetryable: (Error) -> Bool, _ open: () throws -> T
    ) throws -> T {
        let deadline = monotonicSeconds() + timeout
        var attempt = 0
        while true {
            do {
                let value = try open()
                if attempt > 0 {
                    logger.info(
                        "reconnected to \(server)", metadata: ["endpoint": "\(endpoint)", "attempts": "\(attempt + 1)"])
                }
                return value
            } catch  where isRetryable(error) {
                let wait = delay(attempt: attempt)
                if monotonicSeconds() + wait > deadline { throw error }
                logger.debug(
                    "\(server) not reachable yet, retrying", metadata: ["endpoint": "\(endpoint)", "in": "\(wait)"])
                sleepSeconds(wait)
                attempt += 1
            }
        }
    }
}

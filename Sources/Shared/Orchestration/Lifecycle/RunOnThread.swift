import ETLSupport
import Foundation
import ServiceLifecycle

/// Runs a blocking body (loops over the blocking libpq and hiredis clients) on a thread of its own
/// as the `run()` of a swift-service-lifecycle `Service`: graceful shutdown (SIGTERM, SIGINT, or the
/// group ending) sets `stop`, which the body and the threads it starts check; `run()` returns when
/// the body does. The body never calls `exit`: what it cannot finish in time it hands back, and it
/// returns, leaving `main` to end the process.
public func runOnThread<T: Sendable>(
    stop: StopFlag, name: String, _ body: @escaping @Sendable () throws -> T
) async throws -> T {
    try await withGracefulShutdownHandler {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<T, Error>) in
            let t = Thread {
                do { k.resume(returning: try body()) } catch { k.resume(throwing: error) }
            }
            t.name = name
            t.stackSize = 8 << 20
            t.start()
        }
    } onGracefulShutdown: {
        stop.set()
    }
}

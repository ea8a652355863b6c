import ETLSupport
import Foundation
import Testing
import Workflow

@Suite("Retry and timeout rules of a task (no servers)")
struct TaskAttemptRulesTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("tries 1…retries+1: up for retry after a doubling, capped, jittered backoff, then failed")
    func retries() {
        let spec = TaskSpec(
            "t", operation: "op", retries: 6, retryBackoff: Backoff(base: 10, cap: 300, jitter: 0.3), timeout: 5)
        // Without jitter (random 0) the delay is the ceiling: 10, 20, 40, 80, 160, 300 (capped).
        let expected: [Double] = [10, 20, 40, 80, 160, 300]
        for (i, delay) in expected.enumerated() {
            let end = spec.afterFailure(tryNumber: i + 1, now: Self.now, random: 0)
            #expect(end == .init(state: .upForRetry, retryAt: Self.now.addingTimeInterval(delay)))
            // Full jitter draw: 30% earlier at most.
            let early = spec.afterFailure(tryNumber: i + 1, now: Self.now, random: 1)
            #expect(abs(early.retryAt!.timeIntervalSince(Self.now) - delay * 0.7) < 1e-9)
        }
        #expect(spec.afterFailure(tryNumber: 7, now: Self.now) == .init(state: .failed, retryAt: nil))
        #expect(spec.afterFailure(tryNumber: 100, now: Self.now).state == .failed)
        let once = TaskSpec("t", operation: "op")
        #expect(once.afterFailure(tryNumber: 1, now: Self.now) == .init(state: .failed, retryAt: nil))
    }

    @Test("a timeout counts from the attempt's real start, strictly after the limit")
    func timeouts() {
        let spec = TaskSpec("t", operation: "op", timeout: 1.5)
        #expect(!spec.isTimedOut(startedAt: nil, now: Self.now))
        #expect(!spec.isTimedOut(startedAt: Self.now.addingTimeInterval(-1.5), now: Self.now))
        #expect(spec.isTimedOut(startedAt: Self.now.addingTimeInterval(-1.51), now: Self.now))
        #expect(!spec.isTimedOut(startedAt: Self.now.addingTimeInterval(10), now: Self.now))  // clock skew
        #expect(!TaskSpec("t", operation: "op").isTimedOut(startedAt: .distantPast, now: Self.now))
    }
}

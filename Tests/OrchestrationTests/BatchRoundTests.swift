import Orchestration
import Testing

/// A worker slot's batch rules, without servers. The process tests (`QueueProcessTests.batch`,
/// `example_wait_batch`) check the same rules end to end with real workers.
@Suite("Batch round decisions (no servers)")
struct BatchRoundTests {
    @Test("the first task of a round always runs; later ones only inside the window and without a timeout")
    func runsNext() {
        #expect(BatchRound.runsNext(ranSoFar: 0, elapsed: 10, nextHasTimeout: true))
        #expect(BatchRound.runsNext(ranSoFar: 3, elapsed: 0.01, nextHasTimeout: false))
        #expect(BatchRound.runsNext(ranSoFar: 3, elapsed: BatchRound.window, nextHasTimeout: false))
        #expect(!BatchRound.runsNext(ranSoFar: 3, elapsed: BatchRound.window + 0.001, nextHasTimeout: false))
        #expect(!BatchRound.runsNext(ranSoFar: 1, elapsed: 0, nextHasTimeout: true))
    }

    struct VerdictCase: Sendable, CustomTestStringConvertible {
        let current: Bool
        let wrote: Bool
        let succeeded: Bool
        let roundSize: Int
        let verdict: BatchRound.Verdict
        var testDescription: String { "current \(current) wrote \(wrote) ok \(succeeded) of \(roundSize)" }
    }

    /// Every combination, spelled out.
    static let verdicts: [VerdictCase] = [
        .init(current: true, wrote: true, succeeded: true, roundSize: 1, verdict: .acknowledge(event: true)),
        .init(current: true, wrote: true, succeeded: true, roundSize: 5, verdict: .acknowledge(event: true)),
        .init(current: true, wrote: false, succeeded: false, roundSize: 5, verdict: .acknowledge(event: true)),
        .init(current: true, wrote: true, succeeded: false, roundSize: 1, verdict: .acknowledge(event: true)),
        .init(current: true, wrote: false, succeeded: true, roundSize: 2, verdict: .acknowledge(event: true)),
        // Superseded without writing: nothing to undo, no event (the scheduler has moved on).
        .init(current: false, wrote: false, succeeded: true, roundSize: 1, verdict: .acknowledge(event: false)),
        .init(current: false, wrote: false, succeeded: true, roundSize: 4, verdict: .acknowledge(event: false)),
        .init(current: false, wrote: false, succeeded: false, roundSize: 4, verdict: .acknowledge(event: false)),
        // A failed task's writes were rolled back to its savepoint already.
        .init(current: false, wrote: true, succeeded: false, roundSize: 4, verdict: .acknowledge(event: false)),
        .init(current: false, wrote: true, succeeded: false, roundSize: 1, verdict: .acknowledge(event: false)),
        // Superseded after writing: its writes must not commit.
        .init(current: false, wrote: true, succeeded: true, roundSize: 1, verdict: .rollBackTask),
        .init(current: false, wrote: true, succeeded: true, roundSize: 2, verdict: .rollBackRound),
        .init(current: false, wrote: true, succeeded: true, roundSize: 64, verdict: .rollBackRound),
    ]

    @Test("what becomes of a task once its end is recorded", arguments: verdicts)
    func verdict(_ c: VerdictCase) {
        #expect(
            BatchRound.verdict(current: c.current, wrote: c.wrote, succeeded: c.succeeded, roundSize: c.roundSize)
                == c.verdict)
    }

    @Test("a failed round: a lost connection reconnects; otherwise one task per transaction, then the lone task fails")
    func failures() {
        var round = BatchRound()
        #expect(round.offer(7) == 7)
        #expect(round.afterFailure(offered: 7, supersededWrites: false, connectionLost: true) == .reconnect)
        #expect(round.mode == .together)
        #expect(round.afterFailure(offered: 7, supersededWrites: false, connectionLost: false) == .goAlone)
        #expect(round.mode == .alone)
        #expect(round.offer(6) == 1)
        #expect(round.offer(0) == 0)
        #expect(round.afterFailure(offered: 1, supersededWrites: false, connectionLost: false) == .failTask)
        var lone = BatchRound()
        #expect(lone.afterFailure(offered: 1, supersededWrites: false, connectionLost: false) == .failTask)
        #expect(lone.mode == .together)
        var rolled = BatchRound()
        #expect(rolled.afterFailure(offered: 3, supersededWrites: true, connectionLost: false) == .goAlone)
        #expect(rolled.offer(3) == 1)
    }

    @Test("a slow task makes the slot take one message at a time until tasks are quick again")
    func prefetch() {
        #expect(!BatchRound.isSlow(taskSeconds: BatchRound.window))
        #expect(BatchRound.isSlow(taskSeconds: BatchRound.window + 0.01))
        #expect(BatchRound.prefetch(after: true, configured: 64) == 1)
        #expect(BatchRound.prefetch(after: false, configured: 64) == 64)
    }

    /// Drives the rules as `WorkerService.handle` does, on virtual time: each task is (seconds it
    /// runs, whether it has a timeout). Returns the transactions' task indexes.
    static func rounds(_ tasks: [(seconds: Double, timeout: Bool)]) -> [[Int]] {
        var rest = Array(tasks.indices)
        var out: [[Int]] = []
        let round = BatchRound()
        while !rest.isEmpty {
            let offered = Array(rest.prefix(round.offer(rest.count)))
            var elapsed = 0.0
            var ran: [Int] = []
            for i in offered {
                guard BatchRound.runsNext(ranSoFar: ran.count, elapsed: elapsed, nextHasTimeout: tasks[i].timeout)
                else { break }
                ran.append(i)
                elapsed += tasks[i].seconds
            }
            out.append(ran)
            rest.removeFirst(ran.count)
        }
        return out
    }

    @Test("rounds: quick tasks share one; the window and each timed task start a new one")
    func roundsOnVirtualTime() {
        let q = (seconds: 0.001, timeout: false)
        let slow = (seconds: 0.2, timeout: false)
        let timed = (seconds: 0.001, timeout: true)
        #expect(Self.rounds(Array(repeating: q, count: 20)) == [Array(0..<20)])
        #expect(Self.rounds([q, q, timed, q, timed, timed]) == [[0, 1], [2, 3], [4], [5]])
        #expect(Self.rounds([q, slow, q, q]) == [[0, 1], [2, 3]])
        #expect(Self.rounds([slow, slow, slow]) == [[0], [1], [2]])
        // 60 tasks of 1 ms: the window closes after the 51st (50 ms elapsed after 50, still within).
        let sixty = Self.rounds(Array(repeating: q, count: 60))
        #expect(sixty.count == 2 && sixty.flatMap { $0 } == Array(0..<60))
        #expect(sixty[0].count >= 50 && sixty[0].count <= 52)
    }
}

import ETLSupport
import Foundation
import Orchestration
import Testing
import Workflow

/// The scheduler's run decisions, without servers: hand-picked cases on a diamond, and random
/// DAGs and states checked against a naive restatement of the rules written here.
@Suite("Run advance decisions (no servers)")
struct RunAdvanceTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    /// a → b, a → c, b + c → d
    static func diamond(timeout: Double = 0, retries: Int = 0) throws -> DAG {
        let backoff = Backoff(base: 10, cap: 300, jitter: 0.5)
        func t(_ id: String, _ up: [String]) -> TaskSpec {
            TaskSpec(id, operation: "op", upstream: up, retries: retries, retryBackoff: backoff, timeout: timeout)
        }
        return try DAG(
            "diamond", schedule: .manual, startDate: now,
            tasks: [t("a", []), t("b", ["a"]), t("c", ["a"]), t("d", ["b", "c"])])
    }

    static func tasks(_ states: [String: TaskState]) -> [String: RunAdvance.Task] {
        states.mapValues { RunAdvance.Task(state: $0) }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let states: [String: TaskState]
        let runState: RunState
        let blocked: [String]
        let ready: [String]
        let outcome: RunAdvance.RunOutcome
        var testDescription: String { states.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined() }
    }

    static let cases: [Case] = [
        // A new run: only the root is ready; the run stays queued until something leaves scheduled.
        Case(
            states: ["a": .scheduled, "b": .scheduled, "c": .scheduled, "d": .scheduled], runState: .queued,
            blocked: [], ready: ["a"], outcome: .unchanged),
        Case(
            states: ["a": .queued, "b": .scheduled, "c": .scheduled, "d": .scheduled], runState: .queued,
            blocked: [], ready: [], outcome: .markRunning),
        Case(
            states: ["a": .success, "b": .scheduled, "c": .scheduled, "d": .scheduled], runState: .running,
            blocked: [], ready: ["b", "c"], outcome: .unchanged),
        // d waits for both branches.
        Case(
            states: ["a": .success, "b": .success, "c": .running, "d": .scheduled], runState: .running,
            blocked: [], ready: [], outcome: .unchanged),
        Case(
            states: ["a": .success, "b": .success, "c": .success, "d": .scheduled], runState: .running,
            blocked: [], ready: ["d"], outcome: .unchanged),
        // A failed branch blocks d; the run ends failed once the other branch has finished.
        Case(
            states: ["a": .success, "b": .failed, "c": .running, "d": .scheduled], runState: .running,
            blocked: ["d"], ready: [], outcome: .unchanged),
        Case(
            states: ["a": .success, "b": .failed, "c": .success, "d": .scheduled], runState: .running,
            blocked: ["d"], ready: [], outcome: .finish(succeeded: false)),
        // A failed root blocks everything, transitively, in one pass.
        Case(
            states: ["a": .failed, "b": .scheduled, "c": .scheduled, "d": .scheduled], runState: .running,
            blocked: ["b", "c", "d"], ready: [], outcome: .finish(succeeded: false)),
        // A retry pending upstream blocks nothing and readies nothing.
        Case(
            states: ["a": .upForRetry, "b": .scheduled, "c": .scheduled, "d": .scheduled], runState: .running,
            blocked: [], ready: ["a"], outcome: .unchanged),
        Case(
            states: ["a": .success, "b": .success, "c": .success, "d": .success], runState: .running,
            blocked: [], ready: [], outcome: .finish(succeeded: true)),
        // Upstream-failed tasks count as finished: the run ends failed.
        Case(
            states: ["a": .success, "b": .success, "c": .upstreamFailed, "d": .upstreamFailed], runState: .failed,
            blocked: [], ready: [], outcome: .finish(succeeded: false)),
    ]

    @Test("a full pass on a diamond", arguments: cases)
    func diamondPass(_ c: Case) throws {
        let plan = RunAdvance(dag: try Self.diamond()).plan(Self.tasks(c.states), runState: c.runState, now: Self.now)
        #expect(plan.blocked == c.blocked)
        #expect(plan.ready == c.ready)
        #expect(plan.outcome == c.outcome)
    }

    @Test("a retry is ready only when due, and only with its upstream succeeded")
    func retries() throws {
        let rules = RunAdvance(dag: try Self.diamond(retries: 2))
        var t = Self.tasks(["a": .success, "b": .upForRetry, "c": .running, "d": .scheduled])
        t["b"]?.nextTryAt = Self.now.addingTimeInterval(5)
        #expect(rules.plan(t, runState: .running, now: Self.now).ready == [])
        #expect(rules.plan(t, runState: .running, now: Self.now.addingTimeInterval(5)).ready == ["b"])
        t["b"]?.nextTryAt = nil  // no time recorded: due at once
        #expect(rules.plan(t, runState: .running, now: Self.now).ready == ["b"])
        t["a"] = .init(state: .running)  // cleared upstream: the retry waits
        #expect(rules.plan(t, runState: .running, now: Self.now).ready == [])
    }

    @Test("timeouts: only running attempts past their timeout, ending by the retry rule")
    func timeouts() throws {
        let rules = RunAdvance(dag: try Self.diamond(timeout: 60, retries: 1))
        var t = Self.tasks(["a": .success, "b": .running, "c": .running, "d": .scheduled])
        t["b"]?.startedAt = Self.now.addingTimeInterval(-60)  // exactly at the limit: not yet
        t["c"]?.startedAt = Self.now.addingTimeInterval(-61)
        t["c"]?.tryNumber = 1
        var out = rules.timeouts(t, now: Self.now, random: { 0 })
        #expect(out.map(\.task) == ["c"])
        #expect(out.first?.end == .init(state: .upForRetry, retryAt: Self.now.addingTimeInterval(10)))
        t["c"]?.tryNumber = 2  // the last try
        out = rules.timeouts(t, now: Self.now, random: { 0 })
        #expect(out.first?.end == .init(state: .failed, retryAt: nil))
        // Two attempts timed out in one pass draw their jitter each: they do not retry at one moment.
        var both = t
        both["b"]?.startedAt = Self.now.addingTimeInterval(-61)
        both["c"]?.tryNumber = 1
        var draws = [0.0, 1.0].makeIterator()
        let pair = rules.timeouts(both, now: Self.now, random: { draws.next()! })
        #expect(pair.map(\.task) == ["b", "c"])
        #expect(pair.map { $0.end.retryAt } == [Self.now.addingTimeInterval(10), Self.now.addingTimeInterval(5)])
        t["c"]?.startedAt = nil  // waiting in a batch: no start time, never timed out
        #expect(rules.timeouts(t, now: Self.now).isEmpty)
        let untimed = RunAdvance(dag: try Self.diamond())
        t["c"]?.startedAt = Self.now.addingTimeInterval(-86_400)
        #expect(untimed.timeouts(t, now: Self.now).isEmpty)
    }

    @Test("when the tick reads a whole run")
    func fullPass() throws {
        let rules = RunAdvance(dag: try Self.diamond(timeout: 60))
        func needs(_ event: Double?, _ pass: Double?, due: Int = 0, started: Date? = nil) -> Bool {
            rules.needsFullPass(
                sinceEvent: event, sinceFullPass: pass, retriesDue: due, running: [("b", started)], now: Self.now)
        }
        #expect(needs(nil, 1))  // no event ever
        #expect(needs(0.5, nil))  // never read whole
        #expect(!needs(0.5, 1))
        #expect(needs(2.5, 1))  // events stopped
        #expect(needs(0.5, 10.5))  // every 10 s anyway
        #expect(needs(0.5, 1, due: 1))
        #expect(needs(0.5, 1, started: Self.now.addingTimeInterval(-61)))
        #expect(!needs(0.5, 1, started: Self.now.addingTimeInterval(-59)))
        #expect(rules.hasTimeoutsOrRetries)
        #expect(!RunAdvance(dag: try Self.diamond()).hasTimeoutsOrRetries)
    }

    @Test("upstream DAGs: a run waits for each one's successful run of its date, and fails with a failed one")
    func upstreamWaits() throws {
        let dag = try DAG(
            "report", schedule: .manual, startDate: Self.now, upstreamDAGs: ["b2b", "weblog", "ip2geo"],
            tasks: [TaskSpec("r", operation: "op")])
        let rules = RunAdvance(dag: dag)
        #expect(rules.upstream([:]) == .wait(["b2b", "weblog", "ip2geo"]))
        #expect(rules.upstream(["weblog": .success, "other": .failed, "b2b": .running]) == .wait(["b2b", "ip2geo"]))
        #expect(rules.upstream(["b2b": .success, "weblog": .success, "ip2geo": .success]) == .go)
        // A failed upstream run ends the wait at once, even while another is still running.
        #expect(rules.upstream(["b2b": .failed, "weblog": .running, "ip2geo": .failed]) == .failed(["b2b", "ip2geo"]))
        #expect(rules.upstream(["b2b": .queued, "weblog": .success, "ip2geo": .success]) == .wait(["b2b"]))
        #expect(RunAdvance(dag: try Self.diamond()).upstream([:]) == .go)
    }

    // MARK: Random DAGs against a naive restatement

    /// A random DAG of up to 9 tasks: each task depends on a random subset of the earlier ones.
    static func randomDAG(_ rng: inout SplitMix) throws -> DAG {
        let n = Int(rng.next() % 9) + 1
        var specs: [TaskSpec] = []
        for i in 0..<n {
            let up = (0..<i).filter { _ in rng.next() % 3 == 0 }.map { "t\($0)" }
            specs.append(TaskSpec("t\(i)", operation: "op", upstream: up))
        }
        return try DAG("random", schedule: .manual, startDate: now, tasks: specs)
    }

    /// Blocked, by recursion over upstream tasks (the code under test walks a topological order).
    static func naiveBlocked(_ id: String, _ dag: DAG, _ s: [String: TaskState]) -> Bool {
        guard s[id] == .scheduled || s[id] == .upstreamFailed else { return false }
        return dag.task(id)!.upstream.contains { u in
            s[u] == .failed || s[u] == .cancelled || s[u] == .upstreamFailed || naiveBlocked(u, dag, s)
        }
    }

    @Test("2,000 random runs: blocked, ready and the run's outcome match the naive rules")
    func randomRuns() throws {
        var rng = SplitMix(seed: 20_261_201)
        let all = TaskState.allCases
        for _ in 0..<2000 {
            let dag = try Self.randomDAG(&rng)
            var t: [String: RunAdvance.Task] = [:]
            for spec in dag.tasks {
                let due = rng.next() % 2 == 0
                t[spec.id] = .init(
                    state: all[Int(rng.next() % UInt64(all.count))],
                    nextTryAt: Self.now.addingTimeInterval(due ? -1 : 1))
            }
            let runState: RunState = rng.next() % 2 == 0 ? .queued : .running
            let plan = RunAdvance(dag: dag).plan(t, runState: runState, now: Self.now)
            let states = t.mapValues(\.state)

            let blocked = dag.tasks.map(\.id).filter { states[$0] == .scheduled && Self.naiveBlocked($0, dag, states) }
            #expect(plan.blocked == blocked)
            var after = states
            for b in blocked { after[b] = .upstreamFailed }
            let upOK = { (id: String) in dag.task(id)!.upstream.allSatisfy { after[$0] == .success } }
            let fresh = dag.tasks.map(\.id).filter { after[$0] == .scheduled && upOK($0) }
            let retry = dag.tasks.map(\.id).filter {
                after[$0] == .upForRetry && t[$0]!.nextTryAt! <= Self.now && upOK($0)
            }
            #expect(plan.ready == fresh + retry)
            // Nothing ready is blocked, and nothing is enqueued twice.
            #expect(Set(plan.ready).isDisjoint(with: blocked))
            #expect(Set(plan.ready).count == plan.ready.count)

            let finished: Set<TaskState> = [.success, .failed, .upstreamFailed, .cancelled]
            if after.values.allSatisfy(finished.contains) {
                #expect(plan.outcome == .finish(succeeded: after.values.allSatisfy { $0 == .success }))
            } else if runState == .queued && after.values.contains(where: { $0 != .scheduled }) {
                #expect(plan.outcome == .markRunning)
            } else {
                #expect(plan.outcome == .unchanged)
            }
            #expect(plan.finished == Set(after.filter { finished.contains($0.value) }.keys))
        }
    }

    @Test("2,000 random runs: the success path readies exactly what a full pass readies among the downstream")
    func successPathAgreesWithFullPass() throws {
        var rng = SplitMix(seed: 7)
        for _ in 0..<2000 {
            let dag = try Self.randomDAG(&rng)
            // Tasks ran in order; a random prefix succeeded, the rest are scheduled or running.
            let done = Int(rng.next() % UInt64(dag.tasks.count + 1))
            var states: [String: TaskState] = [:]
            for (i, spec) in dag.tasks.enumerated() {
                states[spec.id] = i < done ? .success : (rng.next() % 4 == 0 ? .running : .scheduled)
            }
            let finished = dag.tasks.prefix(done).map(\.id).filter { _ in rng.next() % 2 == 0 }
            let rules = RunAdvance(dag: dag)
            let needed = rules.tasksToRead(afterSuccessOf: finished)
            let fast = rules.readyAfterSuccess(of: finished, states: states.filter { needed.contains($0.key) })
            let downstream = Set(finished.flatMap { dag.directDownstream(of: $0) })
            let full = rules.plan(states.mapValues { .init(state: $0) }, runState: .running, now: Self.now).ready
            #expect(fast == full.filter(downstream.contains).sorted())
        }
    }
}

/// A small deterministic generator, so a failing case can be replayed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

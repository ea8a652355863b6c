import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import TestSupport
import Testing
import Workflow

/// Max active runs and upstream failures, with real scheduler and worker processes.
@Suite("Run control", .timeLimit(.minutes(10)))
struct RunControlTests {
    static func day(_ n: Int) -> Date { Date(timeIntervalSince1970: 1_717_200_000 + Double(n) * 86_400) }

    @Test("max active runs 1: runs made at once run one after another, oldest date first, on two workers")
    func oneAtATime() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        try c.startWorker(["--concurrency", "2"])
        // Made newest first, as a manual run for today and then a backfill would.
        let runs = try [3, 1, 2].map { try c.trigger("example_one_at_a_time", date: Self.day($0)) }
        try c.waitFor("three runs finished", timeout: 60) {
            try runs.allSatisfy { try c.store.run($0)?.state.isFinished ?? false }
        }
        var spans: [(date: Date, start: Date, end: Date)] = []
        for run in runs {
            #expect(try c.store.run(run)?.state == .success)
            let tasks = try c.store.taskRows(run: run)
            let start = try #require(tasks.compactMap(\.startedAt).min())
            let end = try #require(tasks.compactMap(\.endedAt).max())
            spans.append((try #require(try c.store.run(run)?.logicalDate), start, end))
        }
        spans.sort { $0.start < $1.start }
        #expect(spans.map(\.date) == [Self.day(1), Self.day(2), Self.day(3)], "not in date order: \(spans)")
        for (a, b) in zip(spans, spans.dropFirst()) {
            #expect(a.end <= b.start, "two runs of the DAG overlapped: \(a) and \(b)")
        }
        // Without the limit the same DAG's runs do overlap on these workers: the example_upstream runs
        // of two dates start together (the rule, not the workers, kept them apart above).
        let free = try [1, 2].map { try c.trigger("example_upstream", date: Self.day($0)) }
        try c.waitFor("two unlimited runs finished", timeout: 60) {
            try free.allSatisfy { try c.store.run($0)?.state.isFinished ?? false }
        }
        let windows = try free.map { run -> (Date, Date) in
            let t = try c.store.taskRows(run: run)
            return (try #require(t.compactMap(\.startedAt).min()), try #require(t.compactMap(\.endedAt).max()))
        }
        #expect(
            windows[0].0 < windows[1].1 && windows[1].0 < windows[0].1, "unlimited runs did not overlap: \(windows)")
    }

    @Test("a run waiting for an upstream DAG ends upstream-failed at once when that DAG's run for its date fails")
    func upstreamFailureEndsTheWait() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let date = Self.day(5)
        let down = try c.trigger("example_downstream", date: date)
        // It waits (no run upstream yet) without holding anything.
        Thread.sleep(forTimeInterval: 1.5)
        #expect(try c.store.run(down)?.state == .queued)
        #expect(try c.store.taskRows(run: down).map(\.state) == ["scheduled"])
        let up = try c.trigger("example_upstream", date: date)
        let ops = OperatorActions(registry: c.registry, store: { c.store }, queue: { c.queue }, actor: "test")
        #expect(try ops.markFailed(dag: "example_upstream", run: up))
        try c.waitFor("the downstream run ended", timeout: 15) { try c.store.run(down)?.state.isFinished ?? false }
        #expect(try c.store.run(down)?.state == .failed)
        #expect(try c.store.taskRows(run: down).map(\.state) == ["upstream_failed"])
    }
}

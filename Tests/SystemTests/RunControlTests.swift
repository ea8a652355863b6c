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
        // Made newest first, as a manual run for today and then a backfill would, before the scheduler
        // looks (else it may start the first one before the others exist, which the rule allows).
        let runs = try [3, 1, 2].map { try c.trigger("example_one_at_a_time", date: Self.day($0)) }
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        try c.startWorker(["--concurrency", "2"])
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

    @Test("a pool of one slot: four tasks that could run side by side run one at a time, on two workers")
    func poolOfOne() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        try c.startWorker(["--concurrency", "2"])
        // Two runs: the slot is shared across runs, not per run.
        let runs = try [1, 2].map { try c.trigger("example_pooled", date: Self.day($0)) }
        try c.waitFor("the pooled runs finished", timeout: 60) {
            try runs.allSatisfy { try c.store.run($0)?.state.isFinished ?? false }
        }
        var spans: [(start: Date, end: Date)] = []
        for run in runs {
            #expect(try c.store.run(run)?.state == .success)
            for t in try c.store.taskRows(run: run) {
                spans.append((try #require(t.startedAt), try #require(t.endedAt)))
            }
        }
        #expect(spans.count == 8)
        spans.sort { $0.start < $1.start }
        for (a, b) in zip(spans, spans.dropFirst()) { #expect(a.end <= b.start, "two pooled tasks overlapped") }
    }

    @Test("a waiting report-like run (its upstream run never comes) does not hold up the DAG's other dates")
    func waitingRunHoldsNoSlot() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        let stuck = try c.trigger("example_report", date: Self.day(1))  // no example_upstream run for day 1, ever
        let later = try c.trigger("example_report", date: Self.day(2))
        _ = try c.trigger("example_upstream", date: Self.day(2))
        try c.waitFor("the later date's run finished", timeout: 30) {
            try c.store.run(later)?.state.isFinished ?? false
        }
        #expect(try c.store.run(later)?.state == .success)
        #expect(try c.store.run(stuck)?.state == .queued)
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

    @Test("a report-like run whose upstream run fails ends at once, also while its DAG's one slot is taken")
    func upstreamFailureWhileTheSlotIsTaken() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        _ = try c.trigger("example_upstream", date: Self.day(1))
        let holder = try c.trigger("example_slow_report", date: Self.day(1))
        try c.waitFor("the first date's report task running", timeout: 20) {
            try c.store.taskRows(run: holder).first?.state == "running"
        }
        // The next date's report run waits for the slot; its upstream run is marked failed by an
        // operator (which ends it outside the scheduler's own finish).
        let waiting = try c.trigger("example_slow_report", date: Self.day(2))
        let up = try c.trigger("example_upstream", date: Self.day(2))
        let ops = OperatorActions(registry: c.registry, store: { c.store }, queue: { c.queue }, actor: "test")
        #expect(try ops.markFailed(dag: "example_upstream", run: up))
        try c.waitFor("the waiting run ended", timeout: 20) { try c.store.run(waiting)?.state.isFinished ?? false }
        // It ended while the first date's run still held the slot (its task sleeps 8 s), not after.
        #expect(try c.store.run(holder)?.state == .running)
        #expect(try c.store.run(up)?.state == .failed)
        #expect(try c.store.run(waiting)?.state == .failed)
        #expect(try c.store.taskRows(run: waiting).map(\.state) == ["upstream_failed"])
        try c.waitFor("the first date's run finished", timeout: 30) {
            try c.store.run(holder)?.state.isFinished ?? false
        }
        #expect(try c.store.run(holder)?.state == .success)
    }
}

/// `etlctl dags backfill` with real processes.
@Suite("Backfill", .timeLimit(.minutes(10)))
struct BackfillTests {
    static let etlctl = Cluster.binDir.appendingPathComponent("etlctl").path

    @Test("a downstream DAG's backfill brings its upstream runs, oldest first; again it keeps them; --rerun all reruns")
    func backfillRange() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        let range = ["example_downstream", "--from", "2024-06-01", "--to", "2024-06-03"]
        let dry = try TestServices.run(Self.etlctl, ["dags", "backfill"] + range + ["--dry-run"], environment: c.env)
        #expect(dry.status == 0, "\(dry.stderr)")
        let planned = dry.stdout.split(separator: "\n").dropFirst().map {
            $0.split(separator: " ").prefix(3).joined(separator: " ")
        }
        #expect(
            planned == [
                "2024-06-01 example_upstream create", "2024-06-01 example_downstream create",
                "2024-06-02 example_upstream create", "2024-06-02 example_downstream create",
                "2024-06-03 example_upstream create", "2024-06-03 example_downstream create",
            ], "\(dry.stdout)")
        // (The cluster's hourly example DAG makes runs of its own: only these two DAGs count.)
        let mine = {
            try c.store.runRows(dag: "example_upstream", limit: 100)
                + c.store.runRows(dag: "example_downstream", limit: 100)
        }
        #expect(try mine().isEmpty, "a dry run made runs")

        let out = try TestServices.run(Self.etlctl, ["dags", "backfill"] + range, environment: c.env, timeout: 120)
        #expect(out.status == 0, "\(out.stdout)\n\(out.stderr)")
        #expect(
            out.stdout.contains("6 run(s) made, 0 to run again, 0 kept") && out.stdout.contains("all 6 runs succeeded"))
        let runs = try mine()
        #expect(runs.count == 6 && runs.allSatisfy { $0.state == .success && $0.type == .backfill })
        // Every downstream run started after its own date's upstream run ended.
        for date in Set(runs.map(\.logicalDate)) {
            let up = try #require(runs.first { $0.dag == "example_upstream" && $0.logicalDate == date })
            let down = try #require(runs.first { $0.dag == "example_downstream" && $0.logicalDate == date })
            let upEnd = try #require(try c.store.taskRows(run: up.id).compactMap(\.endedAt).max())
            let downStart = try #require(try c.store.taskRows(run: down.id).compactMap(\.startedAt).min())
            #expect(upEnd <= downStart)
        }
        let again = try TestServices.run(Self.etlctl, ["dags", "backfill"] + range, environment: c.env, timeout: 60)
        #expect(again.status == 0 && again.stdout.contains("0 run(s) made, 0 to run again, 6 kept"), "\(again.stdout)")
        let ids = runs.map(\.id)
        let effects = {
            try c.store.pg.query(
                "SELECT count(*) FROM \(c.schema).example_effect WHERE run_id = ANY($1::bigint[])", [PostgresArray(ids)]
            ).rows[0].decode(Int.self, 0)
        }
        let before = try effects()
        let all = try TestServices.run(
            Self.etlctl, ["dags", "backfill"] + range + ["--rerun", "all"], environment: c.env, timeout: 120)
        #expect(all.status == 0 && all.stdout.contains("0 run(s) made, 6 to run again, 0 kept"), "\(all.stdout)")
        // Each of the 6 runs' recording tasks ran once more (announce upstream, consume downstream).
        #expect(try effects() == before + 6)
        #expect(try mine().allSatisfy { $0.state == .success })
    }

    @Test("a backfill whose runs fail exits 1; a reversed range is refused with the fix")
    func failures() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let out = try TestServices.run(
            Self.etlctl, ["dags", "backfill", "example_retry_out", "--from", "2024-06-01", "--to", "2024-06-01"],
            environment: c.env, timeout: 120)
        #expect(out.status == 1 && out.stderr.contains("1 of 1 runs failed"), "\(out.stdout)\n\(out.stderr)")
        let bad = try TestServices.run(
            Self.etlctl, ["dags", "backfill", "example_diamond", "--from", "2024-06-05", "--to", "2024-06-01"],
            environment: c.env)
        #expect(bad.status == 1 && bad.stderr.contains("Fix: give --from a date not after --to"), "\(bad.stderr)")
    }
}

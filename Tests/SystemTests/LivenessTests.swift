import Broker
import ETLSupport
import Foundation
import Metadata
import PostgresClient
import TestSupport
import Testing
import Workflow

@testable import Tasks

/// Faults that are not a clean SIGKILL: a worker frozen (SIGSTOP) while it holds a task, then
/// continued. The attempt lease (MetadataStore+attempts) must hand the task to another worker,
/// end the frozen worker's backends, and refuse what the frozen worker writes once continued.
@Suite("Liveness: frozen workers", .serialized, .timeLimit(.minutes(10)))
struct LivenessTests {
    func executions(_ c: Cluster, run: Int64) throws -> [(phase: String, osPID: Int, backend: Int)] {
        try c.store.pg.query(
            "SELECT phase, os_pid, backend_pid FROM \(c.schema).example_execution WHERE run_id = $1 ORDER BY at",
            [run]
        ).rows.map { (try $0.decode(String.self, 0), try $0.decode(Int.self, 1), try $0.decode(Int.self, 2)) }
    }

    @Test(
        """
        a worker frozen for 20 s mid-task, then continued: another worker takes the task over within 30 s, the \
        frozen worker's backend is ended, and it writes nothing more once continued
        """
    )
    func frozenWorker() throws {
        let c = try Cluster(lab: try NetworkLab())
        defer { c.stopAll() }
        try c.startScheduler()
        let frozen = try c.startWorker(["--concurrency", "1"])
        let run = try c.trigger("example_counted")
        try c.waitFor("the task started on the first worker", timeout: 30) {
            try executions(c, run: run).count == 1
        }
        let first = try #require(try executions(c, run: run).first)
        #expect(first.osPID == Int(frozen.processIdentifier))
        let rescuer = try c.startWorker(["--concurrency", "1"])
        kill(frozen.processIdentifier, SIGSTOP)
        let frozenAt = monotonicSeconds()
        var continued = false
        defer { if !continued { kill(frozen.processIdentifier, SIGCONT) } }

        // Taken over within 30 s: a second execution starts, on the other worker.
        try c.waitFor("another worker took the task over", timeout: 30) {
            try executions(c, run: run).contains { $0.phase == "start" && $0.osPID != first.osPID }
        }
        let takeover = monotonicSeconds() - frozenAt
        #expect(takeover < 30, "taken over after \(takeover) s")
        print("liveness: a frozen worker's task was taken over \(Int(takeover * 10) / 10) s after the freeze")
        // The frozen worker's backend was ended by the take-over (a frozen process never lets go).
        let alive = try c.store.pg.query(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", [first.backend]
        ).rows[0].decode(Int.self, 0)
        #expect(alive == 0, "the frozen worker's backend \(first.backend) still exists")
        #expect(try c.wait(run: run, timeout: 60) == .success, "\(c.logs())")

        // Continued after 20 s: it must write nothing more (its connection was ended and cannot
        // register again under the lease it lost).
        sleepSeconds(max(0, 20 - (monotonicSeconds() - frozenAt)))
        kill(frozen.processIdentifier, SIGCONT)
        continued = true
        sleepSeconds(4)
        let all = try executions(c, run: run)
        #expect(all.filter { $0.phase == "start" }.count == 2, "\(all)")
        #expect(all.filter { $0.phase == "end" }.map(\.osPID) == [Int(rescuer.processIdentifier)], "\(all)")
        #expect(try c.effects(run: run).count == 1)
        let ti = try c.store.pg.query(
            "SELECT state, lease_epoch, lease_deliveries FROM \(c.schema).task_instance WHERE run_id = $1", [run]
        ).rows[0]
        #expect(try ti.decode(String.self, 0) == "success")
        #expect(try ti.decode(Int.self, 1) == 2 && ti.decode(Int.self, 2) == 2)
        #expect(frozen.isRunning, "the continued worker lives on")
        // The run stays as it ended: the late worker changed nothing.
        #expect(try c.store.run(run)?.state == .success)
    }

    @Test(
        """
        tasks fetched with a long one are handed back once it has run for the lease's time: an idle worker runs \
        them while the long one goes on, and each runs once
        """
    )
    func handBackBehindLongTask() throws {
        let c = try Cluster(extra: ["ETL_LEASE_TTL": "3", "ETL_EXAMPLE_FANOUT_SIZE": "5"])
        defer { c.stopAll() }
        try c.startScheduler()
        func queued(_ run: Int64) throws -> Bool {
            let tasks = try c.store.instances(run: run)
            return !tasks.isEmpty && tasks.values.allSatisfy { $0.state == .queued }
        }
        let long = try c.trigger("example_counted_long")
        try c.waitFor("the long task is queued", timeout: 20) { try queued(long) }
        let fanout = try c.trigger("example_fanout")
        try c.waitFor("the five quick tasks are queued behind it", timeout: 20) { try queued(fanout) }
        // One slot takes them in one fetch: the long one, then the quick ones behind it.
        try c.startWorker(["--concurrency", "1"], name: "holder")
        try c.waitFor("the long task started", timeout: 20) {
            try c.store.pg.query(
                "SELECT count(*) FROM \(c.schema).example_execution WHERE run_id = $1", [long]
            ).rows[0].decode(Int.self, 0) == 1
        }
        let started = monotonicSeconds()
        #expect(try c.store.instances(run: fanout).values.allSatisfy { $0.state == .running }, "not fetched together")
        try c.startWorker(["--concurrency", "1"], name: "idle")
        #expect(try c.wait(run: fanout, timeout: 30) == .success, "\(c.logs())")
        let took = monotonicSeconds() - started
        // Done while the long task still runs (it sleeps 15 s), on the idle worker.
        let longPhases = try c.store.pg.query(
            "SELECT phase FROM \(c.schema).example_execution WHERE run_id = $1", [long]
        ).rows.map { try $0.decode(String.self, 0) }
        #expect(longPhases == ["start"], "the quick tasks waited for the long one (\(took) s): \(longPhases)")
        let ranOn = try c.store.pg.query(
            "SELECT DISTINCT worker FROM \(c.schema).task_instance WHERE run_id = $1", [fanout]
        ).rows.map { try $0.decode(String.self, 0) }
        #expect(ranOn.allSatisfy { $0.hasPrefix("idle/") }, "\(ranOn)")
        print("liveness: tasks behind a 15 s task ran elsewhere \(Int(took * 10) / 10) s after it started")
        #expect(try c.wait(run: long, timeout: 30) == .success, "\(c.logs())")
        sleepSeconds(2)
        let attempts = try c.store.pg.query(
            "SELECT count(*) FROM \(c.schema).task_attempt WHERE run_id = $1", [fanout]
        ).rows[0].decode(Int.self, 0)
        #expect(attempts == 5)
        // The holder ran none of them: once free, it found each one done elsewhere and skipped it
        // (a second execution would show as a run of it in the holder's log instead).
        let holderFile = c.logDir.appendingPathComponent("worker-holder.log")
        let holderLog = (try? String(contentsOf: holderFile, encoding: .utf8)) ?? ""
        for i in 0..<5 {
            #expect(holderLog.contains("skipping example_fanout.n\(i) run \(fanout)"), "\(holderLog)")
        }
        #expect(try c.store.instances(run: fanout).values.allSatisfy { $0.state == .success })
        // (The hourly example DAG's task may be in the batch too.)
        #expect(c.logs(whole: true).contains("task(s) waiting behind a task running for over"), "\(c.logs())")
    }

    /// What befalls the first worker's host in the middle of a load, for 20 s.
    enum Fault: String {
        case freeze = "frozen"
        case cut = "cut off"

        func begin(_ c: Cluster, _ worker: Process, host: String) throws {
            switch self {
            case .freeze: kill(worker.processIdentifier, SIGSTOP)
            case .cut: try c.lab!.cut(host)
            }
        }

        func end(_ c: Cluster, _ worker: Process, host: String) throws {
            switch self {
            case .freeze: kill(worker.processIdentifier, SIGCONT)
            case .cut: try c.lab!.mend(host)
            }
        }
    }

    /// The b2b load with its first worker frozen or cut off for 20 s once a tenth of the days are
    /// in, a second worker on another host: the load goes on there within 30 s (the first one's
    /// advisory lock and open day transaction ended), and the tables equal a clean load's.
    func b2bLoad(under fault: Fault, name: String = #function) throws {
        let settings = ["ETL_HISTORY_START": "2023-06-01", "ETL_ORDERS": "150"]
        let lab = try NetworkLab(name: name)
        let fx = try PipelineFixture(name: name, extra: settings, lab: lab)
        let c = try Cluster.pipelines(fx, settings, name: name)
        defer { c.stopAll() }
        try c.startScheduler()
        let first = try c.startWorker(["--concurrency", "1"], host: "w0")
        let day = Day("2024-06-15")!
        let run = try c.trigger("b2b", date: Date(timeIntervalSince1970: 1_718_409_600))
        let s = fx.settings
        let days = day.daysSince1970 - s.historyStart.daysSince1970 + 1
        try c.waitFor("the load is under way", timeout: 120) {
            (try? fx.count("SELECT count(*) FROM \(s.loads).b2b_day")).map { $0 >= Int64(days / 10) } ?? false
        }
        try c.startWorker(["--concurrency", "1"], host: "w1")
        try fault.begin(c, first, host: "w0")
        let faultAt = monotonicSeconds()
        var ended = false
        defer { if !ended { try? fault.end(c, first, host: "w0") } }
        let loadedAtFault = try fx.count("SELECT count(*) FROM \(s.loads).b2b_day")
        #expect(loadedAtFault < Int64(days), "the load ended before the fault")
        // Going on elsewhere: days are loaded again while the first worker is still out.
        try c.waitFor("the load goes on on the other worker", timeout: 30) {
            try fx.count("SELECT count(*) FROM \(s.loads).b2b_day") > loadedAtFault + 1
        }
        let resumed = monotonicSeconds() - faultAt
        #expect(resumed < 30, "the load went on \(resumed) s after the fault")
        print(
            "liveness: the \(fault.rawValue) worker's b2b load went on elsewhere",
            "\(Int(resumed * 10) / 10) s after the fault")
        #expect(try c.wait(run: run, timeout: 240) == .success, "\(c.logs())")
        sleepSeconds(max(0, 20 - (monotonicSeconds() - faultAt)))
        try fault.end(c, first, host: "w0")
        ended = true
        sleepSeconds(4)

        #expect(try fx.count("SELECT count(*) FROM \(s.loads).b2b_day") == Int64(days))
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).load WHERE pipeline = 'b2b' AND state = 'running'") == 0)
        let got = try fx.b2bDigests()
        // The clean run: the same exports loaded from scratch, in this process, into schemas of its own.
        let clean = try PipelineFixture(name: name + "Clean", extra: settings)
        let pg = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { pg.close() }
        try PlatformHistory.export(upTo: day, ordersPerDay: 150, seed: clean.settings.seed, settings: clean.settings)
        _ = try B2BLoad.load(pg: pg, settings: clean.settings, runID: 1, upTo: day, log: { _ in })
        #expect(got == (try clean.b2bDigests()))
        #expect(got["orders"]?.hasPrefix("\(days * 150) ") == true, "\(got)")
        #expect(try c.store.run(run)?.state == .success, "the late worker changed the run")
    }

    @Test(
        """
        a worker frozen for 20 s in the middle of the b2b load, then continued: the load goes on on another host \
        within 30 s, and the tables equal a clean load
        """
    )
    func frozenDuringB2BLoad() throws { try b2bLoad(under: .freeze) }

    @Test(
        """
        a worker whose link is cut for 20 s in the middle of the b2b load, then joined again: the load goes on \
        on another host within 30 s, and the tables equal a clean load
        """
    )
    func cutOffDuringB2BLoad() throws { try b2bLoad(under: .cut) }

    @Test(
        """
        a worker frozen for 20 s in the middle of a weblog chunk, then continued: the load goes on elsewhere \
        within 30 s, and every line is stored once, as a clean parse counts them
        """
    )
    func frozenDuringWeblogChunk() throws {
        let lab = try NetworkLab()
        let fx = try PipelineFixture(lab: lab)
        let lines = 300_000
        let generated = try WeblogGenerator(
            options: .init(lines: lines, seed: 13, end: 1_718_496_000, badRate: 0.01),
            b2bDir: fx.settings.b2bDir, ip2geoCSV: "\(fx.settings.sourcesDir)/data/ip2geo.csv"
        )
        .write(to: fx.settings.weblogDir)
        let c = try Cluster.pipelines(
            fx,
            [
                "ETL_WEBLOG_LINES": "0", "ETL_WEBLOG_PARTS": "1", "ETL_WEBLOG_CHUNK_LINES": "20000",
                "ETL_WEBLOG_RANGE_MB": "64",
            ])
        defer { c.stopAll() }
        try c.startScheduler()
        let frozen = try c.startWorker(["--concurrency", "1"])
        let run = try c.trigger("weblog", date: Date(timeIntervalSince1970: 1_718_409_600))
        let s = fx.settings
        func committed() throws -> Int64 {
            try fx.count("SELECT coalesce(sum(rows_read), 0)::bigint FROM \(s.loads).weblog_range")
        }
        try c.waitFor("some chunks are committed", timeout: 120) { ((try? committed()) ?? 0) >= 20_000 }
        try c.startWorker(["--concurrency", "1"])
        kill(frozen.processIdentifier, SIGSTOP)
        let frozenAt = monotonicSeconds()
        var continued = false
        defer { if !continued { kill(frozen.processIdentifier, SIGCONT) } }
        let atFreeze = try committed()
        #expect(atFreeze < Int64(lines), "the load ended before the freeze")
        try c.waitFor("the load goes on on the other worker", timeout: 30) { try committed() > atFreeze }
        let resumed = monotonicSeconds() - frozenAt
        #expect(resumed < 30, "the load went on \(resumed) s after the freeze")
        print(
            "liveness: the frozen worker's weblog load went on elsewhere \(Int(resumed * 10) / 10) s after the freeze")
        #expect(try c.wait(run: run, timeout: 240) == .success, "\(c.logs())")
        sleepSeconds(max(0, 20 - (monotonicSeconds() - frozenAt)))
        kill(frozen.processIdentifier, SIGCONT)
        continued = true
        sleepSeconds(4)
        let good = Int64(generated.lines - generated.badLines)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == good)
        #expect(
            try fx.count("SELECT count(*) FROM (SELECT DISTINCT file_id, line_number FROM \(s.datalake).weblogs) d")
                == good)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).reject") == Int64(generated.badLines))
        #expect(try committed() == Int64(lines))
    }
}

/// A message that makes its worker exit every time, workers on clocks that differ, a frozen leading
/// scheduler, and Redis stopped for a while.
@Suite(
    "Liveness: poison messages, skewed clocks, a frozen leader, Redis stopped", .serialized, .timeLimit(.minutes(10)))
struct PoisonAndClockTests {
    @Test("a message that makes its worker exit every time ends as a dead letter after ETL_MAX_DELIVERIES")
    func poisonMessage() throws {
        let c = try Cluster(extra: ["ETL_MAX_DELIVERIES": "2", "ETL_LEASE_TTL": "3"], lab: try NetworkLab())
        defer { c.stopAll() }
        try c.startScheduler()
        let workers = try (0..<3).map { _ in try c.startWorker(["--concurrency", "1"]) }
        let run = try c.trigger("example_poison")
        #expect(try c.wait(run: run, timeout: 90) == .failed, "\(c.logs())")
        // Two deliveries each ended a worker; the third went to the dead letters instead.
        #expect(workers.filter { !$0.isRunning }.count == 2, "\(c.logs())")
        let dead = try c.queue.redis.command("XRANGE", c.queue.keys.dead, "-", "+").array ?? []
        #expect(dead.count == 1)
        let reason = dead.first?.array?.last?.array.flatMap { TaskQueue.field("reason", in: $0)?.string } ?? ""
        #expect(reason.contains("delivered 2 times"), "\(reason)")
        let ti = try c.store.pg.query(
            "SELECT state, error, lease_deliveries FROM \(c.schema).task_instance WHERE run_id = $1", [run]
        ).rows[0]
        #expect(try ti.decode(String.self, 0) == "failed")
        #expect(try ti.decode(String?.self, 1)?.contains("delivered 2 times") == true)
    }

    @Test(
        """
        workers whose clocks run 10 s ahead and a scheduler 10 s behind (libfaketime): no live task is taken \
        from its worker, retries and timeouts keep their times
        """
    )
    func skewedClocks() throws {
        let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
        try #require(
            FileManager.default.fileExists(atPath: lib),
            "\(lib) is missing: scripts/install-deps installs Debian's faketime package")
        let ahead = ["LD_PRELOAD": lib, "FAKETIME": "+10s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"]
        let behind = ["LD_PRELOAD": lib, "FAKETIME": "-10s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"]
        let c = try Cluster(extra: behind, lab: try NetworkLab())
        defer { c.stopAll() }
        try c.startScheduler()
        let runner = try c.startWorker(["--concurrency", "1"], extraEnv: ["LD_PRELOAD": "", "FAKETIME": ""])
        let run = try c.trigger("example_counted")
        try c.waitFor("the task started", timeout: 30) {
            try c.store.pg.query(
                "SELECT count(*) FROM \(c.schema).example_execution WHERE run_id = $1", [run]
            ).rows[0].decode(Int.self, 0) == 1
        }
        // A worker 10 s ahead beside it: by its own clock the first one's heartbeats are 10 s old.
        let skewed = try c.startWorker(["--concurrency", "1"], extraEnv: ahead)
        #expect(try c.wait(run: run, timeout: 60) == .success, "\(c.logs())")
        let executions = try c.store.pg.query(
            "SELECT os_pid FROM \(c.schema).example_execution WHERE run_id = $1 AND phase = 'start'", [run]
        ).rows.map { try $0.decode(Int.self, 0) }
        #expect(executions == [Int(runner.processIdentifier)], "executed by \(executions)")
        #expect(!c.logs(whole: true).contains("reclaimed"), "\(c.logs())")
        // A retry 0.2 s to 1 s after a failure, set on the skewed worker, is due on time for the
        // scheduler 10 s behind; a 1 s timeout fires after about 1 s, not 11 or never.
        kill(runner.processIdentifier, SIGTERM)
        _ = TestServices.waitForExit(runner)
        let started = monotonicSeconds()
        let retry = try c.trigger("example_retry")
        #expect(try c.wait(run: retry, timeout: 30) == .success, "\(c.logs())")
        #expect(monotonicSeconds() - started < 15, "the retries took \(monotonicSeconds() - started) s")
        let t0 = monotonicSeconds()
        let timeout = try c.trigger("example_timeout")
        #expect(try c.wait(run: timeout, timeout: 30) == .failed, "\(c.logs())")
        #expect(monotonicSeconds() - t0 < 8, "the 1 s timeout fired after \(monotonicSeconds() - t0) s")
        #expect(skewed.isRunning)
    }

    @Test(
        """
        the leading scheduler frozen past its lease, then continued while a run goes on: the standby leads, \
        the old leader stands by, and every task ran once
        """
    )
    func frozenLeader() throws {
        let c = try Cluster(extra: ["ETL_SCHEDULER_LEASE": "2"], lab: try NetworkLab())
        defer { c.stopAll() }
        let a = try c.startScheduler(name: "a")
        usleep(800_000)
        let b = try c.startScheduler(name: "b")
        try c.startWorker(["--concurrency", "2"])
        let long = try c.trigger("example_long", date: Date(timeIntervalSince1970: 1_717_200_000))
        try c.waitFor("the long task is running", timeout: 30) {
            try c.store.instances(run: long)["long"]?.state == .running
        }
        let leader = try c.store.pg.query("SELECT holder FROM \(c.schema).scheduler_lease").rows[0].decode(
            String.self, 0)
        let frozen = leader == "a" ? a : b
        kill(frozen.processIdentifier, SIGSTOP)
        sleepSeconds(4)
        // While the old leader is frozen: a run the standby must carry alone.
        let diamond = try c.trigger("example_diamond", date: Date(timeIntervalSince1970: 1_717_200_000))
        sleepSeconds(4)
        kill(frozen.processIdentifier, SIGCONT)
        for run in [long, diamond] { #expect(try c.wait(run: run, timeout: 60) == .success, "\(c.logs())") }
        sleepSeconds(3)
        for run in [long, diamond] {
            let effects = try c.effects(run: run)
            let tasks = try c.store.taskRows(run: run).map(\.task)
            #expect(effects.count == tasks.count, "\(effects.count) effects for \(tasks.count) tasks")
            #expect(Set(effects.map(\.task)).count == effects.count, "a task ran twice")
        }
        let now = try c.store.pg.query("SELECT holder, fencing_token FROM \(c.schema).scheduler_lease").rows[0]
        #expect(try now.decode(String.self, 0) != leader)
        #expect(try now.decode(Int.self, 1) >= 2)
        #expect(frozen.isRunning, "the continued scheduler lives on, standing by")
    }

    @Test(
        """
        Redis stopped for 8 s while a 15 s task runs (its worker's heartbeats stop): the task runs once, on its \
        own worker, and the queue carries on
        """
    )
    func redisStopped() throws {
        let lab = try NetworkLab()
        let c = try Cluster(lab: lab)
        defer { c.stopAll() }
        try c.startScheduler()
        let runner = try c.startWorker(["--concurrency", "1"])
        try c.startWorker(["--concurrency", "1"])
        let run = try c.trigger("example_counted_long")
        func executions() throws -> [(phase: String, pid: Int)] {
            try c.store.pg.query(
                "SELECT phase, os_pid FROM \(c.schema).example_execution WHERE run_id = $1 ORDER BY at", [run]
            ).rows.map { (try $0.decode(String.self, 0), try $0.decode(Int.self, 1)) }
        }
        try c.waitFor("the task started", timeout: 30) { try executions().count == 1 }
        let first = try #require(try executions().first)
        try lab.services("stop", "redis")
        sleepSeconds(8)
        try lab.services("start-one", "redis")
        // Back before the task ends: the others now see its worker as dead and reclaim its message.
        #expect(try executions().count == 1, "the task ended during the outage: the test proves nothing")
        #expect(try c.wait(run: run, timeout: 60) == .success, "\(c.logs())")
        sleepSeconds(2)
        let all = try executions()
        #expect(all.map(\.phase) == ["start", "end"], "\(all)")
        #expect(Set(all.map(\.pid)) == [first.pid], "\(all)")
        #expect(try c.effects(run: run).count == 1)
        // And the queue carries on (the test's own Redis connection broke with the restart: one
        // call notices, the next reconnects).
        _ = try? c.queue.redis.command("PING")
        let next = try c.trigger("example_diamond")
        #expect(try c.wait(run: next, timeout: 60) == .success, "\(c.logs())")
        #expect(runner.isRunning)
    }
}

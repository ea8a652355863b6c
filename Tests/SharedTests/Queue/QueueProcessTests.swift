import Foundation
import Shared
import Tasks
import Testing

/// The task queue end to end, with real scheduler and worker processes on the real servers.
@Suite("Scheduler and workers as processes", .serialized)
struct QueueProcessTests {
    @Test("a diamond with fan-out and fan-in runs every task once, each after its upstream")
    func diamond() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        try c.startWorker()
        let run = try c.trigger("example_diamond")
        #expect(try c.wait(run: run) == "success", "\(c.logs())")
        let effects = try c.effects(run: run)
        #expect(effects.map(\.task).sorted() == ["clean", "enrich", "extract", "join", "publish", "score"])
        let at = Dictionary(uniqueKeysWithValues: effects.map { ($0.task, $0.at) })
        let dag = c.registry.dag("example_diamond")!
        for t in dag.tasks { for u in t.upstream { #expect(at[u]! < at[t.id]!, "\(u) must finish before \(t.id)") } }
    }

    @Test("a DAG waiting on another starts only after the upstream DAG's run for the same date succeeded")
    func crossDAGWait() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        let down = try c.trigger("example_downstream")
        usleep(500_000)
        #expect(try c.store.run(down)?.state == "queued")  // waiting, holding no worker
        let up = try c.trigger("example_upstream")
        #expect(try c.wait(run: up) == "success")
        #expect(try c.wait(run: down) == "success")
        let upEnd = try c.store.pg.query("SELECT ended_at FROM \(c.schema).dag_run WHERE run_id = $1", [up]).rows[0].decode(Date.self, 0)
        let consumed = try c.effects(run: down).first!.at
        #expect(consumed >= upEnd)
    }

    @Test("a flaky task is retried with backoff and succeeds on its third try")
    func retryThenSuccess() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_retry")
        #expect(try c.wait(run: run) == "success")
        let flaky = try c.store.instances(run: run)["flaky"]!
        #expect(flaky.tryNumber == 3)
        let attempts = try c.store.pg.query("SELECT try_number, state FROM \(c.schema).task_attempt WHERE run_id = $1 AND task_id = 'flaky' ORDER BY try_number", [run]).rows
        #expect(try attempts.map { try $0.decode(String.self, 1) } == ["up_for_retry", "up_for_retry", "success"])
    }

    @Test("a task past its timeout fails, and what depends on it is upstream_failed")
    func timeout() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_timeout")
        #expect(try c.wait(run: run, timeout: 30) == "failed")
        let inst = try c.store.instances(run: run)
        #expect(inst["stuck"]?.state == .failed)
        #expect(inst["never"]?.state == .upstreamFailed)
        let error = try c.store.pg.query("SELECT error FROM \(c.schema).task_instance WHERE run_id = $1 AND task_id = 'stuck'", [run]).rows[0].decode(String.self, 0)
        #expect(error.contains("timed out"))
    }

    @Test("a worker killed with SIGKILL mid-task: the task finishes on another worker, in effect once")
    func workerKilledMidTask() throws {
        let c = try Cluster()
        try c.startScheduler()
        let first = try c.startWorker(name: "victim")
        let run = try c.trigger("example_slow")
        // Wait until the victim runs it, then kill it and start a healthy worker.
        let end = monotonicSeconds() + 20
        while monotonicSeconds() < end, try c.store.instances(run: run)["slow"]?.state != .running { usleep(50_000) }
        #expect(try c.store.instances(run: run)["slow"]?.state == .running)
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        let killedAt = monotonicSeconds()
        try c.startWorker(name: "rescuer")
        #expect(try c.wait(run: run) == "success", "\(c.logs())")
        let recovered = monotonicSeconds() - killedAt
        let effects = try c.effects(run: run)
        #expect(effects.count == 1)  // the killed attempt's write was never committed
        #expect(try c.store.pg.query("SELECT worker FROM \(c.schema).task_instance WHERE run_id = $1", [run]).rows[0]
            .decode(String.self, 0).hasPrefix("rescuer"))
        print("recovered \(String(format: "%.1f", recovered)) s after SIGKILL (3 s of it is the task itself)")
    }

    @Test("poison messages (unsigned, wrong key, garbage, unknown task) go to the dead letters; work goes on")
    func poisonMessages() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let other = try MessageCodec(secret: "some-other-secret-of-enough-length")
        let (body, sig) = try other.encode(TaskMessage(dag: "example_diamond", runID: 1, task: "extract", logicalDate: "2024-01-01", tryNumber: 1))
        try c.queue.enqueueRaw(queue: "default", fields: [("body", body)])
        try c.queue.enqueueRaw(queue: "default", fields: [("body", body), ("sig", Array(sig.utf8))])
        try c.queue.enqueueRaw(queue: "default", fields: [("body", [0xff, 0x00, 0x13]), ("sig", Array("00".utf8))])
        let ours = try MessageCodec(environment: Environment(c.env))
        try c.queue.enqueue(TaskMessage(dag: "no_such_dag", runID: 1, task: "x", logicalDate: "2024-01-01", tryNumber: 1), codec: ours)
        let run = try c.trigger("example_diamond")
        #expect(try c.wait(run: run) == "success")
        let end = monotonicSeconds() + 10
        var reasons: [String] = []
        while monotonicSeconds() < end {
            reasons = try c.queue.redis.command("XRANGE", c.queue.keys.dead, "-", "+").array?.compactMap {
                $0.array?.last?.array.flatMap { TaskQueue.field("reason", in: $0)?.string }
            } ?? []
            if reasons.count >= 4 { break }
            usleep(100_000)
        }
        #expect(reasons.count == 4)
        #expect(reasons.contains { $0.hasPrefix("unsigned message") })
        #expect(reasons.filter { $0.hasPrefix("bad signature") }.count == 2)
        #expect(reasons.contains { $0.hasPrefix("unknown task no_such_dag.x") })
        #expect(try c.queue.redis.command("XLEN", c.queue.keys.queue("default")) == .integer(0))
    }
}

import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import TestSupport
import Testing
import Workflow

/// The task queue end to end, with real scheduler and worker processes on the real servers.
@Suite("Scheduler and workers as processes", .serialized, .timeLimit(.minutes(10)))
struct QueueProcessTests {
    @Test("a diamond with fan-out and fan-in runs every task once, each after its upstream")
    func diamond() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        try c.startWorker()
        let run = try c.trigger("example_diamond")
        #expect(try c.wait(run: run) == .success, "\(c.logs())")
        let effects = try c.effects(run: run)
        #expect(effects.map(\.task).sorted() == ["clean", "enrich", "extract", "join", "publish", "score"])
        // Grouped, not keyed uniquely: a task that ran twice is a failed expectation, not a crash.
        let at = Dictionary(grouping: effects, by: \.task).mapValues { $0.map(\.at) }
        for (task, times) in at { #expect(times.count == 1, "\(task) ran \(times.count) times") }
        let dag = try #require(c.registry.dag("example_diamond"))
        for t in dag.tasks {
            for u in t.upstream {
                let (before, after) = (at[u]?.first, at[t.id]?.first)
                #expect(before != nil && after != nil && before! < after!, "\(u) must finish before \(t.id)")
            }
        }
    }

    @Test("a DAG waiting on another starts only after the upstream DAG's run for the same date succeeded")
    func crossDAGWait() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker(["--concurrency", "1"])  // one slot: a waiting run that held it would block the rest
        let down = try c.trigger("example_downstream")
        // Another run goes through meanwhile: the scheduler has looked at the waiting run (it acts
        // on every run at each event and tick), and the only slot was free for other work.
        let other = try c.trigger("example_diamond")
        #expect(try c.wait(run: other) == .success, "\(c.logs())")
        #expect(try c.store.run(down)?.state == .queued)
        #expect(
            try c.store.instances(run: down)["consume"]?.state == .scheduled,
            "the downstream task left scheduled before its upstream DAG ran")
        #expect(try c.effects(run: down).isEmpty)
        let up = try c.trigger("example_upstream")
        #expect(try c.wait(run: up) == .success)
        #expect(try c.wait(run: down) == .success)
        let upEnd = try c.store.pg.query("SELECT ended_at FROM \(c.schema).dag_run WHERE run_id = $1", [up]).rows[0]
            .decode(Date.self, 0)
        let consumed = try c.effects(run: down).first!.at
        #expect(consumed >= upEnd)
    }

    @Test("a flaky task is retried with backoff and succeeds on its third try")
    func retryThenSuccess() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_retry")
        #expect(try c.wait(run: run) == .success)
        #expect(try c.store.instances(run: run)["flaky"]?.tryNumber == 3)
        let attempts = try c.store.pg.query(
            """
            SELECT try_number, state FROM \(c.schema).task_attempt
            WHERE run_id = $1 AND task_id = 'flaky' ORDER BY try_number
            """, [run]
        ).rows
        #expect(try attempts.map { try $0.decode(String.self, 1) } == ["up_for_retry", "up_for_retry", "success"])
    }

    @Test(
        """
        a task that always fails is retried until its retries run out, each try after its backoff; then it fails and \
        its downstream is upstream_failed
        """
    )
    func retriesRunOut() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_retry_out")
        #expect(try c.wait(run: run, timeout: 60) == .failed, "\(c.logs())")
        let inst = try c.store.instances(run: run)
        #expect(inst["doomed"]?.state == .failed && inst["doomed"]?.tryNumber == 3)
        #expect(inst["after"]?.state == .upstreamFailed)
        let rows = try c.store.pg.query(
            """
            SELECT try_number, state, started_at, ended_at FROM \(c.schema).task_attempt
            WHERE run_id = $1 AND task_id = 'doomed' ORDER BY try_number
            """, [run]
        ).rows
        #expect(try rows.map { try $0.decode(String.self, 1) } == ["up_for_retry", "up_for_retry", "failed"])
        // Backoff(base: 1, cap: 4, jitter: 0): try 2 waits 1 s after try 1 ended, try 3 waits 2 s.
        // Never earlier (the retry time is set just before the attempt's end is written, so allow
        // for that moment on a loaded machine), and not much later either (the scheduler looks
        // every second).
        for (i, wanted) in [1.0, 2.0].enumerated() where rows.count == 3 {
            let ended = try rows[i].decode(Date.self, 3)
            let next = try rows[i + 1].decode(Date.self, 2)
            let gap = next.timeIntervalSince(ended)
            #expect(
                gap >= wanted - 0.5,
                "try \(i + 2) started \(gap) s after try \(i + 1) ended; its backoff is \(wanted) s")
            #expect(gap < wanted + 5, "try \(i + 2) waited \(gap) s for a backoff of \(wanted) s")
        }
        #expect(
            try c.store.pg.query(
                "SELECT count(*) FROM \(c.schema).task_attempt WHERE run_id = $1 AND task_id = 'after'", [run]
            )
            .rows[0].decode(Int.self, 0) == 0)
    }

    @Test("tasks of a paused DAG are not enqueued; unpaused, its run goes on")
    func pausedDAGNotEnqueued() throws {
        let c = try Cluster()
        try c.store.setPaused("example_diamond", true)
        try c.startScheduler()
        try c.startWorker()
        let paused = try c.trigger("example_diamond")
        // An unpaused DAG's run goes through meanwhile, so the scheduler has been working.
        let other = try c.trigger("example_upstream")
        #expect(try c.wait(run: other) == .success, "\(c.logs())")
        usleep(1_500_000)  // and at least one more tick
        let inst = try c.store.instances(run: paused)
        #expect(
            inst.values.allSatisfy { $0.state == .scheduled && $0.tryNumber == 0 },
            "\(inst.values.map { "\($0.task) \($0.state)" })")
        #expect(try c.effects(run: paused).isEmpty)
        try c.store.setPaused("example_diamond", false)
        #expect(try c.wait(run: paused) == .success, "\(c.logs())")
        #expect(try c.effects(run: paused).count == 6)
    }

    @Test("a task past its timeout fails, and what depends on it is upstream_failed")
    func timeout() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_timeout")
        #expect(try c.wait(run: run, timeout: 30) == .failed)
        let inst = try c.store.instances(run: run)
        #expect(inst["stuck"]?.state == .failed)
        #expect(inst["never"]?.state == .upstreamFailed)
        let row = try c.store.pg.query(
            "SELECT error, started_at, ended_at FROM \(c.schema).task_instance WHERE run_id = $1 AND task_id = 'stuck'",
            [run]
        ).rows[0]
        #expect(try row.decode(String.self, 0).contains("timed out"))
        // Timed out at its 1 s timeout: never before it, and soon after (the scheduler looks every second).
        let ran = try row.decode(Date.self, 2).timeIntervalSince(try row.decode(Date.self, 1))
        #expect(ran >= 1 && ran < 5, "the 1 s task was timed out after \(ran) s")
    }

    @Test("a worker started while Redis is down waits for it (it used to exit), then runs the DAG's tasks")
    func workerWaitsForRedisAtStart() throws {
        let redis = try PrivateRedisServer()
        let c = try Cluster(extra: [
            "REDIS_URL": "redis://127.0.0.1:\(redis.config.port)/0", "ETL_REDIS_PASSWORD": redis.password,
            "ETL_REDIS_RECONNECT_TIMEOUT": "30",
        ])
        defer { c.stopAll() }
        redis.stop()
        let worker = try c.startWorker()
        sleep(3)
        #expect(worker.isRunning, "the worker exited while Redis was down:\n\(c.logs())")
        try redis.start()
        // The test's own connection saw the server go: its first command says so, the next reconnects.
        _ = try? c.queue.ensureGroups(queues: ["default"])
        try c.queue.ensureGroups(queues: ["default"])
        try c.startScheduler()
        let run = try c.trigger("example_diamond")
        #expect(try c.wait(run: run) == .success, "\(c.logs())")
        #expect(try c.effects(run: run).count == 6)
    }

    @Test("a worker killed with SIGKILL mid-task: the task finishes on another worker, in effect once")
    func workerKilledMidTask() throws {
        let c = try Cluster()
        try c.startScheduler()
        let first = try c.startWorker(name: "victim")
        let run = try c.trigger("example_slow")
        // Wait until the victim runs it, then kill it and start a healthy worker.
        #expect(try c.waitRunning(run: run, task: "slow").hasPrefix("victim"))
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        let killedAt = monotonicSeconds()
        try c.startWorker(name: "rescuer")
        #expect(try c.wait(run: run) == .success, "\(c.logs())")
        let recovered = monotonicSeconds() - killedAt
        let effects = try c.effects(run: run)
        #expect(effects.count == 1)  // the killed attempt's write was never committed
        #expect(
            try c.store.pg.query("SELECT worker FROM \(c.schema).task_instance WHERE run_id = $1", [run]).rows[0]
                .decode(String.self, 0).hasPrefix("rescuer"))
        // Liveness: dead after 2 s without a heartbeat (ETL_WORKER_DEAD_AFTER), reclaimed, 3 s of
        // task. A generous bound for a loaded machine; a reclaim that never happened fails above.
        #expect(recovered < 20, "recovered \(recovered) s after the SIGKILL")
    }

    @Test("a dead worker's two running tasks are reclaimed one per idle slot and run side by side")
    func reclaimSpreads() throws {
        let c = try Cluster()
        try c.startScheduler()
        let victim = try c.startWorker(["--concurrency", "2", "--prefetch", "1"], name: "victim")
        let runs = [
            try c.trigger("example_slow", date: Date(timeIntervalSince1970: 1_717_200_000)),
            try c.trigger("example_slow", date: Date(timeIntervalSince1970: 1_717_286_400)),
        ]
        // The victim holds both (one per slot) when it dies.
        for r in runs { #expect(try c.waitRunning(run: r, task: "slow").hasPrefix("victim"), "\(c.logs())") }
        kill(victim.processIdentifier, SIGKILL)
        victim.waitUntilExit()
        try c.startWorker(["--concurrency", "2"], name: "rescuer")
        for r in runs { #expect(try c.wait(run: r) == .success, "\(c.logs())") }
        let rows = try c.store.pg.query(
            """
            SELECT worker, started_at, ended_at FROM \(c.schema).task_instance
            WHERE run_id = ANY($1::bigint[]) ORDER BY started_at
            """, ["{\(runs[0]),\(runs[1])}"]
        ).rows
        let workers = try rows.map { try $0.decode(String.self, 0) }
        // Each on a slot of its own, side by side: the second started before the first (3 s of
        // sleep) ended. Run one after the other, the second would start after the first's end.
        #expect(Set(workers) == ["rescuer/0", "rescuer/1"], "\(workers)")
        if rows.count == 2 {
            let firstEnd = try rows[0].decode(Date.self, 2)
            let secondStart = try rows[1].decode(Date.self, 1)
            #expect(
                secondStart < firstEnd,
                "the second reclaimed task started \(secondStart.timeIntervalSince(firstEnd)) s after the first ended")
        }
        for r in runs { #expect(try c.effects(run: r).count == 1) }
    }

    @Test(
        """
        waiting tasks run as a batch: writers commit, failing writers roll back alone, a superseded writer's rows \
        never land
        """
    )
    func batch() throws {
        let c = try Cluster()
        try c.startScheduler()
        let run = try c.trigger("example_batch")
        // Every message waits before the worker starts, so its one slot takes them in one fetch.
        // (19 tasks; the scheduler may add example_hourly's one task too.)
        try c.waitFor("19 messages waiting") {
            (try c.queue.redis.command("XLEN", c.queue.keys.queue("default")).int ?? 0) >= 19
        }
        try c.startWorker(["--concurrency", "1", "--prefetch", "32"])
        #expect(try c.wait(run: run) == .failed, "\(c.logs())")
        let inst = try c.store.instances(run: run)
        #expect(
            inst.filter { $0.value.state == .success }.keys.sorted()
                == ((0..<8).map { "noop_\($0)" } + (0..<8).map { "write_\($0)" }).sorted())
        #expect(inst.filter { $0.value.state == .failed }.keys.sorted() == ["fail_0", "fail_1", "fail_2"])
        // The writers' rows landed once each; the failing tasks' rows were rolled back with them.
        #expect(try c.effects(run: run).map(\.task).sorted() == (0..<8).map { "write_\($0)" })
        // Fewer transactions than writers: the batch committed them together.
        let transactions = try c.store.pg.query(
            "SELECT count(DISTINCT txid) FROM \(c.schema).example_effect WHERE run_id = $1", [run]
        ).rows[0].decode(Int.self, 0)
        #expect(transactions < 8, "\(transactions) transactions for 8 writers")
        let failLog = try c.store.attemptLogs(run: run, task: "fail_1").first?.log ?? ""
        #expect(failLog.contains("fails on purpose after writing"))

        // A writer timed out by the scheduler while it blocks: its row must not land, the others' must.
        let stuck = try c.trigger("example_stuck_batch")
        #expect(try c.wait(run: stuck, timeout: 60) == .failed, "\(c.logs())")
        let s = try c.store.instances(run: stuck)
        #expect(s["stuck_writer"]?.state == .failed)
        #expect((0..<4).allSatisfy { s["write_\($0)"]?.state == .success })
        #expect(try c.effects(run: stuck).map(\.task).sorted() == (0..<4).map { "write_\($0)" })
        // The scheduler's timeout stands: the worker's late end changed nothing.
        let attempt = try c.store.attemptLogs(run: stuck, task: "stuck_writer").first
        #expect(attempt?.state == "failed")
        #expect(attempt?.error?.contains("timed out") == true, "\(String(describing: attempt))")

        // A task with a 1 s timeout fetched together with a 2 s task: whichever comes first, the
        // wait does not count, and both succeed.
        #expect(c.workers.count == 1 && c.workers[0].isRunning)
        for w in c.workers where w.isRunning {
            kill(w.processIdentifier, SIGKILL)
            w.waitUntilExit()
        }
        let waiting = try c.trigger("example_wait_batch")
        try c.waitFor("both tasks queued") {
            try c.store.instances(run: waiting).values.allSatisfy { $0.state == .queued }
        }
        try c.startWorker(["--concurrency", "1"])
        #expect(try c.wait(run: waiting) == .success, "\(c.logs())")
        #expect(try c.effects(run: waiting).count == 2)
    }

    @Test("poison messages (unsigned, wrong key, garbage, unknown task) go to the dead letters; work goes on")
    func poisonMessages() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let other = try MessageCodec(secret: "some-other-secret-of-enough-length")
        let (body, sig) = try other.encode(
            TaskMessage(dag: "example_diamond", runID: 1, task: "extract", logicalDate: "2024-01-01", tryNumber: 1))
        try c.queue.enqueueRaw(queue: "default", fields: [("body", body)])
        try c.queue.enqueueRaw(queue: "default", fields: [("body", body), ("sig", Array(sig.utf8))])
        try c.queue.enqueueRaw(queue: "default", fields: [("body", [0xff, 0x00, 0x13]), ("sig", Array("00".utf8))])
        let ours = try MessageCodec(environment: Environment(c.env))
        try c.queue.enqueue(
            TaskMessage(dag: "no_such_dag", runID: 1, task: "x", logicalDate: "2024-01-01", tryNumber: 1), codec: ours)
        let run = try c.trigger("example_diamond")
        #expect(try c.wait(run: run) == .success)
        let end = monotonicSeconds() + 10
        var reasons: [String] = []
        while monotonicSeconds() < end {
            reasons =
                try c.queue.redis.command("XRANGE", c.queue.keys.dead, "-", "+").array?.compactMap {
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

@Suite("Scheduler restarts, SIGTERM and etlctl", .serialized, .timeLimit(.minutes(10)))
struct QueueOperatorTests {
    @Test("SIGTERM during a task: the worker finishes it within the grace period, then exits cleanly")
    func sigtermDuringTask() throws {
        let c = try Cluster()
        try c.startScheduler()
        let w = try c.startWorker(name: "graceful")
        let run = try c.trigger("example_slow")
        #expect(try c.waitRunning(run: run, task: "slow").hasPrefix("graceful"))
        kill(w.processIdentifier, SIGTERM)
        try c.waitFor("the worker's exit after SIGTERM", timeout: 40) { !w.isRunning }
        #expect(w.terminationStatus == 0)
        #expect(try c.store.run(run)?.state == .success || c.wait(run: run) == .success)
        #expect(try c.effects(run: run).count == 1)
        #expect(try c.store.instances(run: run)["slow"]?.tryNumber == 1)
    }

    @Test("a slow but live worker keeps its task past the dead-after time: no other worker takes it")
    func slowLiveWorkerKeepsTask() throws {
        // Dead after 3 s: the 6 s task outlives it twice, and a stall of the loaded test machine
        // shorter than 2.5 s cannot pass for a death (heartbeats every 0.75 s).
        let c = try Cluster(extra: ["ETL_WORKER_DEAD_AFTER": "3"])
        try c.startScheduler()
        try c.startWorker(name: "slowpoke")
        let run = try c.trigger("example_long")
        #expect(try c.waitRunning(run: run, task: "long").hasPrefix("slowpoke"))
        try c.startWorker(["--concurrency", "2"], name: "bystander")  // idle, and would reclaim a dead worker's task
        #expect(try c.wait(run: run, timeout: 40) == .success, "\(c.logs())")
        #expect(try c.effects(run: run).count == 1)
        let attempts = try c.store.attemptLogs(run: run, task: "long")
        #expect(
            attempts.count == 1 && attempts.first?.worker?.hasPrefix("slowpoke") == true,
            "\(attempts.map { $0.worker ?? "-" })")
        #expect(try c.store.instances(run: run)["long"]?.tryNumber == 1)
    }

    @Test(
        """
        SIGTERM to a worker whose task outlasts the grace: it hands the task back and exits, another worker takes it \
        at once
        """
    )
    func sigtermGraceTakeover() throws {
        // Dead after 60 s: only the hand-back (the worker marking itself dead) can move the task
        // within the bounds below; an ordinary dead-worker reclaim would come a minute later.
        let c = try Cluster(extra: ["ETL_WORKER_DEAD_AFTER": "60"])
        try c.startScheduler()
        let victim = try c.startWorker(name: "leaving", extraEnv: ["ETL_WORKER_GRACE": "1"])
        let run = try c.trigger("example_long")
        #expect(try c.waitRunning(run: run, task: "long").hasPrefix("leaving"))
        try c.startWorker(name: "rescuer")
        let sent = monotonicSeconds()
        kill(victim.processIdentifier, SIGTERM)
        try c.waitFor("the worker's exit after its 1 s grace", timeout: 15) { !victim.isRunning }
        #expect(
            monotonicSeconds() - sent < 10, "the worker took \(monotonicSeconds() - sent) s to leave with a 1 s grace")
        #expect(try c.wait(run: run, timeout: 40) == .success, "\(c.logs())")
        // The rescuer ran it to the end; the victim's uncommitted write never landed.
        #expect(
            try c.store.pg.query("SELECT worker FROM \(c.schema).task_instance WHERE run_id = $1", [run]).rows[0]
                .decode(String.self, 0).hasPrefix("rescuer"))
        #expect(try c.effects(run: run).count == 1)
        // Taken over at once (the victim marked itself dead), not after a dead-after wait: the
        // rescuer's 6 s run ended within a few seconds of that.
        #expect(monotonicSeconds() - sent < 6 + 10)
    }

    @Test("the scheduler killed mid-run and started again: the run completes, nothing lost or doubled")
    func schedulerRestart() throws {
        let c = try Cluster()
        let s = try c.startScheduler(name: "first")
        try c.startWorker(["--concurrency", "2"])
        let run = try c.trigger("example_upstream")  // produce sleeps 1 s, then announce
        try c.waitRunning(run: run, task: "produce")
        kill(s.processIdentifier, SIGKILL)
        s.waitUntilExit()
        usleep(1_500_000)  // produce finishes while no scheduler runs; its event waits in the stream
        try c.startScheduler(name: "second")
        #expect(try c.wait(run: run) == .success, "\(c.logs())")
        let effects = try c.effects(run: run)
        #expect(effects.map(\.task) == ["announce"])
        #expect(try c.store.instances(run: run).values.allSatisfy { $0.tryNumber == 1 })
    }

    @Test("two schedulers: the standby takes over when the leader dies")
    func standbyTakesOver() throws {
        let c = try Cluster(extra: ["ETL_SCHEDULER_LEASE": "2"])
        let a = try c.startScheduler(name: "a")
        usleep(800_000)
        let b = try c.startScheduler(name: "b")
        try c.startWorker()
        let first = try c.trigger("example_diamond", date: Date(timeIntervalSince1970: 1_717_200_000))
        #expect(try c.wait(run: first) == .success)
        let leader = try c.store.pg.query("SELECT holder FROM \(c.schema).scheduler_lease").rows[0].decode(
            String.self, 0)
        let victim = leader == "a" ? a : b
        kill(victim.processIdentifier, SIGKILL)
        victim.waitUntilExit()
        let second = try c.trigger("example_diamond", date: Date(timeIntervalSince1970: 1_717_286_400))
        #expect(try c.wait(run: second, timeout: 30) == .success, "\(c.logs())")
        let now = try c.store.pg.query("SELECT holder, fencing_token FROM \(c.schema).scheduler_lease").rows[0]
        #expect(try now.decode(String.self, 0) != leader)
        #expect(try now.decode(Int.self, 1) >= 2)
    }

    @Test("a scheduled DAG gets a run for its latest interval, created and run by the scheduler alone")
    func scheduledRun() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let end = monotonicSeconds() + 20
        var run: MetadataStore.RunRow?
        while monotonicSeconds() < end {
            run = try c.store.runRows(dag: "example_hourly", limit: 5).first
            if run?.state == .success { break }
            usleep(100_000)
        }
        #expect(run?.state == .success, "\(c.logs())")
        #expect(run?.type == .scheduled)
        // Airflow semantics: the logical date is the start of the last full hour.
        let hour = floor(Date().timeIntervalSince1970 / 3600) * 3600
        #expect(
            run?.logicalDate.timeIntervalSince1970 == hour - 3600
                || run?.logicalDate.timeIntervalSince1970 == hour - 7200)
        #expect(try c.store.runRows(dag: "example_hourly", limit: 5).count == 1)  // no catchup
    }

    @Test("queued tasks whose messages were lost (as after a Redis restart) are enqueued again")
    func lostMessagesReenqueued() throws {
        let c = try Cluster(extra: ["ETL_SCHEDULER_RECONCILE": "1"])
        try c.startScheduler()
        let run = try c.trigger("example_diamond")
        let end = monotonicSeconds() + 10
        // The scheduler marks a task queued in Postgres and then adds its message: wait for the
        // message itself, or the trim below could run before it exists and lose nothing.
        func extractInStream() throws -> Bool {
            let entries = try c.queue.redis.command("XRANGE", c.queue.keys.queue("default"), "-", "+").array ?? []
            return entries.contains { entry in
                // [id, [field, value, ...]]: the "body" field holds the message JSON.
                guard let fields = entry.array?.last?.array, let at = fields.firstIndex(of: .bulk(Array("body".utf8))),
                    at + 1 < fields.count, let body = fields[at + 1].bytes,
                    let m = try? JSONDecoder().decode(TaskMessage.self, from: Data(body))
                else { return false }
                return m.task == "extract" && m.runID == run
            }
        }
        while monotonicSeconds() < end, try !extractInStream() { usleep(20_000) }
        #expect(try extractInStream(), "the extract message never reached the stream: \(c.logs())")
        // Lose every message, as a crash of Redis before its AOF was written would.
        try c.queue.redis.command("XTRIM", c.queue.keys.queue("default"), "MAXLEN", 0)
        usleep(1_200_000)
        try c.startWorker()
        #expect(try c.wait(run: run, timeout: 40) == .success, "\(c.logs())")
        #expect(try c.effects(run: run).count == 6)
        #expect(c.logs().contains("re-enqueued"))
    }

    @Test("etlctl: trigger --wait, failures, clear --failed, and clear errors for bad input")
    func etlctl() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        func ctl(_ args: String...) throws -> TestServices.Output {
            try TestServices.run(bin, args, environment: c.env)
        }

        let ok = try ctl("dags", "trigger", "example_diamond", "--date", "2024-05-01", "--wait", "--timeout", "60")
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("success"))
        let failed = try ctl("dags", "trigger", "example_timeout", "--date", "2024-05-01", "--wait", "--timeout", "60")
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("failed. See: etlctl tasks list example_timeout"))
        let tasks = try ctl("tasks", "list", "example_timeout", "--json")
        let parsed = try JSONSerialization.jsonObject(with: Data(tasks.stdout.utf8)) as? [[String: Any]]
        #expect(parsed?.first { $0["task"] as? String == "never" }?["state"] as? String == "upstream_failed")
        let cleared = try ctl("tasks", "clear", "--failed", "example_timeout")
        #expect(cleared.stdout.contains("cleared 2 task(s)"))
        let unknown = try ctl("dags", "trigger", "no_such_dag")
        #expect(unknown.status == 1)
        #expect(unknown.stderr.hasPrefix("etlctl: no DAG named 'no_such_dag'. Fix:"))
        let badDate = try ctl("dags", "trigger", "example_diamond", "--date", "2024-02-30x")
        #expect(badDate.status == 1)
        #expect(badDate.stderr.contains("is not a date"))
        var unreachable = c.env
        unreachable["REDIS_URL"] = "redis://127.0.0.1:\(TestServices.freePort())/0"
        let down = try TestServices.run(bin, ["queues"], environment: unreachable)
        #expect(down.status == 1)
        #expect(down.stderr.contains("cannot connect"))
        let queues = try ctl("queues", "--json")
        #expect(queues.status == 0)
        #expect(try JSONSerialization.jsonObject(with: Data(queues.stdout.utf8)) is [String: Any])
        // etlctl's actions are in the audit trail with its host and OS user.
        let audit = try ctl("audit", "--json")
        let trail = try JSONSerialization.jsonObject(with: Data(audit.stdout.utf8)) as? [[String: Any]] ?? []
        let trigger = trail.first {
            $0["action"] as? String == "trigger" && $0["target"] as? String == "example_diamond"
        }
        #expect(trigger?["actor"] as? String == "etlctl", "\(audit.stdout)")
        #expect((trigger?["origin"] as? String)?.contains(", OS user ") == true, "\(audit.stdout)")
        #expect(trail.contains { $0["action"] as? String == "clear-failed" && $0["ok"] as? Bool == true })
        // Both of its triggers (the run that succeeded and the one that failed).
        #expect(trail.filter { $0["action"] as? String == "trigger" }.count >= 2, "\(audit.stdout)")
    }
}

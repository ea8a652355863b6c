import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Example DAGs, like Airflow's `example_*` DAGs: they exercise the queue's features (fan-out and
/// fan-in, waiting on another DAG, retries, timeouts, slow tasks, long chains) with tasks that do
/// little, so the tests and benchmarks can watch the scheduler and workers themselves. Loaded
/// when `ETL_EXAMPLE_DAGS=true`.
public enum ExampleDAGs {
    public static func dags(chainLength: Int = 200, fanoutSize: Int = 1000) throws -> [DAG] {
        let start = Date(timeIntervalSince1970: 1_704_067_200)  // 2024-01-01
        let quickRetry = Backoff(base: 0.2, cap: 1, jitter: 0.2)
        func noop(_ id: String, _ up: [String] = []) -> TaskSpec { TaskSpec(id, operation: "record", upstream: up) }
        return [
            try DAG(
                "example_diamond", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    noop("extract"),
                    noop("clean", ["extract"]), noop("enrich", ["extract"]), noop("score", ["extract"]),
                    noop("join", ["clean", "enrich", "score"]),
                    noop("publish", ["join"]),
                ]),
            try DAG(
                "example_upstream", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec("produce", operation: "sleep", arguments: ["seconds": "1"]), noop("announce", ["produce"]),
                ]),
            try DAG(
                "example_downstream", schedule: .manual, startDate: start, tags: ["example"],
                upstreamDAGs: ["example_upstream"], tasks: [noop("consume")]),
            try DAG(
                "example_retry", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec(
                        "flaky", operation: "fail_until", arguments: ["succeed_on_try": "3"], retries: 3,
                        retryBackoff: quickRetry),
                    noop("after", ["flaky"]),
                ]),
            try DAG(
                "example_timeout", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec("stuck", operation: "sleep", arguments: ["seconds": "60"], timeout: 1),
                    noop("never", ["stuck"]),
                ]),
            try DAG(
                "example_slow", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec("slow", operation: "record", arguments: ["sleep": "3"])
                ]),
            // Count their executions outside their transaction: a second execution of one attempt
            // (two runners at once) shows in example_execution. The long one outlasts a Redis
            // outage of 8 s.
            try counted("example_counted", seconds: 6, start: start),
            try counted("example_counted_long", seconds: 15, start: start),
            // Its task ends the worker process that runs it, every time (a poison message): after
            // ETL_MAX_DELIVERIES take-overs it must go to the dead letters instead of killing on.
            try DAG(
                "example_poison", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [TaskSpec("crash", operation: "exit_worker")]),
            // Longer than a worker's dead-after in the tests (2 s): a live worker must keep it.
            try DAG(
                "example_long", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec("long", operation: "record", arguments: ["sleep": "6"])
                ]),
            // Fails every try: its retries run out, each after its backoff (1 s, then 2 s; no jitter).
            try DAG(
                "example_retry_out", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec(
                        "doomed", operation: "fail_until", arguments: ["succeed_on_try": "99"], retries: 2,
                        retryBackoff: Backoff(base: 1, cap: 4, jitter: 0)),
                    noop("after", ["doomed"]),
                ]),
            try DAG(
                "example_chain", schedule: .manual, startDate: start, tags: ["example", "bench"],
                tasks: (0..<chainLength).map { i in
                    TaskSpec("t\(i)", operation: "noop", upstream: i == 0 ? [] : ["t\(i - 1)"])
                }),
            // Scheduled, without catchup: the scheduler creates one run for the latest full hour.
            try DAG(
                "example_hourly", schedule: try Schedule("@hourly"), startDate: start, tags: ["example"],
                tasks: [noop("tick")]),
            try DAG(
                "example_fanout", schedule: .manual, startDate: start, tags: ["example", "bench"],
                tasks: (0..<fanoutSize).map { i in TaskSpec("n\(i)", operation: "noop") }),
            // Independent tasks that a worker takes together as one batch: writers, no-ops and
            // tasks that write and then fail.
            try DAG(
                "example_batch", schedule: .manual, startDate: start, tags: ["example"],
                tasks: (0..<8).map { noop("write_\($0)") } + (0..<8).map { TaskSpec("noop_\($0)", operation: "noop") }
                    + (0..<3).map { TaskSpec("fail_\($0)", operation: "write_then_fail") }),
            // Writers batched with one that writes and then overstays its timeout without checking
            // it (as a task stuck in a C call would): the scheduler fails it meanwhile.
            try DAG(
                "example_stuck_batch", schedule: .manual, startDate: start, tags: ["example"],
                tasks: (0..<4).map { noop("write_\($0)") }
                    + [TaskSpec("stuck_writer", operation: "write_then_block", arguments: ["seconds": "3"], timeout: 1)]
            ),
            // A quick task with a 1 s timeout fetched with a 2 s task: waiting behind it must not
            // count against its timeout.
            try DAG(
                "example_wait_batch", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec("slow", operation: "record", arguments: ["sleep": "2"]),
                    TaskSpec("quick", operation: "record", timeout: 1),
                ]),
            // Its runs go one at a time, oldest date first (as the pipelines' do).
            try DAG(
                "example_one_at_a_time", schedule: .manual, startDate: start, tags: ["example"], maxActiveRuns: 1,
                tasks: [
                    TaskSpec("first", operation: "record", arguments: ["sleep": "0.4"]),
                    TaskSpec("second", operation: "record", upstream: ["first"], arguments: ["sleep": "0.4"]),
                ]),
            // Waits for example_upstream, one run at a time, like the report DAGs.
            try DAG(
                "example_report", schedule: .manual, startDate: start, tags: ["example"],
                upstreamDAGs: ["example_upstream"], maxActiveRuns: 1, tasks: [noop("summarize")]),
            // The same with a task that holds the DAG's one slot for a while.
            try DAG(
                "example_slow_report", schedule: .manual, startDate: start, tags: ["example"],
                upstreamDAGs: ["example_upstream"], maxActiveRuns: 1,
                tasks: [TaskSpec("summarize", operation: "sleep", arguments: ["seconds": "8"])]),
            // Long tasks to cancel, each stuck in a different place (a statement on a connection
            // of its own, a statement on the attempt's connection, its own code between checks),
            // fetched in one batch with a quick one that must not be touched; retries left, which
            // a cancel must not use.
            try DAG(
                "example_cancel", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec("in_own", operation: "write_then_wait", arguments: ["on": "own"], retries: 2),
                    TaskSpec("in_attempt", operation: "write_then_wait", arguments: ["on": "attempt"], retries: 2),
                    TaskSpec("in_loop", operation: "write_then_wait", arguments: ["on": "loop"], retries: 2),
                    TaskSpec("quick", operation: "record"),
                    noop("after", ["in_own"]),
                ]),
            // A task in a 3 s statement on the attempt's connection, fetched with one cancelled while
            // it waits behind: the cancel must not interrupt the first one's statement.
            try DAG(
                "example_cancel_mate", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [
                    TaskSpec("sleeper", operation: "sql_sleep", arguments: ["seconds": "3"]),
                    TaskSpec("victim", operation: "write_then_wait", arguments: ["on": "loop", "seconds": "8"]),
                ]),
            // Logs a line every 0.2 s for 8 s: its log must reach Postgres while it runs.
            try DAG(
                "example_live_log", schedule: .manual, startDate: start, tags: ["example"],
                tasks: [TaskSpec("chatty", operation: "chatty", arguments: ["lines": "40", "every": "0.2"])]),
            // Four tasks that could run side by side, in a pool of one slot: one at a time.
            try DAG(
                "example_pooled", schedule: .manual, startDate: start, tags: ["example"],
                tasks: (1...4).map {
                    TaskSpec("t\($0)", operation: "record", arguments: ["sleep": "0.3"], pool: "example_one")
                }),
        ]
    }

    /// A DAG of one task that counts its executions (`count_executions`), sleeping `seconds`.
    static func counted(_ id: String, seconds: Int, start: Date) throws -> DAG {
        try DAG(
            id, schedule: .manual, startDate: start, tags: ["example"],
            tasks: [TaskSpec("counted", operation: "count_executions", arguments: ["seconds": "\(seconds)"])])
    }

    /// The example DAGs' pools.
    public static let pools = ["example_one": 1]

    public static let setup = [
        SetupScript(
            name: "examples: example_effect",
            """
            CREATE TABLE IF NOT EXISTS @S.example_effect (run_id bigint, task_id text, try_number int, \
            at timestamptz DEFAULT clock_timestamp());
            -- The top-level transaction of each write (a savepoint's rows share it): tests count them.
            ALTER TABLE @S.example_effect ADD COLUMN IF NOT EXISTS txid bigint DEFAULT txid_current();
            """),
        SetupScript(
            name: "examples: example_execution",
            """
            -- Written by count_executions on a connection of the task's own, committed at once:
            -- each execution's start and end, whoever's transaction rolls back.
            CREATE TABLE IF NOT EXISTS @S.example_execution (run_id bigint, task_id text, try_number int,
                phase text, os_pid int, backend_pid int, at timestamptz DEFAULT clock_timestamp());
            """),
    ]

    public static let operations: [String: TaskOperation] = [
        "noop": { _ in },
        "sleep": { ctx in
            let s = Double(ctx.message.arguments["seconds"] ?? "1") ?? 1
            ctx.log("sleeping \(s) s")
            try ctx.sleep(s)
        },
        "fail_until": { ctx in
            let n = Int(ctx.message.arguments["succeed_on_try"] ?? "2") ?? 2
            if ctx.message.tryNumber < n {
                ctx.log("failing on purpose on try \(ctx.message.tryNumber)")
                throw ExampleFailure(message: "try \(ctx.message.tryNumber) fails on purpose (succeeds on try \(n))")
            }
            ctx.log("succeeded on try \(ctx.message.tryNumber)")
        },
        // Writes one row per successful attempt in the attempt's transaction: the test of
        // "applied once in effect" counts these rows.
        "record": { ctx in
            if let s = ctx.message.arguments["sleep"], let secs = Double(s) { try ctx.sleep(secs) }
            try record(ctx)
        },
        // Records its start and its end on a connection of its own (outside the attempt's
        // transaction), sleeping between: tests freeze or cut off its worker and count executions.
        "count_executions": { ctx in
            let pg = try ctx.ownConnection()
            defer { pg.close() }
            func mark(_ phase: String) throws {
                try pg.query(
                    """
                    INSERT INTO \(ctx.schema).example_execution (run_id, task_id, try_number, phase, os_pid, \
                    backend_pid) VALUES ($1, $2, $3, $4, $5, pg_backend_pid())
                    """, [ctx.message.runID, ctx.message.task, ctx.message.tryNumber, phase, Int(getpid())])
            }
            try mark("start")
            try ctx.sleep(Double(ctx.message.arguments["seconds"] ?? "6") ?? 6)
            try mark("end")
            try record(ctx)
        },
        // Ends the process that runs it (as a crash in a C library would): only example_poison uses it.
        "exit_worker": { ctx in
            ctx.log("exiting the worker process on purpose")
            exit(70)
        },
        "write_then_fail": { ctx in
            try record(ctx)
            // The NUL (which Postgres text cannot hold) checks that a worker stores such an error.
            throw ExampleFailure(message: "\(ctx.message.task) fails on purpose after writing\u{0}")
        },
        "write_then_wait": { ctx in try writeThenWait(ctx) },
        // One statement of `seconds` on the attempt's connection, then its row.
        "sql_sleep": { ctx in
            try ctx.pg.query("SELECT pg_sleep($1)", [Double(ctx.message.arguments["seconds"] ?? "3") ?? 3])
            try record(ctx)
        },
        "chatty": { ctx in
            let lines = Int(ctx.message.arguments["lines"] ?? "40") ?? 40
            let every = Double(ctx.message.arguments["every"] ?? "0.2") ?? 0.2
            for i in 0..<lines {
                ctx.log("line \(i) of \(lines)")
                try ctx.sleep(every)
            }
        },
        "write_then_block": { ctx in
            try record(ctx)
            let s = Double(ctx.message.arguments["seconds"] ?? "3") ?? 3
            ctx.log("blocking \(s) s without checking the deadline")
            sleepSeconds(s)
        },
    ]

    /// Commits one row on a connection of its own (`committed`, in example_execution), writes
    /// another it never commits (`uncommitted`, on that connection, or in the attempt's
    /// transaction for `on: attempt`), then waits (`seconds`, default two minutes): in a statement (`own`, `attempt`)
    /// or in its own code, checking between steps (`loop`). A cancel must stop it and leave the
    /// committed row alone.
    static func writeThenWait(_ ctx: TaskContext) throws {
        let on = ctx.message.arguments["on"] ?? "own"
        let seconds = Double(ctx.message.arguments["seconds"] ?? "120") ?? 120
        let pg = try ctx.ownConnection()
        defer { pg.close() }
        func mark(_ phase: String, _ c: PostgresConnection) throws {
            try c.query(
                """
                INSERT INTO \(ctx.schema).example_execution (run_id, task_id, try_number, phase, os_pid, backend_pid)
                VALUES ($1, $2, $3, $4, $5, pg_backend_pid())
                """, [ctx.message.runID, ctx.message.task, ctx.message.tryNumber, phase, Int(getpid())])
        }
        try mark("committed", pg)
        ctx.log("committed one row; now writing one it never commits, then waiting (\(on))")
        switch on {
        case "attempt":
            try mark("uncommitted", try ctx.pg)
            try ctx.pg.query("SELECT pg_sleep($1)", [seconds])
        case "loop":
            try pg.transaction { tx in
                try mark("uncommitted", tx)
                try ctx.sleep(seconds)
            }
        default:
            try pg.transaction { tx in
                try mark("uncommitted", tx)
                try tx.query("SELECT pg_sleep($1)", [seconds])
            }
        }
    }

    static func record(_ ctx: TaskContext) throws {
        try ctx.pg.query(
            "INSERT INTO \(ctx.schema).example_effect (run_id, task_id, try_number) VALUES ($1, $2, $3)",
            [ctx.message.runID, ctx.message.task, ctx.message.tryNumber])
        ctx.log("recorded \(ctx.message.dag).\(ctx.message.task) try \(ctx.message.tryNumber)")
    }
}

struct ExampleFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

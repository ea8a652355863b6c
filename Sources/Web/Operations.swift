import Broker
import ETLSupport
import Foundation
import HTTPTypes
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

/// A refusal the user can act on: the HTTP status and a message naming the thing and the fix.
struct WebError: Error, CustomStringConvertible {
    let status: HTTPResponse.Status
    let message: String
    var description: String { message }
    static func notFound(_ m: String) -> WebError { WebError(status: .notFound, message: m) }
    static func bad(_ m: String) -> WebError { WebError(status: .badRequest, message: m) }
}

/// What the pages and the JSON API show and do. Both call these, so a page and its API route
/// always agree; every one reads or changes the same state as the matching `etlctl` command.
extension Backend {
    func dag(_ id: String) throws -> DAG { try registry.requireDAG(id) }  // an OperatorError: 404

    // MARK: Reading

    struct DAGSummary: Codable, Sendable {
        let dag: String
        let paused: Bool
        let schedule: String
        let tags: [String]
        let upstreamDAGs: [String]
        let maxActiveRuns: Int
        /// The pools the DAG's tasks use, with their slots.
        let pools: [String: Int]
        let tasks: Int
        let recentRuns: [MetadataStore.RunRow]
        let nextLogicalDate: Date?
        let nextRunAt: Date?
        enum CodingKeys: String, CodingKey {
            case dag, paused, schedule, tags
            case upstreamDAGs = "upstream_dags"
            case maxActiveRuns = "max_active_runs"
            case pools
            case tasks
            case recentRuns = "recent_runs"
            case nextLogicalDate = "next_logical_date"
            case nextRunAt = "next_run_at"
        }
    }

    /// The DAGs (those loaded by this build) with a tag and a case-insensitive name filter.
    func dagSummaries(tag: String?, search: String?, runs: Int = 10) async throws -> [DAGSummary] {
        try await run { [self] c in
            let recent = Dictionary(grouping: try c.store.recentRuns(perDAG: runs), by: \.dag)
            return try summaries(c, recent: recent, lastScheduled: try c.store.lastScheduledLogicalDates()) { d in
                (tag.map { $0.isEmpty || d.tags.contains($0) } ?? true)
                    && (search.map { $0.isEmpty || d.id.localizedCaseInsensitiveContains($0) } ?? true)
            }
        }
    }

    /// Summaries of the recorded DAGs that `include` accepts, from runs and last scheduled dates
    /// already read.
    private func summaries(
        _ c: Connections, recent: [String: [MetadataStore.RunRow]], lastScheduled: [String: Date],
        include: (DAG) -> Bool
    ) throws -> [DAGSummary] {
        let now = Date()
        return try c.store.dagRows().compactMap { row -> DAGSummary? in
            guard let d = registry.dag(row.id), include(d) else { return nil }
            let next = d.schedule.nextRun(
                start: d.startDate, lastLogical: lastScheduled[d.id], now: now, catchup: d.catchup)
            return DAGSummary(
                dag: d.id, paused: row.paused, schedule: d.schedule.description, tags: d.tags,
                upstreamDAGs: d.upstreamDAGs, maxActiveRuns: d.maxActiveRuns,
                pools: registry.pools.filter { p in d.tasks.contains { $0.pool == p.key } },
                tasks: d.tasks.count, recentRuns: recent[d.id] ?? [], nextLogicalDate: next?.logicalDate,
                nextRunAt: next?.due)
        }
    }

    struct TaskDescription: Codable, Sendable {
        let task: String
        let operation: String
        let upstream: [String]
        let retries: Int
        let timeoutSeconds: Double
        let queue: String
        enum CodingKeys: String, CodingKey {
            case task, operation, upstream, retries
            case timeoutSeconds = "timeout_seconds"
            case queue
        }
    }

    struct DAGDetail: Codable, Sendable {
        let summary: DAGSummary
        let tasks: [TaskDescription]
        let grid: [MetadataStore.GridCell]
        /// The parameters a run may be given (`DAGParam`).
        let params: [ParamDescription]
    }

    struct ParamDescription: Codable, Sendable {
        let name: String
        let type: String
        let `default`: String
        /// "output" (any run may set it: another value writes another output) or "manual only".
        let effect: String
        let help: String

        init(_ p: DAGParam) {
            name = p.name
            type = p.typeDescription
            `default` = p.defaultValue
            effect = p.effect == .definesOutput ? "output" : "manual only"
            help = p.help
        }
    }

    /// One DAG: its tasks and dependencies, and its recent runs by task (one connection, reads of
    /// this DAG only).
    func dagDetail(_ id: String, runs: Int = 25) async throws -> DAGDetail {
        let d = try dag(id)
        let (summary, grid) = try await run { [self] c -> (DAGSummary?, [MetadataStore.GridCell]) in
            let recent = try c.store.runRows(dag: id, limit: runs)
            let last = try c.store.lastScheduledLogicalDate(id).map { [id: $0] } ?? [:]
            let summary = try summaries(c, recent: [id: recent], lastScheduled: last) { $0.id == id }.first
            return (summary, try c.store.taskGrid(runs: recent.map(\.id)))
        }
        guard let summary else {
            throw WebError.notFound(
                "DAG '\(id)' is not recorded yet. Fix: start the scheduler once so it registers the DAGs")
        }
        let order = (try? d.topologicalOrder()) ?? d.tasks.map(\.id)
        let tasks = order.compactMap(d.task).map {
            TaskDescription(
                task: $0.id, operation: $0.operation, upstream: $0.upstream, retries: $0.retries,
                timeoutSeconds: $0.timeout, queue: $0.queue)
        }
        return DAGDetail(summary: summary, tasks: tasks, grid: grid, params: d.params.map(ParamDescription.init))
    }

    struct RunDetail: Codable, Sendable {
        let run: MetadataStore.RunRow
        let tasks: [MetadataStore.TaskRow]
    }

    func runDetail(dag: String, run id: Int64) async throws -> RunDetail {
        _ = try self.dag(dag)
        return try await run { c in
            guard let r = try c.store.runRow(id), r.dag == dag else {
                throw WebError.notFound("DAG '\(dag)' has no run \(id). Fix: pick a run from /dags/\(dag)")
            }
            return RunDetail(run: r, tasks: try c.store.taskRows(run: id))
        }
    }

    func attempts(dag: String, run id: Int64, task: String) async throws -> [MetadataStore.AttemptRow] {
        let d = try self.dag(dag)
        _ = try registry.requireTask(d, task)
        return try await run { c in
            guard try c.store.run(id)?.dag == dag else {
                throw WebError.notFound("DAG '\(dag)' has no run \(id). Fix: pick a run from /dags/\(dag)")
            }
            return try c.store.attemptLogs(run: id, task: task)
        }
    }

    func workers() async throws -> [TaskQueue.WorkerStatus] {
        let deadAfter = workerDeadAfter
        return try await run { c in try c.queue.workers(deadAfter: deadAfter) }
    }

    func deadLetters() async throws -> [TaskQueue.DeadLetter] {
        try await run { c in try c.queue.deadLetters(limit: 10_000) }
    }

    struct QueueOverview: Codable, Sendable {
        let queues: [TaskQueue.Depth]
        let delayedRetries: [MetadataStore.DelayedRetry]
        let deadLetters: [TaskQueue.DeadLetter]
        let workers: [TaskQueue.WorkerStatus]
        enum CodingKeys: String, CodingKey {
            case queues
            case delayedRetries = "delayed_retries"
            case deadLetters = "dead_letters"
            case workers
        }
    }

    func queueOverview() async throws -> QueueOverview {
        let names = registry.queues.isEmpty ? ["default"] : registry.queues
        let deadAfter = workerDeadAfter
        return try await run { c in
            QueueOverview(
                queues: try c.queue.depths(names), delayedRetries: try c.store.delayedRetries(limit: 200),
                deadLetters: try c.queue.deadLetters(limit: 500), workers: try c.queue.workers(deadAfter: deadAfter))
        }
    }

    func loads(pipeline: String?, limit: Int) async throws -> [LoadQueries.Load] {
        let s = settings
        return try await run { [self] c in
            try operations(c, "reader").loads(pipeline: pipeline, limit: limit, settings: s)
        }
    }

    func rejects(load: Int64, limit: Int) async throws -> [LoadQueries.Reject] {
        let s = settings
        return try await run { [self] c in try operations(c, "reader").rejects(load: load, limit: limit, settings: s) }
    }

    struct ReportData: Codable, Sendable {
        let report: String
        let date: String?
        let dates: [String]
        let columns: [String]
        let rows: [[String]]
        /// When the shown date was computed, and the corrections that make it out of date.
        var computed: Freshness.Computed? = nil
        /// The dates of this report that are out of date.
        var outOfDate: [String] = []
        /// How far the sources it reads are complete.
        var watermarks: [Watermarks.Source] = []
    }

    static func report(_ name: String) throws -> Reports.Report {
        guard let r = Reports.named(name) else {
            throw WebError.notFound(
                "no report named '\(shown(name))'. Fix: use one of: \(Reports.all.map(\.name).joined(separator: ", "))")
        }
        return r
    }

    static func day(_ text: String) throws -> Day {
        guard let d = Day(strict: text) else {
            throw WebError.bad("'\(shown(text))' is not a date. Fix: write it as YYYY-MM-DD, e.g. 2024-05-01")
        }
        return d
    }

    /// A report's rows for `date` (default: its newest date) and the dates it has.
    func reportData(_ name: String, date: String?) async throws -> ReportData {
        let report = try Self.report(name)
        let wanted = try date.map(Self.day)
        let s = settings
        return try await run { c in
            let dates: [Day]
            do { dates = try Reports.dates(report, pg: c.pg, settings: s) } catch let e as PostgresError
                where e.sqlState == "42P01"
            {
                // datamart not created yet
                return ReportData(report: name, date: nil, dates: [], columns: report.columns, rows: [])
            }
            guard let day = wanted ?? dates.first else {
                return ReportData(report: name, date: nil, dates: [], columns: report.columns, rows: [])
            }
            var data = ReportData(
                report: name, date: day.description, dates: dates.map(\.description), columns: report.columns,
                rows: try Reports.rows(report, date: day, pg: c.pg, settings: s))
            // The ledger tables come with the datalake's; an older deployment may lack them.
            let all = (try? Freshness.computed(pg: c.pg, settings: s, report: name)) ?? []
            data.computed = all.first { $0.date == day.description }
            data.outOfDate = all.filter { !$0.outOfDate.isEmpty }.map(\.date)
            let reads = Set(report.upstreamDAGs)
            data.watermarks = ((try? Watermarks.sources(pg: c.pg, settings: s)) ?? []).filter {
                reads.contains($0.name)
            }
            return data
        }
    }

    /// The report's CSV file; the name and date are checked first, so no request can name another path.
    func reportCSV(_ name: String, date: String) throws -> String {
        let path = Reports.csvPath(try Self.report(name), date: try Self.day(date), settings: settings)
        guard FileManager.default.fileExists(atPath: path) else {
            throw WebError.notFound(
                "the \(name) report for \(date) has no CSV yet. Fix: run the \(name) DAG for that date")
        }
        return path
    }

    // MARK: Changing (through OperatorActions, as etlctl does)

    func setPaused(_ id: String, _ paused: Bool, by user: String) async throws {
        _ = try dag(id)
        try await run { [self] c in try operations(c, user).setPaused(id, paused) }
    }

    /// Creates a manual run for `date` (default today, UTC) and wakes the scheduler.
    /// `params`: run parameters by name (checked where the run is made; a wrong one makes none).
    func trigger(
        _ id: String, date: String?, params: [String: String] = [:], by user: String
    ) async throws -> Int64 {
        _ = try dag(id)
        let day = try date.map(Self.day) ?? Day.today()
        let logical = day.date
        return try await run { [self] c in try operations(c, user).trigger(id, logicalDate: logical, params: params) }
    }

    /// A backfill of `id` from `from` to `to` (etlctl dags backfill): makes the missing runs, for a
    /// report DAG with its upstream DAGs' runs, and reruns per `rerun`; returns what it did.
    func backfill(_ id: String, from: String, to: String, rerun: String, by user: String) async throws -> String {
        _ = try dag(id)
        guard let mode = OperatorActions.Rerun(rawValue: rerun) else {
            throw WebError.bad("rerun is none, failed or all, not '\(shown(rerun))'. Fix: pick one of the three")
        }
        let (first, last) = (try Self.day(from), try Self.day(to))
        let start = first.date
        let end = last.date
        return try await run { [self] c in
            let ops = operations(c, user)
            let done = try ops.backfill(try ops.backfillPlan(id, from: start, to: end, rerun: mode), rerun: mode)
            let counts = Dictionary(grouping: done, by: \.action).mapValues(\.count)
            return "Backfill of \(id) from \(first) to \(last): \(counts[.create] ?? 0) run(s) made, "
                + "\(counts[.rerun] ?? 0) to run again, \(counts[.keep] ?? 0) kept."
        }
    }

    /// Runs a task again with everything downstream of it (etlctl tasks retry).
    func retry(dag id: String, run: Int64, task: String, by user: String) async throws -> Int {
        try await self.run { [self] c in try operations(c, user).retry(dag: id, run: run, task: task) }
    }

    /// Restarts a run's failed and upstream-failed tasks with what depends on them (etlctl tasks clear --failed).
    func clearFailed(dag id: String, run: Int64, by user: String) async throws -> Int {
        try await self.run { [self] c in try operations(c, user).clearFailed(dag: id, run: run) }
    }

    /// Cancels a task (etlctl tasks cancel): returns what it did, in words, and whether it did anything.
    func cancel(dag id: String, run: Int64, task: String, by user: String) async throws -> (String, Bool) {
        try await self.run { [self] c in
            let outcome = try operations(c, user).cancel(dag: id, run: run, task: task)
            if case .alreadyEnded = outcome {
                return (OperatorActions.describe(outcome, task: task, run: run), false)
            }
            return (OperatorActions.describe(outcome, task: task, run: run), true)
        }
    }

    func markFailed(dag id: String, run: Int64, by user: String) async throws -> Bool {
        try await self.run { [self] c in try operations(c, user).markFailed(dag: id, run: run) }
    }

    func requeueDeadLetters(ids: Set<String>?, by user: String) async throws -> Int {
        try await run { [self] c in try operations(c, user).requeueDeadLetters(ids: ids) }
    }

    /// Records a web event that is not an operator action (a login) in the audit trail.
    func audit(actor: String, action: String, ok: Bool, error: String? = nil) async {
        _ = try? await run { c in
            try c.store.recordAudit(
                actor: actor, origin: c.origin, action: action, target: "", detail: "", ok: ok, error: error)
        }
    }

    /// The audit trail, newest first.
    func auditRows(limit: Int, action: String?) async throws -> [MetadataStore.AuditRow] {
        try await run { c in try c.store.auditRows(limit: limit, action: action) }
    }

    /// The operator actions on this request's connections, in the name of the web user.
    private func operations(_ c: Connections, _ user: String) -> OperatorActions {
        OperatorActions(
            registry: registry, store: { c.store }, queue: { c.queue }, actor: "web:\(user)", origin: c.origin)
    }
}

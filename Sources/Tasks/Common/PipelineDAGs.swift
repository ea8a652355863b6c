import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The six DAGs of the original, with the same names and dependencies: three ingestions (b2b,
/// ip2geo, weblog) and three reports that wait for them (same logical date).
public enum PipelineDAGs {
    /// The ingestion DAGs, in the order their runs are shown (etlctl summary, the loads page).
    public static let ingestions = ["b2b", "ip2geo", "weblog"]
    /// The six DAGs: the ingestions, then one report DAG per report (named as the report).
    public static var names: [String] { ingestions + Reports.all.map(\.name) }

    public static func dags(settings s: PipelineSettings) throws -> [DAG] {
        let start = Date(timeIntervalSince1970: 1_704_067_200)  // 2024-01-01
        let daily = try s.schedule()
        let retry = Backoff(base: 10, cap: 300, jitter: 0.3)
        // Two hours is far beyond a large run here (10,000,000 log lines load in about a minute), so
        // only a stuck task reaches it.
        func task(
            _ id: String, _ op: String, _ up: [String] = [], args: [String: String] = [:], retries: Int = 2
        ) -> TaskSpec {
            TaskSpec(
                id, operation: op, upstream: up, arguments: args, retries: retries, retryBackoff: retry, timeout: 7200)
        }
        let parts = (0..<s.weblogParts).map { "load_part_\($0)" }
        return [
            try DAG(
                "b2b", schedule: daily, startDate: start, tags: ["ingestion"],
                tasks: [
                    task("create_tables", "pipelines.create_tables"),
                    task("generate_orders", "b2b.generate_orders", ["create_tables"]),
                    task("load_tables", "b2b.load", ["generate_orders"]),
                ]),
            try DAG(
                "ip2geo", schedule: daily, startDate: start, tags: ["ingestion"],
                tasks: [
                    task("create_tables", "pipelines.create_tables"),
                    task("load_ip2geo", "ip2geo.load", ["create_tables"]),
                ]),
            try DAG(
                "weblog", schedule: daily, startDate: start, tags: ["ingestion"],
                tasks: [
                    task("create_tables", "pipelines.create_tables"),
                    task("generate_traces", "weblog.generate", ["create_tables"]),
                    task("register_files", "weblog.register", ["generate_traces"]),
                ]
                    + parts.enumerated().map { i, p in
                        task(p, "weblog.load_part", ["register_files"], args: ["part": String(i)], retries: 5)
                    }
                    + [task("finalize", "weblog.finalize", parts)]),
            try DAG(
                "monthly-sales", schedule: daily, startDate: start, tags: ["report"], upstreamDAGs: ["b2b"],
                tasks: [
                    task("report", "report", args: ["report": "monthly-sales"])
                ]),
            try DAG(
                "popular-devices", schedule: daily, startDate: start, tags: ["report"], upstreamDAGs: ["weblog"],
                tasks: [
                    task("report", "report", args: ["report": "popular-devices"])
                ]),
            try DAG(
                "popular-products", schedule: daily, startDate: start, tags: ["report"],
                upstreamDAGs: ["weblog", "ip2geo", "b2b"],
                tasks: [
                    task("report", "report", args: ["report": "popular-products"])
                ]),
        ]
    }

    static func logicalDay(_ ctx: TaskContext) throws -> Day {
        guard let d = Day(ctx.message.logicalDate) else {
            throw PipelineError("logical date \(ctx.message.logicalDate) is not a date")
        }
        return d
    }

    public static func operations(settings s: PipelineSettings, environment env: Environment) -> [String: TaskOperation]
    {
        /// A connection of the task's own, committing on its own (load metadata, chunked loads).
        @Sendable func connect() throws -> PostgresConnection {
            try PostgresConnection(config: PostgresConfig(environment: env))
        }
        return [
            "pipelines.create_tables": { ctx in
                try PipelineSchemas.ensure(ctx.pg, s)
                ctx.log("schemas \(s.datalake), \(s.loads), \(s.datamart) are up to date with \(s.sourcesDir)/ddl")
            },
            "b2b.generate_orders": { ctx in
                guard s.orders > 0 else {
                    ctx.log("ETL_ORDERS=0: no orders generated; loading \(s.generatedDir)/orders.csv as it is")
                    return
                }
                let day = try logicalDay(ctx)
                let r = try OrdersGenerator.generate(
                    orders: s.orders, date: day, seed: s.seed &+ UInt64(day.daysSince1970),
                    b2bDir: s.b2bDir, outDir: s.generatedDir)
                ctx.log("generated \(r.orders) orders with \(r.lines) sales lines into \(s.generatedDir)")
            },
            "b2b.load": { ctx in
                let meta = try connect()
                defer { meta.close() }
                let results = try B2B.load(
                    tx: ctx.pg, meta: meta, settings: s, runID: ctx.message.runID,
                    logicalDate: ctx.message.logicalDate, log: ctx.log)
                ctx.log("b2b loaded: \(results.map { "\($0.table) \($0.loaded)/\($0.read)" }.joined(separator: ", "))")
            },
            "ip2geo.load": { ctx in
                let meta = try connect()
                defer { meta.close() }
                let r = try IP2Geo.load(
                    tx: ctx.pg, meta: meta, settings: s, runID: ctx.message.runID, logicalDate: ctx.message.logicalDate)
                ctx.log("ip2geo: read \(r.read), loaded \(r.loaded), rejected \(r.rejected)")
            },
            "weblog.generate": { ctx in
                guard s.weblogLines > 0 else {
                    ctx.log("ETL_WEBLOG_LINES=0: no traces generated; loading what is in \(s.weblogDir)")
                    return
                }
                let day = try logicalDay(ctx)
                let end = day.epochSeconds + 86_400
                let path = "\(s.weblogDir)/\(WeblogGenerator.fileName(end: end))"
                if FileManager.default.fileExists(atPath: path) {
                    ctx.log("\(path) exists already (generated by an earlier attempt or run); not generating it again")
                    return
                }
                let g = try WeblogGenerator(
                    options: .init(lines: s.weblogLines, seed: s.seed &+ UInt64(day.daysSince1970), end: end),
                    b2bDir: s.b2bDir, ip2geoCSV: "\(s.sourcesDir)/data/ip2geo.csv")
                let r = try g.write(to: s.weblogDir)
                ctx.log("generated \(r.lines) lines (\(r.bytes) bytes) into \(r.path)")
            },
            "weblog.register": { ctx in
                let pg = try connect()
                defer { pg.close() }
                let r = try WeblogLoad.register(
                    pg: pg, settings: s, runID: ctx.message.runID, logicalDate: ctx.message.logicalDate, log: ctx.log)
                ctx.log(
                    "\(r.newFiles.count) new file(s) in \(r.ranges) range(s); \(r.alreadyKnown.count) already in the ledger"
                )
            },
            "weblog.load_part": { ctx in
                let pg = try connect()
                defer { pg.close() }
                let r = try WeblogLoad.loadPart(
                    pg: pg, settings: s, owner: "run \(ctx.message.runID)/\(ctx.message.task)",
                    checkDeadline: ctx.checkDeadline, log: ctx.log)
                ctx.log("loaded \(r.ranges) range(s): read \(r.read), loaded \(r.loaded), rejected \(r.rejected)")
            },
            "weblog.finalize": { ctx in
                let pg = try connect()
                defer { pg.close() }
                let r = try WeblogLoad.finalize(pg: pg, settings: s, runID: ctx.message.runID)
                for f in r.files { ctx.log("\(f.name): read \(f.read), loaded \(f.loaded), rejected \(f.rejected)") }
                if r.unfinishedOwn > 0 {
                    throw PipelineError(
                        "\(r.unfinishedOwn) file(s) this run registered are not fully loaded yet (another run's loader may hold ranges); this task retries, and clearing the load_part tasks resumes them"
                    )
                }
                if r.unfinished > 0 { ctx.log("\(r.unfinished) file(s) are still being loaded by another run") }
            },
            "report": { ctx in
                let name = ctx.message.arguments["report"] ?? ""
                guard let report = Reports.all.first(where: { $0.name == name }) else {
                    throw PipelineError(
                        "unknown report \(name); expected one of \(Reports.all.map(\.name).joined(separator: ", "))")
                }
                let out = try Reports.run(report, date: try logicalDay(ctx), tx: ctx.pg, settings: s)
                ctx.log("\(name): \(out.rows.count) rows into \(s.datamart).\(report.table) and \(out.path)")
            },
        ]
    }
}

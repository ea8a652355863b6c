import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

extension ETLCtl {
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate data: orders and sales, access-log traces, or a larger B2B platform.",
            subcommands: [Orders.self, Weblog.self, B2BData.self]
        )

        struct Orders: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Write orders.csv and sales.csv for the 12 months before a date.",
                discussion: """
                    Orders are placed by the companies of ETL_B2B_DIR (default sources/data) for its customers, \
                    with products and prices from the buying company's catalog. Deterministic under --seed. Example:
                      etlctl generate orders --orders 100000 --date 2024-06-01 --seed 7
                    """
            )
            @Option(name: .long, help: "How many orders.") var orders: Int = 10_000
            @Option(help: "The date whose previous 12 calendar months the orders cover (YYYY-MM-DD; default today).")
            var date: String?
            @Option(help: "Random seed: the same seed and arguments give the same files.") var seed: UInt64 = 42
            @Option(help: "Output folder (default ETL_GENERATED_DIR, or sources/generated).") var out: String?

            func validate() throws {
                if orders < 1 { throw ValidationError("--orders must be at least 1, e.g. --orders 1000") }
            }

            func run() throws {
                let s = try settings()
                let day = try day(date)
                let dir = out ?? s.generatedDir
                let bar = ProgressBar(label: "orders", total: Int64(orders))
                let r = try failing {
                    try OrdersGenerator.generate(
                        orders: orders, date: day, seed: seed, b2bDir: s.b2bDir, outDir: dir, progress: bar)
                }
                print("wrote \(r.orders) orders and \(r.lines) sales lines to \(dir)/orders.csv and \(dir)/sales.csv")
            }
        }

        struct Weblog: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Write an access log in Apache combined format to apache-logs/access_log_<timestamp>.log.",
                discussion: """
                    Users are the customers of ETL_B2B_DIR; each keeps IPs from its country's ip2geo ranges. \
                    --bad-rate replaces that share of lines with malformed ones. --agents uap-tests draws every \
                    line's user agent from uap-core's test strings (43,000 distinct ones). Example:
                      etlctl generate weblog -n 1000000 --bad-rate 0.001 --seed 7
                    """
            )
            @Option(name: .short, help: "How many lines.") var n: Int = 100_000
            @Option(help: "Random seed.") var seed: UInt64 = 42
            @Option(help: "Share of malformed lines, 0…1.") var badRate: Double = 0
            @Option(help: "The log's last instant, YYYY-MM-DD (midnight UTC) or 'now'.") var end: String = "now"
            @Option(help: "User agents: builtin (real browsers, weighted), uap-tests, or a file with one per line.")
            var agents: String = "builtin"
            @Option(help: "Output folder (default ETL_WEBLOG_DIR, or apache-logs).") var out: String?

            func validate() throws {
                if n < 1 { throw ValidationError("-n must be at least 1, e.g. -n 100000") }
                if !(0...1).contains(badRate) {
                    throw ValidationError("--bad-rate is a share between 0 and 1, e.g. --bad-rate 0.01")
                }
            }

            func run() throws {
                let s = try settings()
                let endSeconds: Int64 = end == "now" ? Int64(Date().timeIntervalSince1970) : try day(end).epochSeconds
                let pool: [String] = try failing {
                    switch agents {
                    case "builtin": return []
                    case "uap-tests": return try WeblogGenerator.uapTestAgents()
                    default:
                        guard let text = try? String(contentsOfFile: agents, encoding: .utf8) else {
                            throw PipelineError(
                                "cannot read --agents \(agents): give builtin, uap-tests or a file with one user agent "
                                    + "per line"
                            )
                        }
                        return text.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
                    }
                }
                let g = try failing {
                    try WeblogGenerator(
                        options: .init(lines: n, seed: seed, end: endSeconds, badRate: badRate, agents: pool),
                        b2bDir: s.b2bDir, ip2geoCSV: "\(s.sourcesDir)/data/ip2geo.csv")
                }
                let started = monotonicSeconds()
                let r = try failing {
                    try g.write(to: out ?? s.weblogDir, progress: ProgressBar(label: "lines", total: Int64(n)))
                }
                let secs = monotonicSeconds() - started
                print(
                    "wrote \(r.lines) lines (\(r.badLines) malformed, \(r.bytes) bytes) to \(r.path) in "
                        + "\(String(format: "%.2f", secs)) s, \(Int(Double(r.lines) / max(secs, 1e-9))) lines/s"
                )
            }
        }

        struct B2BData: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "b2b",
                abstract: "Write a larger B2B platform (company, product, inventory, customer CSVs) for large runs.",
                discussion: """
                    Point ETL_B2B_DIR at the output folder to load it instead of the small hand-made one. Example:
                      etlctl generate b2b --companies 5000 --customers 2000000 --out sources/generated/b2b
                      ETL_B2B_DIR=sources/generated/b2b etlctl dags trigger b2b --wait
                    """
            )
            @Option(help: "How many companies (a fifth of them suppliers).") var companies: Int = 2_000
            @Option(help: "How many products.") var products: Int = 20_000
            @Option(help: "How many customers.") var customers: Int = 100_000
            @Option(help: "Random seed.") var seed: UInt64 = 42
            @Option(help: "Output folder.") var out: String = "sources/generated/b2b"

            func validate() throws {
                if companies < 5 || products < 1 || customers < 1 {
                    throw ValidationError(
                        "use at least 5 companies, 1 product and 1 customer, e.g. --companies 1000 --customers 100000")
                }
            }

            func run() throws {
                let r = try failing {
                    try B2BScaler.write(
                        companies: companies, products: products, customers: customers, seed: seed, to: out)
                }
                print("wrote \(r) to \(out); load it with ETL_B2B_DIR=\(out)")
            }
        }
    }

    struct WeblogCmd: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "weblog",
            abstract: "Inspect access logs.",
            subcommands: [Check.self]
        )

        struct Check: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Parse a log file without loading it: what would be loaded and what rejected, and why.",
                discussion: """
                    Prints each rejected line with its number and reason, then totals and the top devices and \
                    countries. With --json, one object per line of the file. Example:
                      etlctl weblog check apache-logs/access_log_20240601T000000.log
                    """
            )
            @Argument(help: "The access-log file.") var file: String
            @Flag(help: "One JSON object per line of the file.") var json = false

            func run() throws {
                let s = try settings()
                guard FileManager.default.fileExists(atPath: file) else {
                    throw fail(
                        "no file \(file). Fix: give the path of an access log, e.g. apache-logs/access_log_*.log")
                }
                let rules = try failing { try DeviceRules.shared(path: s.uapRegexes) }
                var e = WeblogEnricher(
                    rules: rules, ranges: try failing { try WeblogEnricher.ranges(pg: nil, settings: s) },
                    cacheSize: s.deviceCache)
                var number: Int64 = 0
                var good: Int64 = 0
                var bad: Int64 = 0
                var devices: [String: Int] = [:]
                var countries: [String: Int] = [:]
                try failing {
                    try LineReader(path: file).forEachLine { bytes, _, cut in
                        number += 1
                        switch e.enrich(bytes, cut: cut) {
                        case .success(let r):
                            good += 1
                            devices[r.device, default: 0] += 1
                            countries[r.country ?? "-", default: 0] += 1
                            if json {
                                Output.json([
                                    "line": number, "load": true, "ip": r.record.clientIP,
                                    "user": nullable(r.record.user),
                                    "time": r.timestamp, "request": nullable(r.record.path ?? r.record.rawRequest),
                                    "status": r.record.status, "device": r.device, "os": r.os,
                                    "country": nullable(r.country),
                                ])
                            }
                        case .failure(let why):
                            bad += 1
                            let raw = Rejection(line: number, raw: bytes, reason: why.reason).raw
                            if json {
                                Output.json(["line": number, "load": false, "reason": why.reason, "raw": raw])
                            } else {
                                print("line \(number): rejected: \(why.reason)")
                            }
                        }
                        return true
                    }
                }
                if !json {
                    print("\(file): \(number) lines; would load \(good), reject \(bad)")
                    let top = { (d: [String: Int]) in
                        d.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(5).map {
                            "\($0.key) \($0.value)"
                        }.joined(separator: ", ")
                    }
                    print("devices: \(top(devices))")
                    print("countries: \(top(countries))")
                }
            }
        }
    }

    struct Loads: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load metadata: when each load started, broke and finished, with row counts; and rejected rows.",
            subcommands: [List.self, Rejects.self]
        )

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "List loads, newest first.",
                discussion: "Example:\n  etlctl loads list --pipeline weblog --limit 20"
            )
            @Option(help: ArgumentHelp("Only this pipeline (\(PipelineDAGs.ingestions.joined(separator: ", ")))."))
            var pipeline: String?
            @Option(help: "How many loads.") var limit: Int = 50
            @Flag(help: "Print JSON.") var json = false

            func run() throws {
                let s = try settings()
                let ops = try Context().operations()
                let rows = try failing { try ops.loads(pipeline: pipeline, limit: limit, settings: s) }
                if json {
                    Output.encoded(rows)
                    return
                }
                if rows.isEmpty {
                    print(LoadQueries.emptyMessage(pipeline: pipeline))
                    return
                }
                Output.table(
                    [
                        "ID", "PIPELINE", "SOURCE", "STATE", "STARTED", "BROKE", "FINISHED", "READ", "LOADED",
                        "REJECTED", "ERROR",
                    ],
                    rows.map { r in
                        [
                            String(r.id), r.pipeline, r.source, r.state, Output.time(r.startedAt),
                            Output.time(r.brokeAt), Output.time(r.finishedAt),
                            String(r.rowsRead), String(r.rowsLoaded), String(r.rowsRejected),
                            String(r.error.prefix(60)),
                        ]
                    })
            }
        }

        struct Rejects: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "List the rows a load rejected, with their line and reason.",
                discussion: "Example:\n  etlctl loads rejects 12 --limit 100"
            )
            @Argument(help: "The load id (etlctl loads list).") var load: Int64
            @Option(help: "How many rows.") var limit: Int = 100
            @Flag(help: "Print JSON.") var json = false

            func run() throws {
                let s = try settings()
                let ops = try Context().operations()
                let rows = try failing { try ops.rejects(load: load, limit: limit, settings: s) }
                if json {
                    Output.encoded(rows)
                    return
                }
                if rows.isEmpty {
                    print("load \(load) rejected nothing")
                    return
                }
                Output.table(
                    ["SOURCE", "LINE", "REASON", "RAW"],
                    rows.map { [$0.source, String($0.line), $0.reason, String($0.raw.prefix(80))] })
            }
        }
    }
}

func settings() throws -> PipelineSettings {
    let env = try failing { try Environment.load() }
    return try failing { try PipelineSettings(environment: env) }
}

/// `YYYY-MM-DD` (today when nil), or a one-line error with the fix.
func day(_ text: String?) throws -> Day {
    guard let text else { return Day.today() }
    guard let d = Day(strict: text) else {
        throw fail("'\(shown(text))' is not a date. Fix: write it as YYYY-MM-DD, e.g. --date 2024-05-01")
    }
    return d
}

func nullable(_ s: String?) -> Any { s.map { $0 as Any } ?? NSNull() }

extension ETLCtl {
    struct Summary: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "What the six DAGs did for a date: each run's state and duration, rows loaded and rejected, "
                + "the reports.",
            discussion: "Example:\n  etlctl summary --date 2024-06-01"
        )
        @Option(help: "Logical date, YYYY-MM-DD (default: today).") var date: String?
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let when = try day(date)
            let ops = try Context().operations()
            let s = try settings()
            let summary = try failing { try ops.summary(day: when, settings: s) }
            if json {
                Output.encoded(summary)
                return
            }
            print("DAG runs for \(when):")
            Output.table(
                ["DAG", "RUN", "STATE", "DURATION"],
                summary.runs.map { r in
                    [
                        r.dag, r.run.map(String.init) ?? "-", r.state,
                        r.seconds.map { String(format: "%.1fs", $0) } ?? "-",
                    ]
                })
            print(
                "\nFinished loads of these runs (rows read = loaded + rejected), and loads that broke "
                    + "(retried attempts) or still run:"
            )
            Output.table(
                ["PIPELINE", "FINISHED", "READ", "LOADED", "REJECTED", "BROKEN", "RUNNING"],
                summary.loads.map { l in
                    [
                        l.pipeline, "\(l.loads)", "\(l.read)", "\(l.loaded)", "\(l.rejected)", "\(l.broken)",
                        "\(l.running)",
                    ]
                })
            print("\nReports:")
            for r in summary.reports { print("  \(r.report): \(r.path)\(r.exists ? "" : "  (not written)")") }
        }
    }
}

extension ETLCtl {
    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or upgrade the metadata tables and the pipelines' schemas, then exit.",
            discussion: """
                Safe to run any number of times, also while schedulers and workers run (the compose file's \
                one-shot migrate service runs it before they start). Example:
                  etlctl migrate
                """
        )
        func run() throws {
            let ctx = try Context()
            // metadata migrations and the pipelines' schemas, then the DAGs registered
            _ = try ctx.store(forceSetup: true)
            let s = try settings()
            print(
                "migrated: metadata schema \(ctx.schema) and \(ctx.registry.dags.count) DAGs; "
                    + "data schemas \(s.datalake), \(s.loads), \(s.datamart)"
            )
        }
    }
}

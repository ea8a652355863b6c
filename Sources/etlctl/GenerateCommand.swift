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
                abstract: "Export the platform's days (orders, sales, dimension changes) up to a date.",
                discussion: """
                    Writes one folder per day, day=YYYY-MM-DD, from ETL_HISTORY_START (default 2025-01-01) to --date \
                    into ETL_B2B_EXPORT_DIR (default sources/generated/exports): the day's orders and sales, and the \
                    companies, products, catalog rows and customers new or changed that day. The base CSVs of \
                    ETL_B2B_DIR are the platform on the first day. Days already exported are left as they are. \
                    Deterministic: a day's content depends on --seed and the day only. Example:
                      etlctl generate orders --orders 1400 --date 2026-11-30 --seed 7
                    """
            )
            @Option(name: .long, help: "Orders per day (default ETL_ORDERS, or 20).") var orders: Int?
            @Option(help: "The last day to export (YYYY-MM-DD; default yesterday).") var date: String?
            @Option(help: "Random seed (default ETL_SEED): the same seed and arguments give the same files.")
            var seed: UInt64?
            @Option(help: "Output folder (default ETL_B2B_EXPORT_DIR, or sources/generated/exports).") var out: String?

            func validate() throws {
                if let orders, orders < 0 || orders > PlatformHistory.maxOrdersPerDay {
                    throw ValidationError(
                        "--orders must be between 0 and \(PlatformHistory.maxOrdersPerDay) per day, e.g. --orders 100")
                }
            }

            func run() throws {
                var s = try settings()
                let last = try date.map { try day($0) } ?? Day(daysSince1970: Day.today().daysSince1970 - 1)
                if let out { s.exportDir = out }
                // The DAG's own settings by default, so that what is exported by hand continues the
                // history the b2b DAG exports.
                let (orders, seed) = (self.orders ?? s.orders, self.seed ?? s.seed)
                let days = max(1, last.daysSince1970 - s.historyStart.daysSince1970 + 1)
                let bar = ProgressBar(label: "orders", total: Int64(orders * days))
                let r = try failing {
                    try PlatformHistory.export(upTo: last, ordersPerDay: orders, seed: seed, settings: s, progress: bar)
                }
                let span = "\(r.first.map(\.description) ?? "none new")..\(r.last.map(\.description) ?? "")"
                print(
                    "wrote \(r.days) day(s) (\(span)): "
                        + "\(r.orders) orders and \(r.lines) sales lines into \(s.exportDir)")
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
}

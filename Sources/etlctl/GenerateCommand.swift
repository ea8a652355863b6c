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
}

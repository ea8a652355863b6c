import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Access-log traces in Apache combined format. Users are the platform's customer accounts; each
/// user keeps one to three IPs drawn from the ip2geo ranges of the user's country and one or two
/// devices; sessions visit the home page, log in (`POST /login`, sometimes failing with 401),
/// browse product pages, fill a cart and check out. Anonymous visitors browse without logging in.
/// `badRate` replaces that share of lines with malformed ones (each kind the loader must reject).
public struct WeblogGenerator {
    public struct Options: Sendable {
        public var lines: Int
        public var seed: UInt64
        /// The log covers the 24 hours before this instant (seconds since 1970).
        public var end: Int64
        public var badRate: Double
        /// User agents to draw from; empty = the built-in list of real browsers.
        public var agents: [String]
        public init(lines: Int, seed: UInt64, end: Int64, badRate: Double = 0, agents: [String] = []) {
            self.lines = lines
            self.seed = seed
            self.end = end
            self.badRate = badRate
            self.agents = agents
        }
    }

    public struct Summary: Sendable {
        public let path: String
        public let lines: Int
        public let badLines: Int
        public let bytes: Int64
    }

    /// Real user agents: desktops (Windows, Mac, Linux, Chromebook), phones and tablets, with
    /// weights roughly like a B2B shop's traffic.
    public static let builtInAgents: [(agent: String, weight: Int)] = [
        (
            """
            Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 \
            Safari/537.36
            """,
            30
        ),
        (
            """
            Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 \
            Safari/537.36 Edg/119.0.2151.97
            """,
            10
        ),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0", 6),
        (
            """
            Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 \
            Safari/605.1.15
            """,
            12
        ),
        (
            """
            Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 \
            Safari/537.36
            """,
            8
        ),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", 3),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", 2),
        (
            """
            Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 \
            Safari/537.36
            """,
            2
        ),
        (
            """
            Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
            Version/17.2 Mobile/15E148 Safari/604.1
            """,
            16
        ),
        (
            """
            Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
            CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1
            """,
            5
        ),
        (
            """
            Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 \
            Mobile Safari/537.36
            """,
            7
        ),
        (
            """
            Mozilla/5.0 (Linux; Android 13; SM-G991B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 \
            Mobile Safari/537.36
            """,
            8
        ),
        (
            """
            Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.193 \
            Mobile Safari/537.36
            """,
            5
        ),
        (
            """
            Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 \
            Mobile Safari/537.36
            """,
            4
        ),
        (
            """
            Mozilla/5.0 (Linux; Android 13; 2201117TG) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.163 \
            Mobile Safari/537.36
            """,
            4
        ),
        (
            """
            Mozilla/5.0 (Linux; Android 12; moto g(60)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.43 \
            Mobile Safari/537.36
            """,
            3
        ),
        (
            """
            Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 \
            Mobile/15E148 Safari/604.1
            """,
            6
        ),
        (
            """
            Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 \
            Safari/537.36
            """,
            3
        ),
        (
            """
            Mozilla/5.0 (Linux; Android 12; Lenovo TB-X606F) AppleWebKit/537.36 (KHTML, like Gecko) \
            Chrome/119.0.6045.163 Safari/537.36
            """,
            1
        ),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 1),
    ]

    /// The file name for a log ending at `end`: `access_log_<YYYYMMDDTHHMMSS>.log`.
    public static func fileName(end: Int64) -> String {
        let day = Day(daysSince1970: Int(end / 86_400))
        let s = Int(end % 86_400)
        return """
            access_log_\(day.year)\(two(day.month))\(two(day.day))T\
            \(two(s / 3600))\(two(s / 60 % 60))\(two(s % 60)).log
            """
    }

    /// Reads the user agents of uap-core's test files (for benchmarks on nearly unique agents).
    public static func uapTestAgents(folder: String = "/usr/share/uap-core") throws -> [String] {
        var all = Set<String>()
        for sub in ["tests", "test_resources"] {
            let dir = "\(folder)/\(sub)"
            for f in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where f.hasSuffix(".yaml") {
                guard let text = try? String(contentsOfFile: "\(dir)/\(f)", encoding: .utf8),
                    let sections = try? RuleFile.sections(of: text, file: f)
                else { continue }
                for (_, entries) in sections {
                    for e in entries { if let ua = e["user_agent_string"], !ua.isEmpty { all.insert(ua) } }
                }
            }
        }
        guard !all.isEmpty else {
            throw PipelineError(
                "no user agents found under \(folder)/tests: install uap-core (apt-get install uap-core)")
        }
        return all.sorted()
    }

    let options: Options
    let customers: [(user: String, country: String)]
    let ranges: IPRangeTable
    let productIDs: [Int]

    /// Reads the customers and products from `b2bDir` and the IP ranges from `ip2geoCSV`.
    public init(options: Options, b2bDir: String, ip2geoCSV: String) throws {
        self.options = options
        var known: [String: Set<String>] = [:]
        var customers: [(String, String)] = []
        var products: [Int] = []
        for spec in B2B.tables.prefix(4) where spec.table != "inventory" {
            var v = CSVValidator(spec: spec, known: known)
            try v.run(path: "\(b2bDir)/\(spec.file)") { row in
                if spec.table == "customer" { customers.append((row[5], row[4])) }
                if spec.table == "product" { products.append(Int(row[0])!) }
            }
            known = v.known
        }
        guard !customers.isEmpty, !products.isEmpty else {
            throw PipelineError("\(b2bDir) has no customers or no products to generate traffic for")
        }
        guard let text = try? String(contentsOfFile: ip2geoCSV, encoding: .utf8) else {
            throw PipelineError("cannot read \(ip2geoCSV): build it with scripts/build-ip2geo or set ETL_SOURCES_DIR")
        }
        ranges = try IPRangeTable(csv: text, file: ip2geoCSV)
        self.customers = customers
        productIDs = products
    }

    /// A session's visitor, pre-rendered: `ip - user [` and `" "agent"\n`-ready pieces.
    struct Visitor {
        var prefixes: [[UInt8]]
        var agents: [[UInt8]]
        var loggedIn: Bool
    }

    public func write(to dir: String, progress: ProgressBar? = nil) throws -> Summary {
        let name = Self.fileName(end: options.end)
        let out = try BufferedFileWriter(path: "\(dir)/\(name)")
        var rng = SeededRandom(seed: options.seed)
        // Agents, weighted.
        var agentPool: [[UInt8]] = []
        if options.agents.isEmpty {
            for (a, w) in Self.builtInAgents { for _ in 0..<w { agentPool.append(Self.escaped(a)) } }
        } else {
            agentPool = options.agents.map(Self.escaped)
        }
        let uniqueAgents = !options.agents.isEmpty
        // Visitors: every customer (1–3 IPs from the country's ranges, 1–2 devices) and a crowd of
        // anonymous visitors from anywhere.
        var visitors: [Visitor] = []
        for c in customers {
            let countryRanges = ranges.ranges(of: c.country)
            var prefixes: [[UInt8]] = []
            for _ in 0..<(1 + rng.below(3)) {
                let ip = countryRanges.isEmpty ? UInt32(truncatingIfNeeded: rng.next()) : Self.pick(countryRanges, &rng)
                prefixes.append(Array("\(IPRangeTable.dottedQuad(ip)) - \(c.user) [".utf8))
            }
            let agents = (0..<(1 + rng.below(2))).map { _ in agentPool[rng.below(agentPool.count)] }
            visitors.append(Visitor(prefixes: prefixes, agents: agents, loggedIn: true))
        }
        let all = ranges.allRanges
        for _ in 0..<max(50, customers.count / 2) {
            let ip = all.isEmpty ? UInt32(truncatingIfNeeded: rng.next()) : Self.pick(all, &rng)
            visitors.append(
                Visitor(
                    prefixes: [Array("\(IPRangeTable.dottedQuad(ip)) - - [".utf8)],
                    agents: [agentPool[rng.below(agentPool.count)]], loggedIn: false))
        }
        let requests = RequestCatalog(products: productIDs)
        var clock = TimeFormatter()
        let span = 86_400.0
        let step = span / Double(max(options.lines, 1))
        var t = Double(options.end) - span
        var written = 0
        var bad = 0
        var session: [Int] = []  // remaining request kinds of the current session
        var visitor = 0
        var prefix = 0
        var agent = 0
        let buf = out
        while written < options.lines {
            if session.isEmpty {
                visitor =
                    rng.below(10) < 7 && !customers.isEmpty
                    ? rng.below(customers.count) : customers.count + rng.below(visitors.count - customers.count)
                let v = visitors[visitor]
                prefix = rng.below(v.prefixes.count)
                agent = rng.below(v.agents.count)
                session = requests.session(loggedIn: v.loggedIn, &rng)
            }
            let kind = session.removeLast()
            // Line n falls in the n-th step of the 24 hours, a quarter or three quarters into it:
            // every line is in the day before `end` (a random walk ran past midnight by minutes).
            t = Double(options.end) - span + step * (Double(written) + 0.25 + 0.5 * Double(rng.below(2)))
            let v = visitors[visitor]
            if options.badRate > 0 && rng.chance(options.badRate) {
                Self.appendBad(&buf.buffer, kind: rng.below(6), prefix: v.prefixes[prefix], time: &clock, t: Int64(t))
                bad += 1
            } else {
                buf.buffer.append(contentsOf: v.prefixes[prefix])
                clock.append(Int64(t), to: &buf.buffer)
                requests.append(kind, &buf.buffer, &rng)
                buf.buffer.append(contentsOf: uniqueAgents ? agentPool[rng.below(agentPool.count)] : v.agents[agent])
            }
            written += 1
            if buf.buffer.count >= 1 << 20 {
                try buf.flush()
                progress?.update(Int64(written))
            }
        }
        try buf.commit()
        progress?.finish()
        return Summary(path: "\(dir)/\(name)", lines: written, badLines: bad, bytes: buf.written)
    }

    static func pick(_ ranges: [ClosedRange<UInt32>], _ rng: inout SeededRandom) -> UInt32 {
        let r = ranges[rng.below(ranges.count)]
        let width = UInt64(r.upperBound - r.lowerBound) + 1
        return r.lowerBound + UInt32(rng.next() % width)
    }

    /// `"agent"\n` with `"` and `\` escaped as Apache does.
    static func escaped(_ agent: String) -> [UInt8] {
        var out: [UInt8] = [34]
        for b in agent.utf8 {
            if b == 34 || b == 92 { out.append(92) }
            if b < 32 { continue }
            out.append(b)
        }
        out.append(contentsOf: [34, 10])
        return out
    }

    /// Malformed lines, one kind per `kind` (the time piece ends with the request's opening quote).
    static func appendBad(_ b: inout [UInt8], kind: Int, prefix: [UInt8], time: inout TimeFormatter, t: Int64) {
        switch kind {
        case 0:  // cut short inside the request
            b.append(contentsOf: prefix)
            time.append(t, to: &b)
            b.append(contentsOf: Array("GET /products/1".utf8))
        case 1:  // an impossible date
            b.append(contentsOf: prefix)
            b.append(
                contentsOf: Array("32/Foo/2024:25:61:00 +0000] \"GET / HTTP/1.1\" 200 512 \"-\" \"curl/8.4.0\"".utf8))
        case 2:  // status that is not a number
            b.append(contentsOf: prefix)
            time.append(t, to: &b)
            b.append(contentsOf: Array("GET / HTTP/1.1\" OK 512 \"-\" \"curl/8.4.0\"".utf8))
        case 3:  // binary garbage
            b.append(contentsOf: [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0xFF, 0xFE, 0x80, 0x41])
        case 4:  // empty line
            break
        default:  // the user agent is missing its closing quote
            b.append(contentsOf: prefix)
            time.append(t, to: &b)
            b.append(contentsOf: Array("GET / HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0 (Windows NT 10.0".utf8))
        }
        b.append(10)
    }
}

/// `10/Oct/2000:13:55:36 +0000] "`, re-rendered only when the second changes.
struct TimeFormatter {
    private var second: Int64 = .min
    private var text: [UInt8] = []
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    mutating func append(_ t: Int64, to b: inout [UInt8]) {
        if t != second {
            second = t
            let day = Day(daysSince1970: Int(t / 86_400))
            let s = Int(t % 86_400)
            text = Array(
                """
                \(two(day.day))/\(Self.months[day.month - 1])/\(day.year):\
                \(two(s / 3600)):\(two(s / 60 % 60)):\(two(s % 60)) +0000] \"
                """.utf8)
        }
        b.append(contentsOf: text)
    }
}

/// The requests of a session, pre-rendered: `METHOD PATH HTTP/1.1" STATUS BYTES "REFERER" `.
struct RequestCatalog {
    enum Kind: Int { case home, loginPage, loginOK, loginFail, product, missing, cartAdd, cart, checkout, order }
    let productLines: [[UInt8]]
    let fixed: [[UInt8]]

    init(products: [Int]) {
        func render(_ request: String, _ status: Int, _ referer: String) -> [UInt8] {
            Array("\(request) HTTP/1.1\" \(status) ".utf8) + [0xFF] + Array(" \"\(referer)\" ".utf8)
        }
        let site = "https://b2b.example.com"
        productLines = products.map { render("GET /products/\($0)", 200, "\(site)/catalog") }
        fixed = [
            render("GET /", 200, "-"),
            render("GET /login", 200, "\(site)/"),
            render("POST /login", 200, "\(site)/login"),
            render("POST /login", 401, "\(site)/login"),
            [],
            render("GET /products/999999", 404, "\(site)/catalog"),
            render("POST /cart/items", 201, "\(site)/products"),
            render("GET /cart", 200, "\(site)/products"),
            render("POST /checkout", 302, "\(site)/cart"),
            render("GET /orders/latest", 200, "\(site)/checkout"),
        ]
    }

    /// A session's request kinds, in reverse order (popped from the end).
    func session(loggedIn: Bool, _ rng: inout SeededRandom) -> [Int] {
        var s: [Kind] = [.home]
        if loggedIn {
            s.append(.loginPage)
            if rng.chance(0.1) { s.append(.loginFail) }
            if rng.chance(0.95) {
                s.append(.loginOK)
                for _ in 0..<rng.geometric(0.3, cap: 12) { s.append(rng.chance(0.02) ? .missing : .product) }
                if rng.chance(0.4) {
                    for _ in 0..<rng.geometric(0.5, cap: 5) { s.append(.cartAdd) }
                    s.append(.cart)
                    if rng.chance(0.6) { s += [.checkout, .order] }
                }
            }
        } else {
            for _ in 0..<rng.geometric(0.4, cap: 6) { s.append(.product) }
            if rng.chance(0.2) { s.append(.loginPage) }
        }
        return s.reversed().map(\.rawValue)
    }

    /// Appends the request, status, bytes and referer; the byte count is random per line.
    func append(_ kind: Int, _ b: inout [UInt8], _ rng: inout SeededRandom) {
        let piece = kind == Kind.product.rawValue ? productLines[rng.below(productLines.count)] : fixed[kind]
        for byte in piece {
            if byte == 0xFF { appendNumber(&b, 200 + rng.below(30_000)) } else { b.append(byte) }
        }
    }

    @inline(__always) func appendNumber(_ b: inout [UInt8], _ n: Int) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0)
        var count = 0
        var x = n
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[count] = UInt8(48 + x % 10)
                x /= 10
                count += 1
            } while x > 0 && count < 6
            while count > 0 {
                count -= 1
                b.append(d[count])
            }
        }
    }
}

/// Two digits: 7 → "07".
private func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

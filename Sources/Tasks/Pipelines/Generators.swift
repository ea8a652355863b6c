import Foundation
import Shared

/// SplitMix64: small, fast and the same on every machine, so a generator's output depends only on
/// its seed and arguments.
public struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// 0 ..< n without the cost of `Int.random(in:)`'s rejection loop for small n.
    @inline(__always) public mutating func below(_ n: Int) -> Int { Int((next() >> 11) % UInt64(n)) }
    /// 1, 2, 3 ... with P(k) falling geometrically (`p` = chance to stop at each step), capped.
    public mutating func geometric(_ p: Double, cap: Int) -> Int {
        var k = 1
        while k < cap && Double(next() >> 11) / Double(1 << 53) >= p { k += 1 }
        return k
    }
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
public final class ProgressBar {
    private let total: Int64
    private let label: String
    private let enabled: Bool
    private var lastDraw = 0.0
    private let started = monotonicSeconds()

    public init(label: String, total: Int64, enabled: Bool = isatty(2) != 0) {
        self.label = label
        self.total = max(total, 1)
        self.enabled = enabled
    }

    public func update(_ done: Int64) {
        guard enabled else { return }
        let now = monotonicSeconds()
        guard now - lastDraw >= 0.1 || done >= total else { return }
        lastDraw = now
        let share = min(1, Double(done) / Double(total))
        let width = 30
        let filled = Int(share * Double(width))
        let rate = Double(done) / max(now - started, 0.001)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write("\r\(label) [\(bar)] \(Int(share * 100))% \(done)/\(total) \(Int(rate))/s ".data(using: .utf8)!)
    }

    public func finish() {
        guard enabled else { return }
        update(total)
        FileHandle.standardError.write("\n".data(using: .utf8)!)
    }
}

/// Writes bytes to a file through a large buffer; the file appears under its name only when
/// `commit` renames the temporary file, so a reader never sees half a file.
final class BufferedFileWriter {
    let path: String
    let temporary: String
    private let fd: Int32
    var buffer: [UInt8] = []
    private(set) var written: Int64 = 0

    init(path: String) throws {
        self.path = path
        temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw PipelineError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        buffer.reserveCapacity(1 << 21)
    }

    deinit { close(fd); unlink(temporary) }

    @inline(__always) func maybeFlush() throws { if buffer.count >= 1 << 20 { try flush() } }

    func flush() throws {
        try buffer.withUnsafeBytes { b in
            var off = 0
            while off < b.count {
                let n = write(fd, b.baseAddress! + off, b.count - off)
                if n <= 0 { throw PipelineError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
                off += n
            }
        }
        written += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }

    func commit() throws {
        try flush()
        guard rename(temporary, path) == 0 else { throw PipelineError("cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))") }
    }

    func append(_ s: String) { buffer.append(contentsOf: s.utf8) }
}

/// Orders and their line items over the 12 calendar months before a date's month: each order is
/// placed by a company for a customer; its products come from that company's catalog at the
/// catalog's price; basket sizes and quantities are skewed small, with some bulk lines.
public enum OrdersGenerator {
    public struct Summary: Sendable { public let orders: Int; public let lines: Int64 }

    public static func generate(orders count: Int, date: Day, seed: UInt64, b2bDir: String, outDir: String,
                                progress: ProgressBar? = nil) throws -> Summary {
        // The catalogs and customers, read with the same checks the load applies.
        var known: [String: Set<String>] = [:]
        var catalogs: [String: [(product: String, cents: Int64)]] = [:]
        var customers: [String] = []
        for spec in B2B.tables.prefix(4) {
            var v = CSVValidator(spec: spec, known: known)
            try v.run(path: "\(b2bDir)/\(spec.file)") { row in
                switch spec.table {
                case "inventory": catalogs[row[0], default: []].append((row[1], B2B.cents(row[2]) ?? 0))
                case "customer": customers.append(row[0])
                default: break
                }
            }
            known = v.known
        }
        let buyers = catalogs.keys.sorted()
        guard !buyers.isEmpty, !customers.isEmpty else {
            throw PipelineError("\(b2bDir) has no catalog (inventory.csv) or no customers (customer.csv) to generate orders from")
        }
        // The window: [first day of the month 12 months back, first day of the date's month).
        let windowStart = date.monthStart(offset: -12).epochSeconds
        let windowEnd = date.monthStart(offset: 0).epochSeconds
        var rng = SeededRandom(seed: seed)
        let orders = try BufferedFileWriter(path: "\(outDir)/orders.csv")
        let sales = try BufferedFileWriter(path: "\(outDir)/sales.csv")
        orders.append("id,company_cuit,customer_document,ordered_at\n")
        sales.append("order_id,line,product_id,quantity,unit_price,total\n")
        var lines: Int64 = 0
        for id in 1...max(count, 1) where count > 0 {
            let buyer = buyers[rng.below(buyers.count)]
            let customer = customers[rng.below(customers.count)]
            let at = windowStart + Int64(rng.below(Int(windowEnd - windowStart)))
            orders.append("\(id),\(buyer),\(CSVLine.field(customer)),\(PostgresTimestamp.format(Date(timeIntervalSince1970: Double(at))).prefix(19))\n")
            let catalog = catalogs[buyer]!
            let basket = min(rng.geometric(0.4, cap: 12), catalog.count)
            var used = Set<Int>()
            for line in 1...basket {
                var pick = rng.below(catalog.count)
                while used.contains(pick) { pick = (pick + 1) % catalog.count }
                used.insert(pick)
                var qty = rng.geometric(0.3, cap: 40)
                if rng.chance(0.05) { qty *= 10 }  // a bulk line now and then
                let item = catalog[pick]
                let total = Int64(qty) * item.cents
                sales.append("\(id),\(line),\(item.product),\(qty),\(money(item.cents)),\(money(total))\n")
                lines += 1
            }
            try orders.maybeFlush()
            try sales.maybeFlush()
            if id & 1023 == 0 { progress?.update(Int64(id)) }
        }
        try orders.commit()
        try sales.commit()
        progress?.finish()
        return Summary(orders: count, lines: lines)
    }

    static func money(_ cents: Int64) -> String {
        let c = cents % 100
        return "\(cents / 100).\(c < 10 ? "0" : "")\(c)"
    }

}

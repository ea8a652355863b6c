import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Orders and their line items over the 12 calendar months before a date's month: each order is
/// placed by a company for a customer; its products come from that company's catalog at the
/// catalog's price; basket sizes and quantities are skewed small, with some bulk lines.
public enum OrdersGenerator {
    public struct Summary: Sendable {
        public let orders: Int
        public let lines: Int64
    }

    public static func generate(
        orders count: Int, date: Day, seed: UInt64, b2bDir: String, outDir: String,
        progress: ProgressBar? = nil
    ) throws -> Summary {
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
            throw PipelineError(
                "\(b2bDir) has no catalog (inventory.csv) or no customers (customer.csv) to generate orders from")
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
            orders.append(
                """
                \(id),\(buyer),\(CSVLine.field(customer)),\
                \(PostgresTimestamp.format(Date(timeIntervalSince1970: Double(at))).prefix(19))\n
                """
            )
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

import ETLSupport
import Foundation

/// A deterministic history of the B2B platform, written as the platform would export it: one
/// folder per day, `<ETL_B2B_EXPORT_DIR>/day=YYYY-MM-DD/`, holding that day's orders and sales and the
/// dimension rows that are new or changed that day (`company.csv`, `product.csv`, `inventory.csv`,
/// `customer.csv`, in the base files' shapes) and the catalog rows removed that day
/// (`inventory_removed.csv`).
///
/// The base CSVs (`ETL_B2B_DIR`) are the platform on `ETL_HISTORY_START`. Each later day changes it a
/// little (customers move country, new customers sign up, catalog prices change, catalog rows are
/// removed and come back, now and then a product's default price or a company's name changes), by a
/// random draw seeded by `ETL_SEED` and the day alone; a day's orders are drawn from the seed and the
/// day, from the platform as it is that day. So exporting "up to D" and later "up to D+1" agree on
/// every day up to D, and no two runs write one path: a day's folder is written under a temporary
/// name and renamed into place once, and a day already exported is not written again.
public enum PlatformHistory {
    /// Order ids are `<days since 1970> * 1,000,000 + n`, so a day has at most this many orders.
    public static let maxOrdersPerDay = 999_999

    /// The export folder of `day`.
    public static func dayDir(_ day: Day, _ s: PipelineSettings) -> String { "\(s.exportDir)/day=\(day)" }

    /// The day a folder name `day=YYYY-MM-DD` stands for.
    public static func day(folder name: String) -> Day? {
        name.hasPrefix("day=") ? Day(strict: String(name.dropFirst(4))) : nil
    }

    public struct Summary: Sendable {
        /// Days written now (days exported earlier are left as they are).
        public var days = 0
        public var orders = 0
        public var lines: Int64 = 0
        public var first: Day?
        public var last: Day?
        /// Loaded days whose folders are gone (archived), not written again.
        public var archived = 0
    }

    /// Exports every day from the history's start to `last` that has no folder yet, except the days in
    /// `loaded` (the b2b ledger's): a loaded day whose folder was archived stays as it was loaded, and is
    /// not written again from today's settings (ETL_ORDERS, ETL_SEED, ETL_B2B_DIR may have changed since).
    public static func export(
        upTo last: Day, ordersPerDay: Int, seed: UInt64, settings s: PipelineSettings, loaded: Set<Day> = [],
        progress: ProgressBar? = nil
    ) throws -> Summary {
        guard ordersPerDay <= maxOrdersPerDay else {
            throw PipelineError("\(ordersPerDay) orders per day is more than \(maxOrdersPerDay): lower ETL_ORDERS")
        }
        var state = try State(b2bDir: s.b2bDir)
        guard !state.customerOrder.isEmpty, state.companyOrder.contains(where: { !state.catalog($0).isEmpty }) else {
            throw PipelineError(
                "\(s.b2bDir) has no catalog (inventory.csv) or no customers (customer.csv) to generate orders from")
        }
        try FileManager.default.createDirectory(atPath: s.exportDir, withIntermediateDirectories: true)
        var summary = Summary()
        var day = s.historyStart
        while day <= last {
            let changes = day == s.historyStart ? Changes() : state.draw(day: day, seed: seed)
            state.apply(changes)
            let dir = dayDir(day, s)
            if loaded.contains(day), !FileManager.default.fileExists(atPath: dir) {
                summary.archived += 1
            } else if !FileManager.default.fileExists(atPath: dir) {
                let (orders, lines) = try write(
                    day: day, changes: changes, state: state, orders: ordersPerDay,
                    seed: seed, to: dir)
                summary.days += 1
                summary.orders += orders
                summary.lines += lines
                summary.first = summary.first ?? day
                summary.last = day
                progress?.update(Int64(summary.orders))
            }
            day = Day(daysSince1970: day.daysSince1970 + 1)
        }
        progress?.finish()
        return summary
    }

    /// One day's dimension changes, as rows in the base files' column order.
    struct Changes {
        var companies: [[String]] = []
        var products: [[String]] = []
        var inventory: [[String]] = []
        var customers: [[String]] = []
        var inventoryRemoved: [[String]] = []
    }

    /// The platform on one day: every current row by key, in a stable order (the base files' order,
    /// then the order rows were added).
    struct State {
        var companies: [String: [String]] = [:]
        var companyOrder: [String] = []
        var products: [String: [String]] = [:]
        var productOrder: [String] = []
        var baseProducts: [String: [String]] = [:]
        var baseCompanies: [String: [String]] = [:]
        var inventory: [String: [String]] = [:]
        /// Current catalog keys (company, product), and where each is in the array.
        var inventoryKeys: [String] = []
        var inventoryIndex: [String: Int] = [:]
        var catalogs: [String: [String]] = [:]
        var removed: [String] = []
        var removedRows: [String: [String]] = [:]
        var customers: [String: [String]] = [:]
        var customerOrder: [String] = []

        init(b2bDir: String) throws {
            // Read with the same checks the load applies: rows the load would reject are not used.
            var known: [String: Set<String>] = [:]
            for spec in B2B.tables.prefix(4) {
                var v = CSVValidator(spec: spec, known: known)
                try v.run(path: "\(b2bDir)/\(spec.file)") { row in
                    switch spec.table {
                    case "company":
                        companies[row[0]] = row
                        companyOrder.append(row[0])
                    case "product":
                        products[row[0]] = row
                        productOrder.append(row[0])
                    case "inventory": addInventory(row)
                    default:
                        customers[row[0]] = row
                        customerOrder.append(row[0])
                    }
                }
                known = v.known
            }
            baseProducts = products
            baseCompanies = companies
        }

        static func key(_ row: [String]) -> String { "\(row[0])\u{1F}\(row[1])" }

        func catalog(_ company: String) -> [String] { catalogs[company] ?? [] }

        mutating func addInventory(_ row: [String]) {
            let k = Self.key(row)
            if inventory[k] == nil {
                inventoryIndex[k] = inventoryKeys.count
                inventoryKeys.append(k)
                catalogs[row[0], default: []].append(k)
            }
            inventory[k] = row
        }

        mutating func removeInventory(_ k: String) {
            guard let i = inventoryIndex[k], let row = inventory[k] else { return }
            let moved = inventoryKeys.removeLast()
            if moved != k {
                inventoryKeys[i] = moved
                inventoryIndex[moved] = i
            }
            inventoryIndex[k] = nil
            inventory[k] = nil
            catalogs[row[0]]?.removeAll { $0 == k }
            removed.append(k)
            removedRows[k] = row
        }

        mutating func apply(_ c: Changes) {
            for r in c.companies {
                if companies[r[0]] == nil { companyOrder.append(r[0]) }
                companies[r[0]] = r
            }
            for r in c.products {
                if products[r[0]] == nil { productOrder.append(r[0]) }
                products[r[0]] = r
            }
            for r in c.inventoryRemoved { removeInventory(Self.key(r)) }
            for r in c.inventory {
                let k = Self.key(r)
                if let i = removed.firstIndex(of: k) {
                    removed.remove(at: i)
                    removedRows[k] = nil
                }
                addInventory(r)
            }
            for r in c.customers {
                if customers[r[0]] == nil { customerOrder.append(r[0]) }
                customers[r[0]] = r
            }
        }

        /// The day's changes: a function of the seed, the day and the platform that day.
        func draw(day: Day, seed: UInt64) -> Changes {
            var rng = SeededRandom(seed: seed ^ (UInt64(day.daysSince1970) &* 0x9E37_79B9_7F4A_7C15) ^ 0xC0FF_EE)
            var c = Changes()
            func country() -> String {
                let total = B2BScaler.countries.reduce(0) { $0 + $1.weight }
                var w = rng.below(total)
                for (code, weight) in B2BScaler.countries {
                    if w < weight { return code }
                    w -= weight
                }
                return B2BScaler.countries[0].code
            }
            if rng.chance(0.3), !customerOrder.isEmpty {  // a customer moves
                var row = customers[customerOrder[rng.below(customerOrder.count)]]!
                let to = country()
                if to != row[4] {
                    row[4] = to
                    row[3] = "Street \(rng.below(9999)), City \(rng.below(500)) (\(to))"
                    c.customers.append(row)
                }
            }
            if rng.chance(0.35) {  // a customer signs up
                let code = country()
                let birth = Day(daysSince1970: -7300 + rng.below(14_600))
                c.customers.append([
                    "\(code)-\(60_000_000 + day.daysSince1970)",
                    "\(B2BScaler.first[rng.below(B2BScaler.first.count)]) "
                        + B2BScaler.last[rng.below(B2BScaler.last.count)],
                    birth.description, "Street \(rng.below(9999)), City \(rng.below(500))", code,
                    "client.\(day.daysSince1970)",
                ])
            }
            var touched = Set<String>()
            for _ in 0..<2 where !inventoryKeys.isEmpty {  // catalog prices change
                let k = inventoryKeys[rng.below(inventoryKeys.count)]
                var row = inventory[k]!
                let base = B2B.cents(products[row[1]]?[3] ?? row[2]) ?? 0
                let price = PlatformHistory.money(base * Int64(85 + rng.below(36)) / 100)
                if price != row[2], touched.insert(k).inserted {
                    row[2] = price
                    c.inventory.append(row)
                }
            }
            if rng.chance(0.1), !inventoryKeys.isEmpty {  // a catalog row is removed
                let k = inventoryKeys[rng.below(inventoryKeys.count)]
                let row = inventory[k]!
                if catalog(row[0]).count > 3, !touched.contains(k) {
                    c.inventoryRemoved.append([row[0], row[1]])
                    touched.insert(k)
                }
            }
            if rng.chance(0.1), !removed.isEmpty {  // and one comes back
                let k = removed[rng.below(removed.count)]
                var row = removedRows[k]!
                row[2] = products[row[1]]?[3] ?? row[2]
                row[3] = String(100 + rng.below(900))
                if touched.insert(k).inserted { c.inventory.append(row) }
            }
            if rng.chance(0.05), !productOrder.isEmpty {  // a product's default price changes
                let id = productOrder[rng.below(productOrder.count)]
                var row = products[id]!
                let base = B2B.cents(baseProducts[id]?[3] ?? row[3]) ?? 0
                let price = PlatformHistory.money(base * Int64(90 + rng.below(31)) / 100)
                if price != row[3] {
                    row[3] = price
                    c.products.append(row)
                }
            }
            if rng.chance(0.02), !companyOrder.isEmpty {  // a company renames itself
                let cuit = companyOrder[rng.below(companyOrder.count)]
                var row = companies[cuit]!
                let name = "\(baseCompanies[cuit]?[1] ?? row[1]) (\(day.year))"
                if name != row[1] {
                    row[1] = name
                    c.companies.append(row)
                }
            }
            return c
        }
    }

    /// Writes one day's folder (under a temporary name, renamed into place).
    static func write(
        day: Day, changes: Changes, state: State, orders count: Int, seed: UInt64, to dir: String
    ) throws -> (Int, Int64) {
        let parent = (dir as NSString).deletingLastPathComponent
        let name = (dir as NSString).lastPathComponent
        let temporary = "\(parent)/.\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        func csv(_ file: String, _ header: [String], _ rows: [[String]]) throws {
            guard !rows.isEmpty else { return }
            let w = try BufferedFileWriter(path: "\(temporary)/\(file)")
            w.append(header.joined(separator: ",") + "\n")
            for r in rows { w.append(r.map(CSVLine.field).joined(separator: ",") + "\n") }
            try w.commit()
        }
        let specs = Dictionary(uniqueKeysWithValues: B2B.tables.map { ($0.table, $0.columns.map(\.name)) })
        try csv("company.csv", specs["company"]!, changes.companies)
        try csv("product.csv", specs["product"]!, changes.products)
        try csv("inventory.csv", specs["inventory"]!, changes.inventory)
        try csv("customer.csv", specs["customer"]!, changes.customers)
        try csv("inventory_removed.csv", B2B.inventoryRemoved.columns.map(\.name), changes.inventoryRemoved)

        var rng = SeededRandom(seed: seed &+ UInt64(day.daysSince1970))
        let buyers = state.companyOrder.filter { !state.catalog($0).isEmpty }
        let customers = state.customerOrder
        let orders = try BufferedFileWriter(path: "\(temporary)/orders.csv")
        let sales = try BufferedFileWriter(path: "\(temporary)/sales.csv")
        orders.append("id,company_cuit,customer_document,ordered_at\n")
        sales.append("order_id,line,product_id,quantity,unit_price,total\n")
        var lines: Int64 = 0
        let firstID = Int64(day.daysSince1970) * 1_000_000
        for n in 0..<count {
            let id = firstID + Int64(n + 1)
            let buyer = buyers[rng.below(buyers.count)]
            let customer = customers[rng.below(customers.count)]
            let at = day.epochSeconds + Int64(rng.below(86_400))
            orders.append(
                """
                \(id),\(buyer),\(CSVLine.field(customer)),\
                \(PostgresTimestamp.format(Date(timeIntervalSince1970: Double(at))).prefix(19))\n
                """
            )
            let catalog = state.catalog(buyer)
            let basket = min(rng.geometric(0.4, cap: 12), catalog.count)
            var used = Set<Int>()
            for line in 1...basket {
                var pick = rng.below(catalog.count)
                while used.contains(pick) { pick = (pick + 1) % catalog.count }
                used.insert(pick)
                var qty = rng.geometric(0.3, cap: 40)
                if rng.chance(0.05) { qty *= 10 }  // a bulk line now and then
                let item = state.inventory[catalog[pick]]!
                let cents = B2B.cents(item[2]) ?? 0
                sales.append("\(id),\(line),\(item[1]),\(qty),\(money(cents)),\(money(Int64(qty) * cents))\n")
                lines += 1
            }
            try orders.maybeFlush()
            try sales.maybeFlush()
        }
        try orders.commit()
        try sales.commit()
        // Into place once: a folder another writer put there first (the same content) wins.
        if rename(temporary, dir) != 0 {
            guard FileManager.default.fileExists(atPath: dir) else {
                throw PipelineError("cannot rename \(temporary) to \(dir): \(String(cString: strerror(errno)))")
            }
            return (0, 0)
        }
        return (count, lines)
    }

    static func money(_ cents: Int64) -> String {
        let c = cents % 100
        return "\(cents / 100).\(c < 10 ? "0" : "")\(c)"
    }
}

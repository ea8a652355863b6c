import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The B2B platform's sources: the base CSVs (company, product, inventory, customer: the platform
/// on the history's first day) and the daily exports (orders, sales, and dimension rows changed
/// that day), checked row by row. `B2BLoad` loads them; `PlatformHistory` generates the exports.
public enum B2B {
    /// NN-NNNNNNNN-N.
    static let cuit = CSVColumn.Kind.text(
        valid: { u in
            u.count == 13 && u[2] == 45 && u[11] == 45
                && u.enumerated().allSatisfy { i, c in i == 2 || i == 11 || (c >= 48 && c <= 57) }
        }, what: "a CUIT like 30-71234567-1")
    static let name = CSVColumn.Kind.text(valid: nil, what: "")
    static let money = CSVColumn.Kind.decimal(scale: 2, digits: 12)

    /// In load order: every reference points at a table loaded before it. Only referenced tables
    /// keep their accepted keys in memory.
    public static let tables: [CSVTableSpec] = {
        var specs = unmarked
        // The catalog is referenced by the removals of a day's export.
        let referenced = Set(specs.flatMap { $0.references.map(\.table) }).union(["inventory"])
        for i in specs.indices { specs[i].isReferenced = referenced.contains(specs[i].table) }
        return specs
    }()

    static let unmarked: [CSVTableSpec] = [
        CSVTableSpec(
            table: "company", file: "company.csv",
            columns: [
                CSVColumn("cuit", cuit), CSVColumn("name", name), CSVColumn("is_supplier", .boolean),
            ], key: ["cuit"]),
        CSVTableSpec(
            table: "product", file: "product.csv",
            columns: [
                CSVColumn("id", .integer(min: 1)), CSVColumn("supplier_cuit", cuit), CSVColumn("name", name),
                CSVColumn("default_price", money),
            ], key: ["id"], references: [.init(columns: ["supplier_cuit"], table: "company")]),
        CSVTableSpec(
            table: "inventory", file: "inventory.csv",
            columns: [
                CSVColumn("company_cuit", cuit), CSVColumn("product_id", .integer(min: 1)), CSVColumn("price", money),
                CSVColumn("stock", .integer(min: 0)),
            ], key: ["company_cuit", "product_id"],
            references: [
                .init(columns: ["company_cuit"], table: "company"), .init(columns: ["product_id"], table: "product"),
            ]),
        CSVTableSpec(
            table: "customer", file: "customer.csv",
            columns: [
                CSVColumn("document_number", name), CSVColumn("full_name", name), CSVColumn("date_of_birth", .date),
                CSVColumn("address", .text(valid: nil, what: "")),
                CSVColumn(
                    "country_code",
                    .text(
                        valid: { u in u.count == 2 && u.allSatisfy { $0 >= 65 && $0 <= 90 } },
                        what: "a two-letter country code like AR")),
                CSVColumn(
                    "username",
                    .text(
                        valid: { u in
                            u.allSatisfy {
                                ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 46 || $0 == 95 || $0 == 45
                            }
                        }, what: "a user name of lower-case letters, digits, '.', '_' or '-'")),
            ], key: ["document_number"]),
        CSVTableSpec(
            table: "orders", file: "orders.csv",
            columns: [
                CSVColumn("id", .integer(min: 1, max: .max)), CSVColumn("company_cuit", cuit),
                CSVColumn("customer_document", name),
                CSVColumn("ordered_at", .timestamp),
            ], key: ["id"],
            references: [
                .init(columns: ["company_cuit"], table: "company"),
                .init(columns: ["customer_document"], table: "customer"),
            ]),
        CSVTableSpec(
            table: "sales", file: "sales.csv",
            columns: [
                CSVColumn("order_id", .integer(min: 1, max: .max)), CSVColumn("line", .integer(min: 1)),
                CSVColumn("product_id", .integer(min: 1)),
                CSVColumn("quantity", .integer(min: 1)), CSVColumn("unit_price", money),
                CSVColumn("total", .decimal(scale: 2, digits: 14)),
            ], key: ["order_id", "line"],
            references: [
                .init(columns: ["order_id"], table: "orders"), .init(columns: ["product_id"], table: "product"),
            ],
            rowCheck: { v in  // order_id, line, product_id, quantity, unit_price, total
                guard let q = Int64(v[3]), let p = cents(v[4]), let t = cents(v[5]) else { return nil }
                let (product, overflow) = q.multipliedReportingOverflow(by: p)
                return !overflow && product == t ? nil : "total \(v[5]) is not quantity \(q) × unit price \(v[4])"
            },
            plainRowCheck: { row in
                guard let q = row.scaled(3, scale: 0), let p = row.scaled(4, scale: 2), let t = row.scaled(5, scale: 2)
                else { return false }
                let (product, overflow) = q.multipliedReportingOverflow(by: p)
                return !overflow && product == t
            }),
    ]

    /// "12.5" → 1250.
    static func cents(_ s: String) -> Int64? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard let whole = Int64(parts[0]) else { return nil }
        var frac: Int64 = 0
        if parts.count == 2 {
            let f = parts[1].padding(toLength: 2, withPad: "0", startingAt: 0)
            guard let x = Int64(f.prefix(2)) else { return nil }
            frac = x
        }
        return whole * 100 + frac
    }

    /// The catalog rows a day's export removes (`inventory_removed.csv`): each must be a current row.
    public static let inventoryRemoved: CSVTableSpec = {
        var spec = CSVTableSpec(
            table: "inventory_removed", file: "inventory_removed.csv",
            columns: [CSVColumn("company_cuit", cuit), CSVColumn("product_id", .integer(min: 1))],
            key: ["company_cuit", "product_id"],
            references: [.init(columns: ["company_cuit", "product_id"], table: "inventory")])
        spec.isReferenced = false
        return spec
    }()

    /// What one table's load did over the days it loaded.
    public struct TableResult: Sendable {
        public let table: String
        public var read: Int64 = 0
        public var loaded: Int64 = 0
        public var rejected: Int64 = 0
        /// New keys, new versions of changed rows, rows equal to the version already there, rows
        /// ended (catalog rows removed; a re-exported day's previous facts).
        public var inserted: Int64 = 0
        public var updated: Int64 = 0
        public var unchanged: Int64 = 0
        public var removed: Int64 = 0
        public var bytes: Int64 = 0

        public init(table: String) { self.table = table }

        mutating func add(_ o: TableResult) {
            read += o.read
            loaded += o.loaded
            rejected += o.rejected
            inserted += o.inserted
            updated += o.updated
            unchanged += o.unchanged
            removed += o.removed
            bytes += o.bytes
        }
    }
}

import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The B2B platform's sources: hand-made CSVs (company, product, inventory, customer) and the
/// generated orders and sales, checked row by row and loaded together.
public enum B2B {
    /// NN-NNNNNNNN-N.
    static let cuit = CSVColumn.Kind.text(
        valid: { s in
            let u = Array(s.utf8)
            return u.count == 13 && u[2] == 45 && u[11] == 45
                && u.enumerated().allSatisfy { i, c in i == 2 || i == 11 || (c >= 48 && c <= 57) }
        }, what: "a CUIT like 30-71234567-1")
    static let name = CSVColumn.Kind.text(valid: nil, what: "")
    static let money = CSVColumn.Kind.decimal(scale: 2, digits: 12)

    /// In load order: every reference points at a table loaded before it. Only referenced tables
    /// keep their accepted keys in memory.
    public static let tables: [CSVTableSpec] = {
        var specs = unmarked
        let referenced = Set(specs.flatMap { $0.references.map(\.table) })
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
                        valid: { s in s.utf8.count == 2 && s.utf8.allSatisfy { $0 >= 65 && $0 <= 90 } },
                        what: "a two-letter country code like AR")),
                CSVColumn(
                    "username",
                    .text(
                        valid: { s in
                            s.utf8.allSatisfy {
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

    /// Where each table's CSV is: the hand-made ones in `b2bDir`, orders and sales in `generatedDir`.
    public static func path(of spec: CSVTableSpec, _ s: PipelineSettings) -> String {
        spec.table == "orders" || spec.table == "sales" ? "\(s.generatedDir)/\(spec.file)" : "\(s.b2bDir)/\(spec.file)"
    }

    public struct TableResult: Sendable {
        public let table: String
        public let read: Int64
        public let loaded: Int64
        public let rejected: Int64
    }

    /// Replaces the six tables in one transaction on `tx` (the attempt's transaction): a load that
    /// breaks leaves the previous data whole. Each table gets a load record (begun on `meta`, which
    /// commits on its own, so a broken load stays visible) and its rejects.
    public static func load(
        tx: PostgresConnection, meta: PostgresConnection, settings s: PipelineSettings,
        runID: Int64?, logicalDate: String?, log: (String) -> Void
    ) throws -> [TableResult] {
        let loads = LoadLog(pg: meta, schema: s.loads)
        var ids: [String: Int64] = [:]
        do {
            var results: [TableResult] = []
            try tx.transaction { tx in
                try loads.takeOver(pipeline: "b2b", tx: tx)
                for t in tables {
                    ids[t.table] = try loads.begin(
                        pipeline: "b2b", source: path(of: t, s), runID: runID, logicalDate: logicalDate)
                }
                try tx.execute(script: "TRUNCATE \(tables.map { "\(s.datalake).\($0.table)" }.joined(separator: ", "))")
                var known: [String: Set<String>] = [:]
                for t in tables {
                    let file = path(of: t, s)
                    guard FileManager.default.fileExists(atPath: file) else {
                        let fix =
                            t.table == "orders" || t.table == "sales"
                            ? "run `etlctl generate orders` (or the b2b DAG's generate_orders task) first"
                            : "put the CSV there or set ETL_B2B_DIR"
                        throw PipelineError("\(file) does not exist: \(fix)")
                    }
                    var v = CSVValidator(spec: t, known: known)
                    let bytes = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
                    try tx.copyIn(
                        "COPY \(s.datalake).\(t.table) (\(t.columns.map(\.name).joined(separator: ", "))) FROM STDIN"
                    ) { w in
                        try v.run(path: file) { values in try w.writeRow(values) }
                    }
                    known = v.known
                    try Rejection.store(v.rejects, load: ids[t.table]!, source: file, schema: s.loads, on: tx)
                    try loads.finish(
                        ids[t.table]!, read: v.read, loaded: v.accepted, rejected: Int64(v.rejects.count),
                        bytes: Int64(bytes), on: tx)
                    log("\(t.table): read \(v.read), loaded \(v.accepted), rejected \(v.rejects.count) from \(file)")
                    results.append(
                        TableResult(table: t.table, read: v.read, loaded: v.accepted, rejected: Int64(v.rejects.count)))
                }
            }
            return results
        } catch {
            for (_, id) in ids { try? loads.broke(id, error: "\(error)") }
            throw error
        }
    }
}

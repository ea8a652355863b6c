import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The three reports. Each replaces its datamart rows for the logical date in the caller's
/// transaction and writes `reports/<report>/date=<YYYY-MM-DD>/report.csv` atomically.
public enum Reports {
    /// One report: its DAG (named as the report, one `report` task, waiting for `upstreamDAGs`'
    /// runs of the same date), its datamart table and columns, its SQL, and how the web UI shows it.
    public struct Report: Sendable {
        public let name: String
        /// The title people see (the web UI's report pages).
        public let title: String
        public let table: String
        public let columns: [String]
        /// The ingestion DAGs whose run for the same logical date must have succeeded first.
        public let upstreamDAGs: [String]
        /// The chart above the table on the report's page.
        public let chart: Chart
        /// It reads orders (of the 12 months before its date's month): a re-exported b2b day in
        /// them makes it out of date (`Freshness`).
        public let readsOrders: Bool
        /// A ranking's length: how many rows it lists by default (its `top` run parameter sets
        /// another, written as a report of its own); nil for a report that is not a ranking.
        public let top: Int?
        /// Fills the report's table (the datamart's, or a variant's) for `$1` (the logical date),
        /// after the old rows are deleted; a ranking lists `$2` rows.
        let insert: @Sendable (_ s: PipelineSettings, _ into: String) -> String

        /// `insert` is an `INSERT INTO <into> (logical_date, <columns>...) SELECT $1::date, ...` for the
        /// logical date `$1` (a ranking: `LIMIT $2`); `into` is `<datamart>.<table>`, defined in
        /// `sources/ddl/datamart.sql`, or a temporary table like it.
        public init(
            name: String, title: String, table: String, columns: [String], upstreamDAGs: [String], chart: Chart,
            readsOrders: Bool = false, top: Int? = nil,
            insert: @escaping @Sendable (_ s: PipelineSettings, _ into: String) -> String
        ) {
            self.top = top
            self.readsOrders = readsOrders
            self.name = name
            self.title = title
            self.table = table
            self.columns = columns
            self.upstreamDAGs = upstreamDAGs
            self.chart = chart
            self.insert = insert
        }
    }

    /// A report page's chart: one bar per row, labelled by one column and sized by another.
    public struct Chart: Sendable, Equatable {
        public enum Style: Sendable, Equatable {
            /// Vertical columns (a series over time).
            case columns
            /// Horizontal bars (a ranking).
            case bars
        }

        public let style: Style
        public let label: String
        public let value: String
        /// How many characters of the label to show (nil: all), e.g. 7 for a month's `YYYY-MM`.
        public let labelLength: Int?

        public init(_ style: Style, label: String, value: String, labelLength: Int? = nil) {
            self.style = style
            self.label = label
            self.value = value
            self.labelLength = labelLength
        }
    }

    /// How many products popular-products lists by default.
    public static let topProducts = 10

    public static let monthlySales = Report(
        name: "monthly-sales", title: "Monthly sales, last 12 months", table: "monthly_sales",
        columns: ["month", "orders", "units", "revenue"], upstreamDAGs: ["b2b"],
        chart: Chart(.columns, label: "month", value: "revenue", labelLength: 7), readsOrders: true
    ) { s, into in
        """
        WITH bounds AS (
            SELECT (date_trunc('month', $1::date) - interval '12 months')::date AS first,
                   date_trunc('month', $1::date)::date AS stop
        ), months AS (
            SELECT generate_series(b.first, b.stop - interval '1 month', interval '1 month')::date AS month
            FROM bounds b
        ), o AS (
            SELECT date_trunc('month', ordered_at)::date AS month, count(*) AS orders
            FROM \(s.datalake).orders, bounds b WHERE ordered_at >= b.first AND ordered_at < b.stop GROUP BY 1
        ), l AS (
            SELECT date_trunc('month', o.ordered_at)::date AS month, sum(x.quantity) AS units, sum(x.total) AS revenue
            FROM \(s.datalake).orders o JOIN \(s.datalake).sales x ON x.order_id = o.id, bounds b
            WHERE o.ordered_at >= b.first AND o.ordered_at < b.stop GROUP BY 1
        )
        INSERT INTO \(into) (logical_date, month, orders, units, revenue)
        SELECT $1::date, m.month, coalesce(o.orders, 0), coalesce(l.units, 0), coalesce(l.revenue, 0)
        FROM months m LEFT JOIN o USING (month) LEFT JOIN l USING (month)
        """
    }

    public static let popularDevices = Report(
        name: "popular-devices", title: "Top 5 devices of B2B clients", table: "popular_devices",
        columns: ["rank", "device", "users", "requests"], upstreamDAGs: ["weblog", "b2b"],
        chart: Chart(.bars, label: "device", value: "users"), top: 5
    ) { s, into in
        """
        INSERT INTO \(into) (logical_date, rank, device, users, requests)
        SELECT $1::date, row_number() OVER (ORDER BY users DESC, requests DESC, device COLLATE "C"),
               device, users, requests
        FROM (
            SELECT w.device, count(DISTINCT w.username) AS users, count(*) AS requests
            FROM \(s.datalake).weblogs w
            JOIN \(s.datalake).customer c
              ON c.username = w.username AND c.valid_from <= $1::date AND $1::date < c.valid_to
            WHERE w.requested_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
            GROUP BY w.device
            ORDER BY users DESC, requests DESC, device COLLATE "C"
            LIMIT $2
        ) d
        """
    }

    public static let popularProducts = Report(
        name: "popular-products", title: "Most popular products in the country most users log in from",
        table: "popular_products",
        columns: ["country", "rank", "product", "units", "revenue"], upstreamDAGs: ["weblog", "ip2geo", "b2b"],
        chart: Chart(.bars, label: "product", value: "units"), readsOrders: true, top: topProducts
    ) { s, into in
        """
        WITH top_country AS (
            SELECT w.country_code, count(DISTINCT w.username) AS users
            FROM \(s.datalake).weblogs w
            WHERE w.method = 'POST' AND w.path = '/login' AND w.status BETWEEN 200 AND 399
              AND w.username IS NOT NULL AND w.country_code IS NOT NULL
              AND w.requested_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
            GROUP BY w.country_code
            ORDER BY users DESC, w.country_code COLLATE "C"
            LIMIT 1
        ), sold AS (
            SELECT x.product_id, sum(x.quantity) AS units, sum(x.total) AS revenue
            FROM \(s.datalake).sales x
            JOIN \(s.datalake).orders o ON o.id = x.order_id
            JOIN \(s.datalake).customer c ON c.document_number = o.customer_document
              AND c.valid_from <= $1::date AND $1::date < c.valid_to
            JOIN top_country t ON t.country_code = c.country_code
            WHERE o.ordered_at >= date_trunc('month', $1::date::timestamp) - interval '12 months'
              AND o.ordered_at < date_trunc('month', $1::date::timestamp)
            GROUP BY x.product_id
        )
        INSERT INTO \(into) (logical_date, country, rank, product_id, product, units, revenue)
        SELECT $1::date,
               coalesce(
                   (SELECT min(g.country_name COLLATE "C") FROM \(s.datalake).ip2geo g
                    WHERE g.country_code = t.country_code),
                   t.country_code),
               row_number() OVER (ORDER BY sold.units DESC, sold.revenue DESC, sold.product_id),
               sold.product_id, p.name, sold.units, sold.revenue
        FROM sold
        JOIN \(s.datalake).product p ON p.id = sold.product_id AND p.valid_from <= $1::date AND $1::date < p.valid_to
        CROSS JOIN top_country t
        ORDER BY sold.units DESC, sold.revenue DESC, sold.product_id
        LIMIT $2
        """
    }

    public static let all = [monthlySales, popularDevices, popularProducts]

    public struct Output: Sendable {
        public let path: String
        public let rows: [[String]]
    }

    /// Replaces the report's rows for `date` on `tx` (the attempt's transaction). The CSV is written
    /// by `writeCSV` once that transaction committed (`TaskContext.afterCommit`).
    public static func run(
        _ report: Report, date: Day, tx: PostgresConnection, settings s: PipelineSettings
    ) throws -> Output {
        // The time before the report's query takes its snapshot: a load committing while it runs
        // stamped its rows before that commit, so it counts as later than this (out of date, to be
        // safe), never as seen.
        let started = try tx.query("SELECT clock_timestamp()::text").rows[0].decode(String.self, 0)
        try tx.query("DELETE FROM \(s.datamart).\(report.table) WHERE logical_date = $1::date", [date.description])
        try tx.query(report.insert(s, "\(s.datamart).\(report.table)"), insertParameters(report, date: date, top: nil))
        try tx.query(
            """
            INSERT INTO \(s.loads).report_computed (report, logical_date, computed_at)
            VALUES ($1, $2::date, $3::timestamptz)
            ON CONFLICT (report, logical_date) DO UPDATE SET computed_at = EXCLUDED.computed_at
            """, [report.name, date.description, started])
        let rows = try Self.rows(report, date: date, pg: tx, settings: s)
        return Output(path: csvPath(report, date: date, settings: s), rows: rows)
    }

    /// `$1` (the date) and, for a ranking, `$2` (its length: `top`, else the report's default).
    static func insertParameters(_ report: Report, date: Day, top: Int?) -> [any PostgresEncodable] {
        guard let length = top ?? report.top else { return [date.description] }
        return [date.description, length]
    }

    /// A ranking of another length than its default (`top`, a run parameter): computed on `tx` into a
    /// temporary table, never into the datamart (whose rows for `date` are the default ranking and
    /// stay as they are), and written by `writeVariant` to a file of its own (`csvPath(top:)`). The
    /// same date and length give the same rows, whenever it is computed.
    public static func runVariant(
        _ report: Report, date: Day, top: Int, tx: PostgresConnection, settings s: PipelineSettings
    ) throws -> Output {
        let temp = "pg_temp.variant_\(report.table)"
        try tx.query("DROP TABLE IF EXISTS \(temp)")
        try tx.query("CREATE TEMPORARY TABLE \(temp) (LIKE \(s.datamart).\(report.table)) ON COMMIT DROP")
        try tx.query(report.insert(s, temp), insertParameters(report, date: date, top: top))
        let rows = try Self.rows(report, date: date, pg: tx, table: temp)
        return Output(path: csvPath(report, date: date, settings: s, top: top), rows: rows)
    }

    /// Writes a variant's rows (`runVariant`) to its CSV, atomically. Returns the path.
    @discardableResult
    public static func writeVariant(_ report: Report, _ out: Output) throws -> String {
        try writeRows(report, out.rows, to: out.path)
        return out.path
    }

    /// The header and `rows` as CSV into `path`: a temporary file, fsynced, renamed into place.
    static func writeRows(_ report: Report, _ rows: [[String]], to path: String) throws {
        let out = try BufferedFileWriter(path: path)
        out.append(report.columns.joined(separator: ",") + "\n")
        for r in rows { out.append(r.map(CSVLine.field).joined(separator: ",") + "\n") }
        try out.commit()
    }

    /// Writes the report's CSV for `date` from the datamart rows as committed: read, written to a
    /// temporary file, fsynced, renamed into place; then the computation's stamp
    /// (`report_computed.computed_at`) is read again, and while it changed (another computation
    /// committed meanwhile) the CSV is written again from the newer rows. A writer that was paused
    /// before its rename therefore never leaves older rows in place: whichever writer renames last
    /// checks afterwards and writes what is committed then (a check before the rename would not
    /// do: the pause could fall between the check and the rename). Returns the path.
    @discardableResult
    public static func writeCSV(
        _ report: Report, date: Day, pg: PostgresConnection, settings s: PipelineSettings
    ) throws -> String {
        let path = csvPath(report, date: date, settings: s)
        func stamp() throws -> String? {
            try pg.query(
                "SELECT computed_at::text FROM \(s.loads).report_computed WHERE report = $1 AND logical_date = "
                    + "$2::date",
                [report.name, date.description]
            ).rows.first?.decode(String?.self, 0)
        }
        var before = try stamp()
        for _ in 0..<10 {
            try writeRows(report, try Self.rows(report, date: date, pg: pg, settings: s), to: path)
            let after = try stamp()
            if after == before { return path }
            before = after
        }
        throw PipelineError(
            "\(report.name) for \(date) was recomputed ten times while its CSV was being written; \(path) may be "
                + "behind the datamart. Fix: run the report for \(date) again once the other runs are done")
    }

    public static func named(_ name: String) -> Report? { all.first { $0.name == name } }

    /// The report's rows for `date`, as text, in its order (by rank, or by month).
    public static func rows(
        _ report: Report, date: Day, pg: PostgresConnection, settings s: PipelineSettings
    ) throws -> [[String]] {
        try rows(report, date: date, pg: pg, table: "\(s.datamart).\(report.table)")
    }

    static func rows(_ report: Report, date: Day, pg: PostgresConnection, table: String) throws -> [[String]] {
        let order = report.columns.contains("rank") ? "rank" : "month"
        let result = try pg.query(
            """
            SELECT \(report.columns.map { "\($0)::text" }.joined(separator: ", ")) FROM \(table) t
            WHERE logical_date = $1::date ORDER BY t.\(order)
            """, [date.description])
        return result.rows.map { r in (0..<report.columns.count).map { r[$0] ?? "" } }
    }

    /// The logical dates the report has rows for, newest first.
    public static func dates(
        _ report: Report, pg: PostgresConnection, settings s: PipelineSettings, limit: Int = 60
    ) throws -> [Day] {
        try pg.query(
            "SELECT DISTINCT logical_date::text FROM \(s.datamart).\(report.table) ORDER BY 1 DESC LIMIT $1", [limit]
        )
        .rows.compactMap { $0[0].flatMap { Day(strict: $0) } }
    }

    /// Where the report's CSV for `date` is written; a ranking of another length than its default
    /// (`top`) goes to `date=<D>/top=<N>/report.csv`.
    public static func csvPath(_ report: Report, date: Day, settings s: PipelineSettings, top: Int? = nil) -> String {
        guard let top, top != report.top else { return "\(s.reportsDir)/\(report.name)/date=\(date)/report.csv" }
        return "\(s.reportsDir)/\(report.name)/date=\(date)/top=\(top)/report.csv"
    }
}

import ETLSupport
import Foundation
import PostgresClient

/// The audit trail: one row per operator action, from the web UI, the API or etlctl.
extension MetadataStore {
    public struct AuditRow: Codable, Sendable {
        public let id: Int64
        public let at: Date
        /// Who: `web:<user>`, `api-token`, `etlctl`.
        public let actor: String
        /// From where: `client <address>` for the web, `host <name>, OS user <name>` for etlctl.
        public let origin: String
        public let action: String
        public let target: String
        public let detail: String
        public let ok: Bool
        public let error: String?
    }

    /// Records one action (texts cut to 2,000 characters; NUL cannot be stored).
    public func recordAudit(
        actor: String, origin: String, action: String, target: String, detail: String, ok: Bool, error: String?
    ) throws {
        func clean(_ s: String) -> String { String(s.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}").prefix(2000)) }
        try pg.query(
            """
            INSERT INTO \(s).audit (actor, origin, action, target, detail, ok, error)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            """,
            [clean(actor), clean(origin), clean(action), clean(target), clean(detail), ok, error.map(clean)])
    }

    /// The newest `limit` actions, newest first; `action`: only those.
    public func auditRows(limit: Int, action: String? = nil) throws -> [AuditRow] {
        try pg.query(
            """
            SELECT id, at, actor, origin, action, target, detail, ok, error FROM \(s).audit
            WHERE $2::text IS NULL OR action = $2 ORDER BY id DESC LIMIT $1
            """, [limit, action]
        ).rows.map {
            AuditRow(
                id: try $0.decode(Int64.self, 0), at: try $0.decode(Date.self, 1), actor: try $0.decode(String.self, 2),
                origin: try $0.decode(String.self, 3), action: try $0.decode(String.self, 4),
                target: try $0.decode(String.self, 5), detail: try $0.decode(String.self, 6),
                ok: try $0.decode(Bool.self, 7), error: try $0.decode(String?.self, 8))
        }
    }
}

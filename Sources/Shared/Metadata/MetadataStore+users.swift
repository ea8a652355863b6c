import ETLSupport
import Foundation
import HummingbirdBcrypt
import PostgresClient

/// The web UI's users and their roles (issue 16). Passwords are kept as bcrypt hashes
/// (hummingbird-auth's, cost 12); a password never reaches a log, a record or a command line.
extension MetadataStore {
    /// What a user may do: each role may do what the ones before it may.
    public enum Role: String, Sendable, Codable, CaseIterable, Comparable {
        /// Reads every page and listing.
        case viewer
        /// Also triggers, backfills, retries, clears, cancels, marks failed, pauses and requeues.
        case `operator`
        /// Also manages users.
        case admin

        public static func < (a: Role, b: Role) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    public struct WebUser: Sendable, Codable {
        public let name: String
        public let role: Role
        public let createdAt: Date
        public let updatedAt: Date
        enum CodingKeys: String, CodingKey {
            case name, role
            case createdAt = "created_at"
            case updatedAt = "updated_at"
        }
    }

    /// A user name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
    public static func checkUserName(_ name: String) throws {
        guard (1...64).contains(name.count),
            name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-@".contains($0)) })
        else {
            throw UserError(
                "'\(name.prefix(64))' is not a user name. Fix: use 1 to 64 letters, digits, '.', '_', '-' or '@'")
        }
    }

    public static func checkPassword(_ password: String) throws {
        guard password.count >= 8 else {
            throw UserError("the password is shorter than 8 characters. Fix: a longer one")
        }
        guard password.utf8.count <= 72 else {
            throw UserError("the password is longer than 72 bytes (bcrypt's limit). Fix: a shorter one")
        }
    }

    public struct UserError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// Adds a user; false when the name is taken.
    @discardableResult
    public func addUser(_ name: String, password: String, role: Role, cost: UInt8 = 12) throws -> Bool {
        try Self.checkUserName(name)
        try Self.checkPassword(password)
        return try pg.query(
            "INSERT INTO \(s).web_user (name, password_hash, role) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            [name, Bcrypt.hash(password, cost: cost), role.rawValue]
        ).affectedRows == 1
    }

    /// The first admin: the configured user (`ETL_WEB_USER`, `ETL_WEB_PASSWORD`), added when there
    /// is no user at all. Returns whether it was added.
    @discardableResult
    public func addFirstAdmin(_ name: String, password: String) throws -> Bool {
        guard try pg.query("SELECT NOT EXISTS (SELECT 1 FROM \(s).web_user)").rows[0].decode(Bool.self, 0) else {
            return false
        }
        return try addUser(name, password: password, role: .admin)
    }

    public func users() throws -> [WebUser] {
        try pg.query("SELECT name, role, created_at, updated_at FROM \(s).web_user ORDER BY name").rows.map {
            WebUser(
                name: try $0.decode(String.self, 0), role: Role(rawValue: try $0.decode(String.self, 1)) ?? .viewer,
                createdAt: try $0.decode(Date.self, 2), updatedAt: try $0.decode(Date.self, 3))
        }
    }

    public func role(of name: String) throws -> Role? {
        try pg.query("SELECT role FROM \(s).web_user WHERE name = $1", [name]).rows.first.flatMap {
            Role(rawValue: try $0.decode(String.self, 0))
        }
    }

    /// Checks a login: the user's role when the password is right, else nil. A name that does not
    /// exist costs the same bcrypt round as a wrong password (no telling names apart by time).
    public func checkLogin(_ name: String, password: String) throws -> Role? {
        let row = try pg.query("SELECT password_hash, role FROM \(s).web_user WHERE name = $1", [name]).rows.first
        let hash = try row?.decode(String.self, 0) ?? Self.dummyHash
        let ok = Bcrypt.verify(password, hash: hash)
        guard ok, let row else { return nil }
        return Role(rawValue: try row.decode(String.self, 1))
    }

    private static let dummyHash = Bcrypt.hash("not a password of anyone", cost: 12)

    /// Sets a user's role; false when there is no such user. The last admin cannot stop being one.
    public func setRole(_ name: String, _ role: Role) throws -> Bool {
        try pg.transaction { tx in
            if role != .admin { try requireAnotherAdmin(than: name, tx) }
            return try tx.query(
                "UPDATE \(s).web_user SET role = $2, updated_at = now() WHERE name = $1", [name, role.rawValue]
            ).affectedRows == 1
        }
    }

    public func setPassword(_ name: String, _ password: String) throws -> Bool {
        try Self.checkPassword(password)
        return try pg.query(
            "UPDATE \(s).web_user SET password_hash = $2, updated_at = now() WHERE name = $1",
            [name, Bcrypt.hash(password, cost: 12)]
        ).affectedRows == 1
    }

    /// Removes a user; false when there is none. The last admin cannot be removed.
    public func removeUser(_ name: String) throws -> Bool {
        try pg.transaction { tx in
            try requireAnotherAdmin(than: name, tx)
            return try tx.query("DELETE FROM \(s).web_user WHERE name = $1", [name]).affectedRows == 1
        }
    }

    private func requireAnotherAdmin(than name: String, _ tx: PostgresConnection) throws {
        // Serialised against another removal or demotion of an admin.
        try tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", ["\(s) web users"])
        let (isAdmin, others) =
            try tx.query(
                """
                SELECT coalesce(bool_or(name = $1), false), count(*) FILTER (WHERE name <> $1)
                FROM \(s).web_user WHERE role = 'admin'
                """, [name]
            ).rows.first.map { (try $0.decode(Bool.self, 0), try $0.decode(Int.self, 1)) } ?? (false, 0)
        if isAdmin && others == 0 {
            throw UserError("'\(name)' is the last admin. Fix: make another user admin first")
        }
    }
}

/// The rows a statement returned, copied out of libpq (so the C result is already freed).
import ETLSupport

public struct PostgresResult: Sendable {
    /// Column names, in order.
    public let columns: [String]
    public let rows: [PostgresRow]
    /// Rows inserted, updated, deleted, copied or selected, as the command tag says.
    public let affectedRows: Int
    /// The command tag (`INSERT 0 3`, `SELECT 1`, ...).
    public let commandTag: String

    /// The first row, if any.
    public var first: PostgresRow? { rows.first }
}

/// One row of a `PostgresResult`. Values are read by position or by column name:
///
/// ```swift
/// let id = try row.decode(Int.self, 0)
/// let name = try row.decode(String?.self, "name")   // NULL becomes nil
/// ```
public struct PostgresRow: Sendable {
    final class Storage: Sendable {
        let columns: [String]
        let cells: [String?]
        let endpoint: String
        init(columns: [String], cells: [String?], endpoint: String) {
            self.columns = columns
            self.cells = cells
            self.endpoint = endpoint
        }
    }

    let storage: Storage
    let index: Int

    public var count: Int { storage.columns.count }

    /// The raw text of column `column`, nil for NULL.
    public subscript(_ column: Int) -> String? {
        storage.cells[index * storage.columns.count + column]
    }

    public func decode<T: PostgresDecodable>(_ type: T.Type, _ column: Int) throws -> T {
        guard column >= 0 && column < storage.columns.count else {
            throw PostgresError(
                code: .misuse, message: "column \(column) is out of range (the row has \(storage.columns.count))",
                endpoint: storage.endpoint)
        }
        do {
            return try T.decode(postgresText: self[column])
        } catch {
            let name = storage.columns[column]
            switch error {
            case .unexpectedNull:
                throw PostgresError(
                    code: .decoding, message: "column \(name) is NULL; decode it as \(T.self)? to accept NULL",
                    endpoint: storage.endpoint)
            case .invalid(let text):
                throw PostgresError(
                    code: .decoding, message: "column \(name) does not decode as \(T.self)",
                    endpoint: storage.endpoint, detail: "value: \(text.prefix(200))")
            }
        }
    }

    public func decode<T: PostgresDecodable>(_ type: T.Type, _ column: String) throws -> T {
        guard let i = storage.columns.firstIndex(of: column) else {
            throw PostgresError(
                code: .misuse,
                message: "no column named \(column) (columns: \(storage.columns.joined(separator: ", ")))",
                endpoint: storage.endpoint)
        }
        return try decode(type, i)
    }
}

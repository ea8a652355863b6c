/// An array parameter: its elements as one Postgres array literal, each element quoted and
/// escaped (so commas, braces, quotes and backslashes in a value stay inside it), nil as NULL.
/// Cast it to the element type in SQL (`$1::text[]`, `$1::bigint[]`).
///
/// ```swift
/// try pg.query("SELECT ... WHERE task_id = ANY($1::text[])", [PostgresArray(tasks)])
/// ```
public struct PostgresArray: PostgresEncodable, Sendable, Equatable {
    /// The array literal sent to the server, e.g. `{"a","b,c",NULL}`.
    public let literal: String

    public init(_ items: [String?]) {
        var out = "{"
        for (i, item) in items.enumerated() {
            if i > 0 { out += "," }
            guard let item else {
                out += "NULL"
                continue
            }
            out += "\""
            for ch in item.unicodeScalars {
                if ch == "\\" || ch == "\"" { out += "\\" }
                // Postgres text cannot hold NUL, and the parameter would end there: U+FFFD instead.
                out.unicodeScalars.append(ch == "\u{0}" ? "\u{FFFD}" : ch)
            }
            out += "\""
        }
        literal = out + "}"
    }

    public init(_ items: [String]) { self.init(items.map { Optional($0) }) }

    /// Numbers and other values by their text form (`PostgresArray(runIDs)` for `$1::bigint[]`).
    public init<T: CustomStringConvertible>(_ items: [T]) { self.init(items.map { Optional($0.description) }) }

    public var postgresParameter: PostgresParameter { .text(literal) }
}

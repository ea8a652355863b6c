import Foundation

extension JSONEncoder {
    /// The encoder of everything operators read as JSON (`etlctl --json`, the web API): sorted keys,
    /// dates as Postgres writes them (`2024-05-01 00:00:00+00`), so the two never disagree.
    public static func operatorJSON() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(PostgresTimestamp.format(date))
        }
        return e
    }
}

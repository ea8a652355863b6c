import Foundation
import PostgresClient
import TestSupport
import Testing

@Suite("Postgres array parameters against a real server", .timeLimit(.minutes(10)))
struct PostgresArrayTests {
    @Test("elements with commas, braces, quotes, backslashes, spaces and NULLs arrive as they were")
    func escaping() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        let items: [String?] = [
            "plain", "a,b", "{brace}", "quote\"d", "back\\slash", " spaced ", "", nil, "NULL", "é🚀", "x\u{0}y",
        ]
        let rows = try pg.query(
            "SELECT ord, v, v IS NULL FROM unnest($1::text[]) WITH ORDINALITY AS u(v, ord) ORDER BY ord",
            [PostgresArray(items)]
        ).rows
        let got = try rows.map { try $0.decode(String?.self, 1) }
        // NUL cannot be in Postgres text: it becomes U+FFFD, and nothing after it is cut off.
        let expected = items.map { $0?.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") }
        #expect(got == expected)
        // The text "NULL" is a string, not a NULL.
        #expect(try rows[8].decode(Bool.self, 2) == false)
        #expect(try rows[7].decode(Bool.self, 2) == true)
    }

    @Test("numbers go as their text form and cast to bigint[]")
    func numbers() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        let ids: [Int64] = [1, -5, Int64.max]
        let sum = try pg.query(
            "SELECT sum(x)::text, count(*) FROM unnest($1::bigint[]) x WHERE x < 0 OR x = 1", [PostgresArray(ids)]
        ).rows[0]
        #expect(try sum.decode(String.self, 0) == "-4")
        #expect(try sum.decode(Int.self, 1) == 2)
        #expect(PostgresArray([String]()).literal == "{}")
    }
}

import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import TestSupport
import Testing
import Workflow

@Suite("Postgres client against a real server", .timeLimit(.minutes(10)))
struct PostgresClientTests {
    @Test("every decoded type round-trips, NULL included")
    func typeRoundTrips() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(
            script: """
                CREATE TABLE v (i2 smallint, i4 integer, i8 bigint, f8 double precision, b boolean, t text,
                                n numeric, u uuid, ts timestamptz, d date, raw bytea)
                """)
        let big = String(repeating: "Ünïcødé 世界 🚀 ", count: 40_000)  // ~1 MB of multi-byte text
        let bytes: [UInt8] = [0, 1, 2, 0, 255, 10, 13, 92, 0]
        let when = Date(timeIntervalSince1970: 1_700_000_000.123456)
        let uuid = UUID()
        try pg.query(
            "INSERT INTO v VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            [
                Int16(-32768), Int32(2_147_483_647), Int64.max, -1.5e300, true, big,
                Decimal(string: "12345678901234567890.123456789")!, uuid, when, "2024-02-29", bytes,
            ])
        try pg.query("INSERT INTO v VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)")

        let rows = try pg.query("SELECT * FROM v ORDER BY i2 NULLS LAST").rows
        #expect(rows.count == 2)
        let r = rows[0]
        #expect(try r.decode(Int16.self, "i2") == -32768)
        #expect(try r.decode(Int32.self, "i4") == 2_147_483_647)
        #expect(try r.decode(Int64.self, "i8") == Int64.max)
        #expect(try r.decode(Double.self, "f8") == -1.5e300)
        #expect(try r.decode(Bool.self, "b") == true)
        #expect(try r.decode(String.self, "t") == big)
        #expect(try r.decode(Decimal.self, "n") == Decimal(string: "12345678901234567890.123456789")!)
        #expect(try r.decode(UUID.self, "u") == uuid)
        let ts = try r.decode(Date.self, "ts")
        #expect(abs(ts.timeIntervalSince1970 - when.timeIntervalSince1970) < 0.000_001)
        #expect(
            try r.decode(Date.self, "d")
                == Date(timeIntervalSince1970: Double(CivilDate.toDays(year: 2024, month: 2, day: 29)) * 86_400))
        #expect(try r.decode([UInt8].self, "raw") == bytes)

        let nulls = rows[1]
        for c in 0..<nulls.count { #expect(nulls[c] == nil) }
        #expect(try nulls.decode(Int?.self, "i4") == nil)
        #expect(try nulls.decode(String?.self, "t") == nil)
        #expect(try nulls.decode(Date?.self, "ts") == nil)
        let e = #expect(throws: PostgresError.self) { try nulls.decode(Int.self, "i4") }
        #expect(e?.code == .decoding)
        #expect(e?.description.contains("i4") == true)
    }

    @Test("special doubles and a value that does not decode")
    func specialValues() throws {
        let pg = try PostgresConnection(config: TestServices.postgres)
        let r = try pg.query("SELECT 'NaN'::float8, '-Infinity'::float8, 'abc'::text AS word").rows[0]
        #expect(try r.decode(Double.self, 0).isNaN)
        #expect(try r.decode(Double.self, 1) == -.infinity)
        let e = #expect(throws: PostgresError.self) { try r.decode(Int.self, "word") }
        #expect(e?.code == .decoding)
        #expect(e?.description.contains("word") == true)
    }

    @Test("parameters are values, never SQL")
    func parametersAreNotSQL() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(script: "CREATE TABLE c (name text)")
        let hostile = "x'); DROP TABLE c; --"
        try pg.query("INSERT INTO c VALUES ($1)", [hostile])
        let got = try pg.query("SELECT name FROM c").rows.map { try $0.decode(String.self, 0) }
        #expect(got == [hostile])
    }

    @Test("a transaction commits on return and rolls back on a thrown error; nested ones are savepoints")
    func transactions() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(script: "CREATE TABLE t (id int PRIMARY KEY)")
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try pg.transaction { tx in
                try tx.query("INSERT INTO t VALUES (1)")
                throw Boom()
            }
        }
        #expect(try pg.query("SELECT count(*) FROM t").rows[0].decode(Int.self, 0) == 0)

        try pg.transaction { tx in
            try tx.query("INSERT INTO t VALUES (2)")
            _ = try? tx.transaction { inner in
                try inner.query("INSERT INTO t VALUES (3)")
                try inner.query("INSERT INTO t VALUES (2)")  // duplicate: the savepoint rolls back
            }
            try tx.query("INSERT INTO t VALUES (4)")
        }
        let ids = try pg.query("SELECT id FROM t ORDER BY id").rows.map { try $0.decode(Int.self, 0) }
        #expect(ids == [2, 4])
    }

    @Test("a script's statements answer one by one; a failed one is thrown and rolls its transaction back")
    func scriptResults() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(script: "CREATE TABLE t (id int PRIMARY KEY)")
        let r = try pg.executeEach(
            script: "INSERT INTO t SELECT generate_series(1, 3); SELECT count(*) FROM t; DELETE FROM t WHERE id > 1")
        #expect(r.map(\.affectedRows) == [3, 1, 2])
        #expect(try r[1].rows[0].decode(Int.self, 0) == 3)
        let dup = #expect(throws: PostgresError.self) {
            try pg.transaction { tx in
                _ = try tx.executeEach(
                    script: "INSERT INTO t VALUES (5); INSERT INTO t VALUES (1); INSERT INTO t VALUES (6)")
            }
        }
        #expect(dup?.sqlState == "23505")
        // Nothing of the failed transaction stays, and the session goes on.
        let ids = try pg.query("SELECT id FROM t ORDER BY id").rows.map { try $0.decode(Int.self, 0) }
        #expect(ids == [1])
    }

    @Test("a plain CSV line goes into COPY with its commas as tabs and the suffix after it")
    func copyPlainCSV() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(script: "CREATE TABLE s (a bigint, b text, c numeric(6, 2), d date)")
        let lines = ["1,two words,3.50", "4,,0.5"]
        try pg.copyIn("COPY s FROM STDIN", chunkSize: 1024) { w in
            for l in lines {
                var l = l
                try l.withUTF8 { try w.writeRow(plainCSV: $0, suffix: Array("\t2024-02-29".utf8)) }
            }
        }
        // An empty field is an empty text, as COPY's text format has it (NULL would be \N).
        let rows = try pg.query("SELECT concat_ws('|', a, b, c, d) FROM s ORDER BY a").rows.map {
            try $0.decode(String.self, 0)
        }
        #expect(rows == ["1|two words|3.50|2024-02-29", "4||0.50|2024-02-29"])
    }

    @Test("a constraint violation carries its SQLSTATE and keeps row values out of the short message")
    func constraintViolation() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(
            script: "CREATE TABLE company (cuit text PRIMARY KEY); CREATE TABLE orders (cuit text REFERENCES company)")
        try pg.query("INSERT INTO company VALUES ($1)", ["30-71234567-8"])
        let dup = #expect(throws: PostgresError.self) {
            try pg.query("INSERT INTO company VALUES ($1)", ["30-71234567-8"])
        }
        #expect(dup?.code == .server)
        #expect(dup?.sqlState == "23505")
        #expect(dup?.description.contains("company_pkey") == true)
        #expect(dup?.description.contains("30-71234567-8") == false)
        #expect(dup?.debugDescription.contains("30-71234567-8") == true)  // detail, for operators
        let fk = #expect(throws: PostgresError.self) { try pg.query("INSERT INTO orders VALUES ($1)", ["nope"]) }
        #expect(fk?.sqlState == "23503")
        // The connection is still usable after server errors.
        #expect(try pg.query("SELECT 1").rows.count == 1)
    }

    @Test("COPY of 1,000,000 rows streams with flat memory (measured in a process of its own)")
    func copyMillionRowsFlatMemory() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(script: "CREATE UNLOGGED TABLE big (id bigint, label text, amount numeric(12,2))")
        let rows = 1_000_000
        // The test process's own memory moves with whatever other suites allocate meanwhile, so
        // the COPY runs in a child (bench/ClientBench) that measures its own resident memory.
        let bench = Cluster.binDir.appendingPathComponent("ClientBench").path
        let out = try TestServices.run(bench, ["copy-memory", "\(schema).big", "\(rows)"], timeout: 300)
        #expect(out.status == 0, "\(out.stderr)")
        let fields = out.stdout.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        try #require(fields.count == 3, "ClientBench printed: \(out.stdout)")
        let (copied, sent, growth) = (fields[0], fields[1], fields[2])
        #expect(copied == rows)
        #expect(sent > 100_000_000)  // far more than the memory allowance below
        #expect(try pg.query("SELECT count(*) FROM big").rows[0].decode(Int.self, 0) == rows)
        // ~110 MB went through; holding it would grow the process by at least that much.
        #expect(growth < 40 * 1024 * 1024, "resident memory grew by \(growth / 1024 / 1024) MB during COPY")
    }

    @Test("COPY with a bad row names the line, stores nothing, and leaves the connection usable")
    func copyBadRowNamesLine() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(script: "CREATE TABLE sales (id int, qty int)")
        let e = #expect(throws: PostgresError.self) {
            try pg.copyIn("COPY sales FROM STDIN") { w in
                for i in 1...4 { try w.writeRow([String(i), "10"]) }
                try w.writeRow(["5", "ten"])
                for i in 6...1000 { try w.writeRow([String(i), "1"]) }
            }
        }
        #expect(e?.code == .copyFailed)
        #expect(e?.copyLine == 5)
        #expect(e?.sqlState == "22P02")
        #expect(e?.description.contains("line 5") == true)
        #expect(try pg.query("SELECT count(*) FROM sales").rows[0].decode(Int.self, 0) == 0)
    }

    @Test("a producer error aborts the COPY and is rethrown")
    func copyProducerError() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        try pg.execute(script: "CREATE TABLE s (v text)")
        struct SourceBroke: Error {}
        #expect(throws: SourceBroke.self) {
            try pg.copyIn("COPY s FROM STDIN") { w in
                try w.writeRow(["tab\there", nil])
                throw SourceBroke()
            }
        }
        #expect(try pg.query("SELECT count(*) FROM s").rows[0].decode(Int.self, 0) == 0)
        // Escaping round-trips through COPY's text format.
        try pg.copyIn("COPY s FROM STDIN") { w in
            try w.writeRow(["tab\there\nnew \\ line"])
            try w.writeRow([nil])
        }
        let vals = try pg.query("SELECT v FROM s ORDER BY v NULLS LAST").rows.map { try $0.decode(String?.self, 0) }
        #expect(vals == ["tab\there\nnew \\ line", nil])
    }

    @Test("a lost connection is reported, then replaced on the next call")
    func lostConnectionReconnects() throws {
        let pg = try PostgresConnection(config: TestServices.postgres)
        let killer = try PostgresConnection(config: TestServices.postgres)
        let oldPID = pg.backendPID
        // Prepared in the old session.
        #expect(try pg.query("SELECT $1::int + 1", [1]).rows[0].decode(Int.self, 0) == 2)
        try killer.query("SELECT pg_terminate_backend($1)", [oldPID])
        let e = #expect(throws: PostgresError.self) { try pg.query("SELECT 1") }
        #expect(e?.code == .connectionLost)
        #expect(e?.isConnectionProblem == true)
        #expect(try pg.query("SELECT 42").rows[0].decode(Int.self, 0) == 42)
        #expect(pg.backendPID != oldPID)
        // Prepared again in the new one.
        #expect(try pg.query("SELECT $1::int + 1", [2]).rows[0].decode(Int.self, 0) == 3)
    }

    @Test("a connection lost inside a transaction fails the transaction, even if the body swallowed the error")
    func lostInsideTransaction() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        let killer = try PostgresConnection(config: TestServices.postgres)
        defer { TestServices.dropSchema(killer, schema) }
        try pg.execute(script: "CREATE TABLE t (id int)")
        let e = #expect(throws: PostgresError.self) {
            try pg.transaction { tx in
                try tx.query("INSERT INTO \(schema).t VALUES (1)")
                try killer.query("SELECT pg_terminate_backend($1)", [tx.backendPID])
                _ = try? tx.query("SELECT 1")  // the body ignores the failure and returns normally
            }
        }
        #expect(e?.code == .connectionLost)
        #expect(try killer.query("SELECT count(*) FROM \(schema).t").rows[0].decode(Int.self, 0) == 0)
    }

    @Test("a wrong password gives a clear error that does not contain the password")
    func wrongPassword() throws {
        var config = try TestServices.postgres
        let secret = "not-the-password-" + TestServices.randomSuffix()
        config.password = secret
        let e = #expect(throws: PostgresError.self) { try PostgresConnection(config: config) }
        #expect(e?.code == .authenticationFailed)
        #expect(e?.description.contains("password authentication failed") == true)
        #expect(e?.description.contains("DATABASE_URL") == true)
        #expect(e?.description.contains(secret) == false)
        #expect(e?.debugDescription.contains(secret) == false)
    }

    @Test("nothing listening gives connectionFailed naming the place")
    func connectionRefused() throws {
        var config = try TestServices.postgres
        config.port = TestServices.freePort()
        config.connectTimeout = 2
        let e = #expect(throws: PostgresError.self) { try PostgresConnection(config: config) }
        #expect(e?.code == .connectionFailed)
        #expect(e?.description.contains("127.0.0.1:\(config.port)") == true)
    }

    @Test("the original's POSTGRES_* variables reach the same server")
    func postgresVariables() throws {
        let url = try TestServices.postgres
        let env = Environment([
            "POSTGRES_HOST": url.host, "POSTGRES_PORT": String(url.port), "POSTGRES_USER": url.user,
            "POSTGRES_PASSWORD": url.password ?? "", "POSTGRES_DB": url.database,
        ])
        let pg = try PostgresConnection(config: PostgresConfig(environment: env))
        #expect(try pg.query("SELECT current_user").rows[0].decode(String.self, 0) == url.user)
    }
}

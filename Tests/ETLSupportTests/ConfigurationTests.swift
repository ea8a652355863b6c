import Broker
import ETLSupport
import Foundation
import Logging
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import TestSupport
import Testing
import Workflow

@Suite("Configuration", .timeLimit(.minutes(10)))
struct ConfigurationTests {
    @Test("dotenv: comments, export, quotes, escapes, inline comments")
    func dotenvParsing() throws {
        let text = """
            # a comment
            export POSTGRES_USER=etl
            POSTGRES_DB = warehouse   # inline comment
            QUOTED="two words \\"here\\"\\nnext"
            SINGLE='raw $VALUE \\n'
            EMPTY=

            """
        let v = try DotEnv.parse(text)
        #expect(v["POSTGRES_USER"] == "etl")
        #expect(v["POSTGRES_DB"] == "warehouse")
        #expect(v["QUOTED"] == "two words \"here\"\nnext")
        #expect(v["SINGLE"] == "raw $VALUE \\n")
        #expect(v["EMPTY"] == "")
    }

    @Test("dotenv: CRLF line ends, and a value missing its '=' is not echoed")
    func dotenvCRLFAndSecrets() throws {
        let v = try DotEnv.parse("A=1\r\nB=two\r\nC= # only a comment\r\n")
        #expect(v == ["A": "1", "B": "two", "C": ""])
        let e = #expect(throws: ConfigError.self) {
            try DotEnv.parse("DATABASE_URL postgres://u:hunter22@h/db?sslmode=x")
        }
        #expect(e?.description.contains("hunter22") == false)
    }

    @Test("dotenv errors name the file and line")
    func dotenvErrors() {
        let noEquals = #expect(throws: ConfigError.self) { try DotEnv.parse("A=1\nJUSTTEXT\n", file: "local.env") }
        #expect(noEquals?.variable == "local.env:2")
        let badName = #expect(throws: ConfigError.self) { try DotEnv.parse("1ABC=x") }
        #expect(badName?.description.contains("not a variable name") == true)
        let open = #expect(throws: ConfigError.self) { try DotEnv.parse("A=\"never closed") }
        #expect(open?.description.contains("never closes") == true)
    }

    @Test("the environment wins over local.env; a named file that is missing is an error")
    func precedence() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("envtest-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("local.env")
        try "ETL_LOG_LEVEL=debug\nREDIS_URL=redis://file:6379/0\n".write(to: file, atomically: true, encoding: .utf8)
        let env = try Environment.load(processEnvironment: [
            "ETL_ENV_FILE": file.path, "REDIS_URL": "redis://env:6379/1",
        ])
        #expect(env["REDIS_URL"] == "redis://env:6379/1")
        #expect(env["ETL_LOG_LEVEL"] == "debug")
        #expect(env.fileRead == file.path)
        let missing = #expect(throws: ConfigError.self) {
            try Environment.load(processEnvironment: ["ETL_ENV_FILE": dir.appendingPathComponent("nope.env").path])
        }
        #expect(missing?.variable == "ETL_ENV_FILE")
    }

    @Test("DATABASE_URL parses, and bad ones say what to write without echoing the password")
    func postgresURLs() throws {
        let c = try PostgresConfig(url: "postgresql://etl:s%40cret@db.local:6543/warehouse?sslmode=disable")
        #expect(
            c.host == "db.local" && c.port == 6543 && c.user == "etl" && c.password == "s@cret"
                && c.database == "warehouse")
        #expect(c.sslMode == "disable")
        #expect(!c.description.contains("s@cret"))
        let bad = #expect(throws: ConfigError.self) { try PostgresConfig(url: "mysql://u:hunter22@h/db") }
        #expect(bad?.variable == "DATABASE_URL")
        #expect(bad?.description.contains("hunter22") == false)
        #expect(bad?.description.contains("postgres://USER:PASSWORD@HOST:5432/DATABASE") == true)
        #expect(try PostgresConfig(url: "postgres://u:a%2541@h/db").password == "a%41")  // decoded once
        let odd = #expect(throws: ConfigError.self) { try RedisConfig(url: "redis://:12/ab@h/0") }
        #expect(odd?.description.contains("12/ab") == false)
        let noDB = #expect(throws: ConfigError.self) { try PostgresConfig(url: "postgres://u:pw@h:5432") }
        #expect(noDB?.problem.contains("no database") == true)
        let neither = #expect(throws: ConfigError.self) { try PostgresConfig(environment: Environment([:])) }
        #expect(neither?.description.contains("POSTGRES_USER") == true)
        let badPort = #expect(throws: ConfigError.self) {
            try PostgresConfig(environment: Environment(["POSTGRES_USER": "u", "POSTGRES_PORT": "99999"]))
        }
        #expect(badPort?.variable == "POSTGRES_PORT")
    }

    @Test("REDIS_URL parses password, ACL user and database; bad ones are explained")
    func redisURLs() throws {
        let c = try RedisConfig(url: "redis://:p%3Ass@cache:6380/2")
        #expect(c.host == "cache" && c.port == 6380 && c.password == "p:ss" && c.database == 2 && c.username == nil)
        #expect(!c.description.contains("p:ss"))
        let acl = try RedisConfig(url: "redis://worker:pw@cache/0")
        #expect(acl.username == "worker" && acl.port == 6379)
        let db = #expect(throws: ConfigError.self) { try RedisConfig(url: "redis://:topsecret@h:6379/99") }
        #expect(db?.description.contains("0 to 15") == true)
        #expect(db?.description.contains("topsecret") == false)
        let tls = #expect(throws: ConfigError.self) { try RedisConfig(url: "rediss://h:6379") }
        #expect(tls?.description.contains("TLS") == true)
        // docker-compose.yaml names the host in REDIS_URL; the password comes from local.env.
        let split = try RedisConfig(
            environment: Environment(["REDIS_URL": "redis://redis:6379/0", "ETL_REDIS_PASSWORD": "s3cret"]))
        #expect(split.host == "redis" && split.password == "s3cret" && !split.description.contains("s3cret"))
        let urlWins = try RedisConfig(
            environment: Environment(["REDIS_URL": "redis://:inurl@redis:6379/0", "ETL_REDIS_PASSWORD": "other"]))
        #expect(urlWins.password == "inurl")
        let timeout = #expect(throws: ConfigError.self) {
            try RedisConfig(environment: Environment(["ETL_REDIS_TIMEOUT": "soon"]))
        }
        #expect(timeout?.variable == "ETL_REDIS_TIMEOUT")
    }

    @Test("log level from ETL_LOG_LEVEL")
    func logLevel() throws {
        #expect(try LoggingSetup.level(from: Environment([:])) == .info)
        #expect(try LoggingSetup.level(from: Environment(["ETL_LOG_LEVEL": "DEBUG"])) == .debug)
        let e = #expect(throws: ConfigError.self) {
            try LoggingSetup.level(from: Environment(["ETL_LOG_LEVEL": "loud"]))
        }
        #expect(e?.description.contains("trace") == true)
    }
}

@Suite("Small pure pieces", .timeLimit(.minutes(10)))
struct PureLogicTests {
    @Test("backoff grows exponentially to its cap, jitter stays within bounds")
    func backoff() {
        let b = Backoff(base: 0.1, cap: 2, jitter: 0.5)
        #expect(b.ceiling(attempt: 0) == 0.1)
        #expect(b.ceiling(attempt: 3) == 0.8)
        #expect(b.ceiling(attempt: 10) == 2)
        #expect(b.ceiling(attempt: 1000) == 2)
        #expect(b.delay(attempt: 2, random: 0) == 0.4)
        #expect(b.delay(attempt: 2, random: 1) == 0.2)
        for _ in 0..<100 { #expect((1.0...2.0).contains(b.delay(attempt: 20))) }
    }

    @Test("timestamps format and parse in Postgres's ISO form")
    func timestamps() {
        let d = Date(timeIntervalSince1970: 1_709_164_800.5)  // 2024-02-29 00:00:00.5 UTC
        #expect(PostgresTimestamp.format(d) == "2024-02-29 00:00:00.500000+00")
        #expect(PostgresTimestamp.parse("2024-02-29 00:00:00.5+00") == d)
        #expect(PostgresTimestamp.parse("2024-02-29 02:00:00.5+02") == d)
        #expect(PostgresTimestamp.parse("2024-02-29T00:00:00.5Z") == d)
        #expect(PostgresTimestamp.parse("1969-12-31 23:59:59+00") == Date(timeIntervalSince1970: -1))
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: -1)) == "1969-12-31 23:59:59+00")
        #expect(PostgresTimestamp.parse("2024-13-01") == nil)
        #expect(PostgresTimestamp.parse("2024-01-01 garbage") == nil)
        for days in stride(from: -800_000, through: 800_000, by: 9_973) {
            let (y, m, dd) = CivilDate.fromDays(days)
            #expect(CivilDate.toDays(year: y, month: m, day: dd) == days)
        }
    }

    @Test("commands encode as RESP arrays of bulk strings")
    func respEncoding() {
        let e = RedisCommandEncoder()
        e.encode(["SET", "k", [UInt8]([0, 10]), -12])
        #expect(
            e.bytes == Array("*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n".utf8) + [0, 10] + Array("\r\n$3\r\n-12\r\n".utf8))
        #expect(e.commandCount == 1)
    }

    @Test("RedisScript names scripts by their SHA-1")
    func scriptSHA() {
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}

@Suite("Hex", .timeLimit(.minutes(10)))
struct HexTests {
    @Test("encodes lower case and decodes either case; rejects odd lengths and non-digits")
    func hex() {
        #expect(Hex.encode([0, 15, 16, 255]) == "000f10ff")
        #expect(Hex.decode("000F10ff") == [0, 15, 16, 255])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("zz") == nil)
        #expect(Hex.decode("") == [])
    }
}

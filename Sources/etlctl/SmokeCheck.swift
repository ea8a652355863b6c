import ETLSupport
import Foundation
import PostgresClient
import RedisClient

/// Proves both servers are reachable and both clients work end to end, for `etlctl check` and
/// the main job's first step.
public enum SmokeCheck {
    public struct Report: Sendable {
        public var postgresEndpoint: String
        public var postgresVersion: String
        public var copiedRows: Int
        public var redisEndpoint: String
        public var redisVersion: String
        public var pipelined: Int

        public var dictionary: [String: Any] {
            [
                "postgres": ["endpoint": postgresEndpoint, "version": postgresVersion, "copied_rows": copiedRows],
                "redis": ["endpoint": redisEndpoint, "version": redisVersion, "pipelined": pipelined],
            ]
        }
    }

    public static func run(environment env: Environment) throws -> Report {
        let pg = try PostgresConnection(config: PostgresConfig(environment: env))
        defer { pg.close() }
        let version = try pg.query("SELECT split_part(version(), ' on ', 1)").rows[0].decode(String.self, 0)
        let rows = 1000
        let copied = try pg.transaction { tx -> Int in
            try tx.query("CREATE TEMPORARY TABLE etl_smoke (n int, label text) ON COMMIT DROP")
            let n = try tx.copyIn("COPY etl_smoke FROM STDIN") { w in
                for i in 1...rows { try w.writeRow([String(i), "row \(i)"]) }
            }
            let sum = try tx.query("SELECT sum(n) FROM etl_smoke WHERE label LIKE $1", ["row %"]).rows[0].decode(
                Int.self, 0)
            guard sum == rows * (rows + 1) / 2 else {
                throw PostgresError(
                    code: .misuse, message: "smoke check read back \(sum), expected \(rows * (rows + 1) / 2)",
                    endpoint: pg.endpoint)
            }
            return n
        }

        let redis = try RedisConnection(config: RedisConfig(environment: env))
        defer { redis.close() }
        let info = try redis.command("INFO", "server").string ?? ""
        let redisVersion =
            info.split(whereSeparator: \.isNewline)
            .first { $0.hasPrefix("redis_version:") }.map { String($0.dropFirst("redis_version:".count)) } ?? "?"
        let key = "etl:smoke:\(UInt32.random(in: 0...UInt32.max))"
        let n = 100
        let replies = try redis.pipeline { p in
            for _ in 0..<n { p.add("INCR", key) }
            p.add("EXPIRE", key, 60)
        }
        let script = RedisScript("return redis.call('GET', KEYS[1])")
        guard replies[n - 1] == .integer(n), try redis.eval(script, keys: [key]).int == n else {
            throw RedisError(.misuse, "smoke check pipeline did not count to \(n)", endpoint: redis.endpoint)
        }
        try redis.command("DEL", key)
        return Report(
            postgresEndpoint: pg.endpoint, postgresVersion: version, copiedRows: copied,
            redisEndpoint: redis.endpoint, redisVersion: redisVersion, pipelined: n)
    }
}

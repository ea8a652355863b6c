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

@Suite("Redis client against a real server", .timeLimit(.minutes(10)))
struct RedisClientTests {
    @Test("every reply type, and values with NUL bytes, Unicode and 4 MB")
    func replyTypes() throws {
        let redis = try RedisConnection(config: TestServices.redis)
        let p = TestServices.redisPrefix()
        defer { _ = try? redis.command("DEL", p + "bin", p + "big", p + "n", p + "list", p + "uni") }

        let binary: [UInt8] = [0, 0, 1, 255, 13, 10, 0, 36, 42]
        #expect(try redis.command("SET", p + "bin", binary) == .status("OK"))
        #expect(try redis.command("GET", p + "bin") == .bulk(binary))

        let unicode = "Ünïcødé 世界 🚀"
        try redis.command("SET", p + "uni", unicode)
        #expect(try redis.command("GET", p + "uni").string == unicode)

        let big = [UInt8](repeating: 0x61, count: 4 * 1024 * 1024)
        try redis.command("SET", p + "big", big)
        #expect(try redis.command("STRLEN", p + "big") == .integer(big.count))
        #expect(try redis.command("GET", p + "big").bytes == big)

        #expect(try redis.command("INCRBY", p + "n", 41) == .integer(41))
        #expect(try redis.command("INCR", p + "n").int == 42)
        #expect(try redis.command("GET", p + "missing") == .null)

        try redis.command("RPUSH", p + "list", "a", binary, "")
        #expect(
            try redis.command("LRANGE", p + "list", 0, -1)
                == .array([.bulk(Array("a".utf8)), .bulk(binary), .bulk([])]))
        #expect(try redis.command("MGET", p + "n", p + "missing") == .array([.bulk(Array("42".utf8)), .null]))

        // An error reply is thrown as .server and leaves the connection usable.
        let e = #expect(throws: RedisError.self) { try redis.command("LPUSH", p + "n", "x") }
        #expect(e?.code == .server)
        #expect(e?.message.hasPrefix("WRONGTYPE") == true)
        #expect(try redis.command("PING") == .status("PONG"))
    }

    @Test("a pipeline of 10,000 commands returns 10,000 replies in order, errors in place")
    func pipeline() throws {
        let redis = try RedisConnection(config: TestServices.redis)
        let key = TestServices.redisPrefix() + "counter"
        defer { _ = try? redis.command("DEL", key) }
        let replies = try redis.pipeline { p in
            for _ in 0..<9_999 { p.add("INCR", key) }
            p.add("HGET", key, "field")  // wrong type: an error reply in place
        }
        #expect(replies.count == 10_000)
        #expect(replies[0] == .integer(1))
        #expect(replies[9_998] == .integer(9_999))
        #expect(replies.prefix(9_999).enumerated().allSatisfy { $0.element == .integer($0.offset + 1) })
        #expect(replies[9_999].errorMessage?.hasPrefix("WRONGTYPE") == true)
        #expect(try redis.command("GET", key).int == 9_999)
    }

    @Test("a blocking read returns nil when its timeout passes")
    func blockingReadTimesOut() throws {
        let redis = try RedisConnection(config: TestServices.redis)
        let key = TestServices.redisPrefix() + "empty"
        let started = monotonicSeconds()
        let reply = try redis.blockingCommand(["BLPOP", key, "0.3"], blockFor: 0.3)
        let took = monotonicSeconds() - started
        #expect(reply == .null)
        #expect(took >= 0.25)
        // And a value pushed meanwhile is returned at once.
        let other = try RedisConnection(config: TestServices.redis)
        try other.command("RPUSH", key, "job")
        #expect(
            try redis.blockingCommand(["BLPOP", key, "5"], blockFor: 5)
                == .array([.bulk(Array(key.utf8)), .bulk(Array("job".utf8))]))
    }

    @Test("Lua through EVALSHA, falling back to EVAL after SCRIPT FLUSH")
    func scriptFallback() throws {
        let redis = try RedisConnection(config: TestServices.redis)
        let key = TestServices.redisPrefix() + "lua"
        defer { _ = try? redis.command("DEL", key) }
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        #expect(script.sha1.count == 40)
        try redis.command("SCRIPT", "FLUSH")
        #expect(try redis.eval(script, keys: [key], args: [5]) == .integer(5))  // NOSCRIPT, then EVAL
        #expect(try redis.command("SCRIPT", "EXISTS", script.sha1) == .array([.integer(1)]))
        #expect(try redis.eval(script, keys: [key], args: [2]) == .integer(7))  // EVALSHA hit
        let bad = RedisScript("return redis.call('NOSUCHCOMMAND')")
        let e = #expect(throws: RedisError.self) { try redis.eval(bad) }
        #expect(e?.code == .server)
    }

    @Test("the database number in REDIS_URL is selected")
    func selectsDatabase() throws {
        var config = try TestServices.redis
        config.database = 3
        let db3 = try RedisConnection(config: config)
        let db0 = try RedisConnection(config: TestServices.redis)
        let key = TestServices.redisPrefix() + "db"
        try db3.command("SET", key, "three")
        defer { _ = try? db3.command("DEL", key) }
        #expect(try db0.command("EXISTS", key) == .integer(0))
        #expect(try db3.command("GET", key).string == "three")
    }

    @Test("a wrong password gives a clear error without the password")
    func wrongPassword() throws {
        var config = try TestServices.redis
        let secret = "wrong-" + TestServices.randomSuffix()
        config.password = secret
        let e = #expect(throws: RedisError.self) { try RedisConnection(config: config) }
        #expect(e?.code == .authenticationFailed)
        #expect(e?.description.contains("REDIS_URL") == true)
        #expect(e?.description.contains(secret) == false)
        config.password = nil
        let none = #expect(throws: RedisError.self) { try RedisConnection(config: config) }
        #expect(none?.code == .authenticationFailed)
        #expect(none?.description.contains("requires a password") == true)
    }
}

/// Tests that stop, pause or restart the server use one of their own.
@Suite("Redis client against a server it restarts", .serialized, .timeLimit(.minutes(10)))
struct RedisRestartTests {
    @Test("after redis-server restarts, the client reconnects and AOF kept the data")
    func reconnectAfterRestart() throws {
        let server = try PrivateRedisServer()
        let redis = try RedisConnection(config: server.config)
        try redis.command("SET", "kept", "yes")
        try server.restart()
        // The first call may find the old socket dead (and say so); the next must work.
        var reply: RedisReply?
        for _ in 0..<2 {
            do {
                reply = try redis.command("GET", "kept")
                break
            } catch let e as RedisError {
                #expect(e.code == .connectionLost)
            }
        }
        #expect(reply?.string == "yes")
        #expect(redis.reconnects >= 1)
    }

    @Test("a call waits for a server that is down, and reconnects when it comes back")
    func reconnectWithBackoff() throws {
        let server = try PrivateRedisServer()
        let redis = try RedisConnection(config: server.config)
        redis.close()
        server.stop()
        let restarter = Thread {
            usleep(700_000)
            try? server.start()
        }
        restarter.start()
        #expect(try redis.command("PING") == .status("PONG"))  // blocked in reconnect's backoff meanwhile
        #expect(redis.reconnects == 1)
    }

    @Test("a command the server does not answer times out instead of hanging")
    func commandTimeout() throws {
        let server = try PrivateRedisServer()
        var config = server.config
        config.commandTimeout = 0.3
        let redis = try RedisConnection(config: config)
        let admin = try RedisConnection(config: server.config)
        try admin.command("CLIENT", "PAUSE", 1500, "ALL")
        let e = #expect(throws: RedisError.self) { try redis.command("GET", "x") }
        #expect(e?.code == .timeout)
        #expect(!redis.isConnected)
        usleep(1_500_000)
        #expect(try redis.command("PING") == .status("PONG"))
    }
}

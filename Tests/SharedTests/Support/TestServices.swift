import Foundation
import Logging
import Shared

/// The real Postgres and Redis servers the integration tests use.
///
/// When `DATABASE_URL` and `REDIS_URL` are set (as `scripts/test` does), those are used. Otherwise
/// `scripts/services start` is run once and its env file read, so a bare `swift test` works too.
enum TestServices {
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let environment: Environment = {
        let process = ProcessInfo.processInfo.environment
        if process["DATABASE_URL"] != nil && process["REDIS_URL"] != nil {
            return Environment(process)
        }
        let script = repoRoot.appendingPathComponent("scripts/services").path
        let out = try! run(script, ["start"])
        precondition(out.status == 0, "scripts/services start failed: \(out.stderr)")
        let envFile = try! run(script, ["env"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let text = try! String(contentsOfFile: envFile, encoding: .utf8)
        var merged = try! DotEnv.parse(text, file: envFile)
        merged.merge(process) { _, p in p }
        return Environment(merged)
    }()

    static var postgres: PostgresConfig { get throws { try PostgresConfig(environment: environment) } }
    static var redis: RedisConfig { get throws { try RedisConfig(environment: environment) } }

    /// A fresh schema for one test, with `search_path` pointing at it; dropped by `cleanup`.
    static func isolatedPostgres(_ name: String = #function) throws -> (PostgresConnection, String) {
        let conn = try PostgresConnection(config: postgres)
        let schema = "t_" + String(name.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(30)) + "_" + randomSuffix()
        try conn.execute(script: "CREATE SCHEMA \(schema); SET search_path TO \(schema)")
        return (conn, schema)
    }

    static func dropSchema(_ conn: PostgresConnection, _ schema: String) {
        _ = try? conn.execute(script: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
    }

    /// A key prefix unique to one test, so tests share one Redis without seeing each other.
    static func redisPrefix(_ name: String = #function) -> String {
        "test:\(name.filter { $0.isLetter || $0.isNumber }):\(randomSuffix()):"
    }

    static func randomSuffix() -> String { String(UInt32.random(in: 0...UInt32.max), radix: 36) }

    struct Output { var status: Int32; var stdout: String; var stderr: String }

    /// Runs a program to completion and captures its output.
    @discardableResult
    static func run(_ path: String, _ args: [String], environment: [String: String]? = nil) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Both pipes are drained at once: reading one to its end first would deadlock on a child
        // that fills the other's 64 KB buffer.
        final class Box: @unchecked Sendable { var data = Data() }
        let e = Box(), group = DispatchGroup()
        let errHandle = err.fileHandleForReading
        DispatchQueue.global().async(group: group) { e.data = errHandle.readDataToEndOfFile() }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e.data, as: UTF8.self))
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// The status code of `GET path` on 127.0.0.1:`port`, over a plain socket (nil when nothing
    /// answers within 2 s). No URLSession: its requests can hang on a busy test runner.
    static func httpStatus(port: Int, path: String) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let connected = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else { return nil }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n > 12 else { return nil }
        // "HTTP/1.1 200 OK"
        return Int(String(decoding: buffer[9..<12], as: UTF8.self))
    }

    /// This process's resident memory in bytes, from /proc.
    static func residentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = s.split(separator: " ")
        return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

/// A private redis-server process for tests that stop, pause or restart the server, so that
/// other tests sharing the main server are not disturbed.
final class PrivateRedisServer: @unchecked Sendable {  // used from one test at a time
    let port: Int
    let password: String
    let dir: URL
    private var process: Process?

    init() throws {
        port = TestServices.freePort()
        password = "pw-" + TestServices.randomSuffix() + TestServices.randomSuffix()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("etl-test-redis-\(port)-\(TestServices.randomSuffix())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let conf = """
        bind 127.0.0.1
        port \(port)
        dir \(dir.path)
        appendonly yes
        appendfsync always
        save ""
        requirepass \(password)
        logfile \(dir.path)/redis.log
        """
        try conf.write(to: dir.appendingPathComponent("redis.conf"), atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: dir.appendingPathComponent("redis.conf").path)
        try start()
    }

    var config: RedisConfig {
        var c = RedisConfig(host: "127.0.0.1", port: port, password: password)
        c.commandTimeout = 2
        c.reconnectTimeout = 10
        return c
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        p.arguments = [dir.appendingPathComponent("redis.conf").path]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        process = p
        // Wait until it answers.
        for _ in 0..<100 {
            if let c = try? RedisConnection(config: config) { c.close(); return }
            usleep(50_000)
        }
        throw TestSetupError(message: "redis-server did not start on port \(port); see \(dir.path)/redis.log")
    }

    /// Stops the server the way an operator would: `SHUTDOWN` flushes the AOF and exits. (Not
    /// SIGTERM: children of the test runner inherit a signal mask that blocks it.)
    func stop() {
        guard let p = process else { return }
        if let c = try? RedisConnection(config: config) { _ = try? c.command("SHUTDOWN") }
        let deadline = monotonicSeconds() + 5
        while p.isRunning && monotonicSeconds() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        process = nil
    }

    func restart() throws {
        stop()
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

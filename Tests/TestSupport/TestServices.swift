import Broker
import ETLSupport
import Foundation
import Logging
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The real Postgres and Redis servers the integration tests use, and the environment every
/// process a test starts begins from.
///
/// The servers' addresses come from the env file `ETL_TEST_ENV_FILE` names (`scripts/test` starts
/// servers on a fresh run folder and sets it); without it, from `DATABASE_URL`, `REDIS_URL` and
/// `ETL_SECRET_KEY` when all three are set; otherwise `scripts/services start` is run once and its
/// env file read, so a bare `swift test` works too. Nothing else of the test runner's environment
/// reaches the tests' processes: a stray `ETL_WORKER_PREFETCH` in the shell, or the user's
/// `./local.env` (`ETL_ENV_FILE=/dev/null`), cannot change what a test sees.
public enum TestServices {
    public static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The variables of the runner's own environment that children get (what any program needs to
    /// run at all); everything else is set by the tests.
    public static let inherited = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME"]

    public static let environment: Environment = {
        let process = ProcessInfo.processInfo.environment
        var values: [String: String] = [:]
        for k in inherited { values[k] = process[k] }
        values["ETL_ENV_FILE"] = "/dev/null"
        let servers: [String: String]
        if let file = process["ETL_TEST_ENV_FILE"], !file.isEmpty {
            servers = readEnvFile(file)
        } else if let db = process["DATABASE_URL"], let redis = process["REDIS_URL"],
            let key = process["ETL_SECRET_KEY"]
        {
            servers = ["DATABASE_URL": db, "REDIS_URL": redis, "ETL_SECRET_KEY": key]
        } else {
            let script = repoRoot.appendingPathComponent("scripts/services").path
            var env = values
            for k in ["ETL_RUN_DIR", "ETL_PG_PORT", "ETL_REDIS_PORT"] { env[k] = process[k] }
            let out = try! run(script, ["start"], environment: env, timeout: 300)
            precondition(out.status == 0, "scripts/services start failed: \(out.stderr)")
            servers = readEnvFile(
                try! run(script, ["env"], environment: env).stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        values.merge(servers) { _, s in s }
        // Where those servers live, for tests that run scripts starting programs against them
        // (scripts/run calls scripts/services start, which must find these servers, not start others).
        if let file = servers["__file"] {
            values["ETL_RUN_DIR"] = URL(fileURLWithPath: file).deletingLastPathComponent().path
        }
        values["__file"] = nil
        for (variable, url) in [("ETL_PG_PORT", "DATABASE_URL"), ("ETL_REDIS_PORT", "REDIS_URL")] {
            if let port = values[url].flatMap({ URLComponents(string: $0)?.port }) { values[variable] = String(port) }
        }
        return Environment(values)
    }()

    static func readEnvFile(_ path: String) -> [String: String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            preconditionFailure(
                "cannot read the test servers' env file \(path) (ETL_TEST_ENV_FILE): run the tests with scripts/test")
        }
        var values = try! DotEnv.parse(text, file: path)
        values["__file"] = path
        return values
    }

    public static var postgres: PostgresConfig { get throws { try PostgresConfig(environment: environment) } }
    public static var redis: RedisConfig { get throws { try RedisConfig(environment: environment) } }

    /// A fresh schema for one test, with `search_path` pointing at it; dropped by `cleanup`.
    public static func isolatedPostgres(_ name: String = #function) throws -> (PostgresConnection, String) {
        let conn = try PostgresConnection(config: postgres)
        let schema =
            "t_" + String(name.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(30)) + "_" + randomSuffix()
        try conn.execute(script: "CREATE SCHEMA \(schema); SET search_path TO \(schema)")
        return (conn, schema)
    }

    public static func dropSchema(_ conn: PostgresConnection, _ schema: String) {
        _ = try? conn.execute(script: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
    }

    /// A key prefix unique to one test, so tests share one Redis without seeing each other.
    public static func redisPrefix(_ name: String = #function) -> String {
        "test:\(name.filter { $0.isLetter || $0.isNumber }):\(randomSuffix()):"
    }

    public static func randomSuffix() -> String { String(UInt32.random(in: 0...UInt32.max), radix: 36) }

    public struct Output {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs a program to completion and captures its output. It gets `environment` (default: the
    /// tests' base environment, never the runner's own) and runs in a process group of its own
    /// (through setsid), which is SIGKILLed whole after `timeout` seconds: the program and whatever
    /// it started (a script's servers and workers, which may hold the output pipes). A timeout is an
    /// error, so a hung child fails its test instead of hanging the run. `namespace`: in that network
    /// namespace (a NetworkLab host).
    @discardableResult
    public static func run(
        _ path: String, _ args: [String], environment: [String: String]? = nil, timeout: Double = 120,
        namespace: String? = nil, input: String? = nil
    ) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        p.arguments = ["--wait"] + (namespace.map { [NetworkLab.ip, "netns", "exec", $0] } ?? []) + [path] + args
        p.environment = environment ?? Self.environment.values
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let stdin = input.map { _ in Pipe() }
        if let stdin { p.standardInput = stdin }
        try p.run()
        if let stdin, let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try? stdin.fileHandleForWriting.close()
        }
        final class Flag: @unchecked Sendable { var killed = false }
        let killed = Flag()
        let pid = p.processIdentifier
        // The group outlives its leader while any member lives, so its id cannot be reused meanwhile.
        let watchdog = DispatchWorkItem {
            killed.killed = true
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        defer { watchdog.cancel() }
        // Both pipes are drained at once: reading one to its end first would deadlock on a child
        // that fills the other's 64 KB buffer.
        final class Box: @unchecked Sendable { var data = Data() }
        let e = Box()
        let group = DispatchGroup()
        let errHandle = err.fileHandleForReading
        DispatchQueue.global().async(group: group) { e.data = errHandle.readDataToEndOfFile() }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let output = Output(
            status: waitForExit(p), stdout: String(decoding: o, as: UTF8.self),
            stderr: String(decoding: e.data, as: UTF8.self))
        if killed.killed {
            throw TestSetupError(
                message:
                    "\(path) \(args.joined(separator: " ").prefix(200)) ran past \(timeout) s"
                    + " and was killed; its output:\n"
                    + "\(output.stdout.suffix(3000))\n\(output.stderr.suffix(3000))")
        }
        return output
    }

    /// The exit status of `p` (128 + the signal when a signal ended it). Foundation's own wait may
    /// miss the exit of a child that ends within a few milliseconds of another (seen with the quick
    /// `ip` commands of NetworkLab: the child stayed a zombie and `waitUntilExit` never returned),
    /// so the child is also reaped here.
    public static func waitForExit(_ p: Process) -> Int32 {
        let pid = p.processIdentifier
        while p.isRunning {
            var raw: Int32 = 0
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid { return raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f) }
            if r < 0 && errno == ECHILD { break }  // Foundation reaped it
            usleep(2_000)
        }
        p.waitUntilExit()
        return p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now.
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// The status code of `GET path` on 127.0.0.1:`port`, over a plain socket (nil when nothing
    /// answers within 2 s). No URLSession: its requests can hang on a busy test runner.
    public static func httpStatus(port: Int, path: String) -> Int? {
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
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
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
    public static func residentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = s.split(separator: " ")
        return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

/// A private redis-server process for tests that stop, pause or restart the server, so that
/// other tests sharing the main server are not disturbed.
public final class PrivateRedisServer: @unchecked Sendable {  // used from one test at a time
    private(set) var port: Int
    public let password: String
    public let dir: URL
    private var process: Process?

    /// A port is chosen free, but another program may bind it before the server does: the server is
    /// then started again on another port (redis-server exits when its port is taken).
    public init() throws {
        port = TestServices.freePort()
        password = "pw-" + TestServices.randomSuffix() + TestServices.randomSuffix()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "etl-test-redis-\(TestServices.randomSuffix())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for attempt in 1...5 {
            do {
                try writeConfig()
                try start()
                return
            } catch  where attempt < 5 {
                stop()
                port = TestServices.freePort()
            }
        }
    }

    private func writeConfig() throws {
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
        try FileManager.default.setAttributes(
            [.posixPermissions: 0o600], ofItemAtPath: dir.appendingPathComponent("redis.conf").path)
    }

    public var config: RedisConfig {
        var c = RedisConfig(host: "127.0.0.1", port: port, password: password)
        c.commandTimeout = 2
        c.reconnectTimeout = 10
        return c
    }

    public func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        p.arguments = [dir.appendingPathComponent("redis.conf").path]
        p.environment = TestServices.environment.values  // not the runner's own
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        process = p
        // Wait until it answers (and give up at once if it exited: its port was taken).
        for _ in 0..<100 {
            if let c = try? RedisConnection(config: config) {
                c.close()
                return
            }
            if !p.isRunning { break }
            usleep(50_000)
        }
        throw TestSetupError(message: "redis-server did not start on port \(port); see \(dir.path)/redis.log")
    }

    /// Stops the server the way an operator would: `SHUTDOWN` flushes the AOF and exits. (Not
    /// SIGTERM: children of the test runner inherit a signal mask that blocks it.)
    public func stop() {
        guard let p = process else { return }
        if let c = try? RedisConnection(config: config) { _ = try? c.command("SHUTDOWN") }
        let deadline = monotonicSeconds() + 5
        while p.isRunning && monotonicSeconds() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        process = nil
    }

    public func restart() throws {
        stop()
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

public struct TestSetupError: Error, CustomStringConvertible {
    public init(message: String) { self.message = message }
    public let message: String
    public var description: String { message }
}

import ETLSupport
import Foundation

/// Hosts of their own for one test: Linux network namespaces on a switch of their own (a bridge in
/// one more namespace), each joined to it by a veth pair, on a /24 from 198.18.0.0/15 (the range
/// set aside for network tests). Host `db` runs Postgres and Redis (`scripts/services` on a run
/// folder of the lab's, listening on the db host's address and letting in 198.18.0.0/15); each
/// worker and scheduler a test starts goes on a host of its own (`Cluster(lab:)`). The test process
/// itself reaches the network through one more veth pair, from the root namespace, so it reads the
/// servers as any host does.
///
/// A link is cut at the switch (`cut`): the host keeps its address and route, and what it sends
/// vanishes without an error, as across a cut cable (netem is not in every kernel; Debian's
/// iptables is nftables-based and may be refused). Where the kernel or the user may not make
/// namespaces, `init` throws with the reason: the test fails, it is not skipped.
///
/// Traffic goes only to the lab's addresses: nothing is routed beyond its /24.
public final class NetworkLab: @unchecked Sendable {  // used from one test at a time
    public let tag: String
    /// The first three parts of the lab's addresses, e.g. "198.18.7".
    public let net: String
    public let dir: URL
    /// The servers' settings at the db host's address: DATABASE_URL, REDIS_URL, ETL_SECRET_KEY.
    public private(set) var servers: [String: String] = [:]
    private var hosts: [String: Int] = [:]
    private var order: [String] = []
    private let lan: String
    private let rootLink: String

    /// The port of each server on the db host (a namespace has ports of its own).
    public static let pgPort = 5432
    public static let redisPort = 6379
    public static let clients = "198.18.0.0/15"

    static let ip: String = {
        for p in ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        where FileManager.default.isExecutableFile(
            atPath: p)
        {
            return p
        }
        return "ip"
    }()

    /// Subnets taken by labs of this process (suites run side by side).
    nonisolated(unsafe) private static var taken: Set<Int> = []
    private static let lock = NSLock()
    private let subnet: Int

    public init(name: String = #function) throws {
        guard getuid() == 0 else {
            throw TestSetupError(
                message: """
                    network namespaces need root (ip netns add, veth pairs): run the tests as root, as CI does \
                    (this test makes hosts of its own, it cannot run without them)
                    """)
        }
        tag = String(String(UInt32.random(in: 0...UInt32.max), radix: 36).suffix(5))
        lan = "etl\(tag)-lan"
        rootLink = "e\(tag)r"
        // A /24 no address of this machine is in, and no other lab of this process has.
        let used = (try? TestServices.run(Self.ip, ["-4", "-o", "addr", "show"]).stdout) ?? ""
        var pick: Int?
        Self.lock.lock()
        for _ in 0..<200 {
            let n = Int.random(in: 1...510)
            let candidate = n < 256 ? "198.18.\(n)" : "198.19.\(n - 256)"
            if !Self.taken.contains(n) && !used.contains(" \(candidate).") {
                pick = n
                Self.taken.insert(n)
                break
            }
        }
        Self.lock.unlock()
        guard let n = pick else { throw TestSetupError(message: "no free /24 in 198.18.0.0/15 for a network lab") }
        subnet = n
        net = n < 256 ? "198.18.\(n)" : "198.19.\(n - 256)"
        let base =
            TestServices.environment["ETL_RUN_DIR"].map { URL(fileURLWithPath: $0).appendingPathComponent("labs") }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("etl-labs")
        dir = base.appendingPathComponent(tag)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        do {
            try ip(
                ["netns", "add", lan],
                why: """
                    the kernel or this user may not make network namespaces (it needs CAP_SYS_ADMIN and \
                    CONFIG_NET_NS): run the tests as root on a machine that allows them
                    """)
            note(namespace: lan)
            try ip(["-n", lan, "link", "add", "br0", "type", "bridge"], why: "no bridge in the kernel (CONFIG_BRIDGE)")
            try ip(["-n", lan, "link", "set", "br0", "up"])
            try ip(
                ["link", "add", rootLink, "type", "veth", "peer", "name", "p\(tag)r", "netns", lan],
                why: "no veth pairs in the kernel (CONFIG_VETH)")
            try ip(["-n", lan, "link", "set", "p\(tag)r", "master", "br0", "up"])
            try ip(["addr", "add", "\(net).254/24", "dev", rootLink])
            try ip(["link", "set", rootLink, "up"])
            _ = try host("db")
            let out = try runServices(["start"])
            guard out.status == 0 else {
                throw TestSetupError(message: "the lab's servers did not start on \(net).1: \(out.stderr)")
            }
            servers = TestServices.readEnvFile(dir.appendingPathComponent("services/services.env").path)
            servers["__file"] = nil
        } catch {
            close()
            throw error
        }
    }

    /// The namespace of `host`, made (and joined to the switch) on first use; hosts get addresses
    /// .1 (db), .2, .3, … in the order they are first named.
    @discardableResult
    public func host(_ name: String) throws -> String {
        if hosts[name] != nil { return namespace(name) }
        let i = order.count + 1
        guard i < 250 else { throw TestSetupError(message: "a lab has at most 249 hosts") }
        let ns = namespace(name)
        try ip(["netns", "add", ns])
        note(namespace: ns)
        hosts[name] = i
        order.append(name)
        try ip(["-n", ns, "link", "set", "lo", "up"])
        try ip([
            "link", "add", "e\(tag)h\(i)", "netns", ns, "type", "veth", "peer", "name", "p\(tag)h\(i)", "netns", lan,
        ])
        try ip(["-n", ns, "addr", "add", "\(net).\(i)/24", "dev", "e\(tag)h\(i)"])
        try ip(["-n", ns, "link", "set", "e\(tag)h\(i)", "up"])
        try ip(["-n", lan, "link", "set", "p\(tag)h\(i)", "master", "br0", "up"])
        return ns
    }

    public func namespace(_ host: String) -> String { "etl\(tag)-\(host)" }

    public func address(_ host: String) -> String? { hosts[host].map { "\(net).\($0)" } }

    /// Cuts `host`'s link at the switch: what it sends and what is sent to it vanish.
    public func cut(_ host: String) throws {
        guard let i = hosts[host] else { throw TestSetupError(message: "no host \(host) in the lab") }
        try ip(["-n", lan, "link", "set", "p\(tag)h\(i)", "down"])
    }

    /// Joins `host`'s link again.
    public func mend(_ host: String) throws {
        guard let i = hosts[host] else { throw TestSetupError(message: "no host \(host) in the lab") }
        try ip(["-n", lan, "link", "set", "p\(tag)h\(i)", "up"])
    }

    /// `scripts/services <args>` on the db host, for the lab's servers (e.g. `stop redis`).
    public func services(_ args: String...) throws {
        let out = try runServices(args)
        guard out.status == 0 else {
            throw TestSetupError(message: "scripts/services \(args.joined(separator: " ")) on the lab: \(out.stderr)")
        }
    }

    /// How to start `path` on `host`: `ip netns exec` runs it in place (the pid is the program's).
    public func command(on host: String, _ path: String, _ args: [String]) throws -> (String, [String]) {
        (Self.ip, ["netns", "exec", try self.host(host), path] + args)
    }

    /// The test environment with the lab's servers in place of the test servers (and without their
    /// ports and run folder): what programs and connections on the lab start from.
    public var environment: [String: String] {
        var e = TestServices.environment.values
        for k in ["ETL_RUN_DIR", "ETL_PG_PORT", "ETL_REDIS_PORT"] { e[k] = nil }
        return e.merging(servers) { _, x in x }
    }

    /// `scripts/services <args>` on the db host, with the lab's run folder, ports and addresses.
    private func runServices(_ args: [String]) throws -> TestServices.Output {
        try TestServices.run(
            TestServices.repoRoot.appendingPathComponent("scripts/services").path, args,
            environment: servicesEnvironment(), timeout: 120, namespace: namespace("db"))
    }

    private func servicesEnvironment() -> [String: String] {
        var e = TestServices.environment.values
        e["ETL_RUN_DIR"] = dir.appendingPathComponent("services").path
        e["ETL_PG_PORT"] = String(Self.pgPort)
        e["ETL_REDIS_PORT"] = String(Self.redisPort)
        e["ETL_SERVICES_HOST"] = "\(net).1"
        e["ETL_SERVICES_CLIENTS"] = Self.clients
        return e
    }

    /// Namespaces are listed in the lab's folder, so that scripts/test removes them after a test
    /// process that died before `close`.
    private func note(namespace: String) {
        let f = dir.appendingPathComponent("namespaces")
        let line = Data((namespace + "\n").utf8)
        if let h = try? FileHandle(forWritingTo: f) {
            h.seekToEndOfFile()
            h.write(line)
            try? h.close()
        } else {
            try? line.write(to: f)
        }
    }

    private func ip(_ args: [String], why: String? = nil) throws {
        let out = try TestServices.run(Self.ip, args, timeout: 30)
        guard out.status == 0 else {
            let reason = why.map { ": \($0)" } ?? ""
            let said = out.stderr.trimmingCharacters(in: .newlines)
            throw TestSetupError(message: "ip \(args.joined(separator: " ")) failed (\(said))\(reason)")
        }
    }

    private var closed = false

    /// Stops the servers, removes their data and every namespace (the veth pairs go with them).
    public func close() {
        guard !closed else { return }
        closed = true
        if hosts["db"] != nil {
            _ = try? runServices(["destroy"])
        }
        for ns in order.map(namespace) + [lan] { _ = try? TestServices.run(Self.ip, ["netns", "delete", ns]) }
        _ = try? TestServices.run(Self.ip, ["link", "delete", rootLink])
        try? FileManager.default.removeItem(at: dir)
        Self.lock.lock()
        Self.taken.remove(subnet)
        Self.lock.unlock()
    }

    deinit { close() }
}

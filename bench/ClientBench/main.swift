// Measures the Shared clients the way redis-benchmark and psql measure themselves, so that
// bench/clients can print ratios from one run on the same servers.
//
//   ClientBench redis-single N            N SETs, one round trip each
//   ClientBench redis-pipeline N DEPTH    N SETs in pipelines of DEPTH
//   ClientBench gen-copy FILE ROWS        writes a COPY text file of parsed weblog-like rows
//   ClientBench copy FILE TABLE           COPYs FILE into TABLE through PostgresConnection.copyIn
//   ClientBench copy-memory TABLE ROWS    COPYs ROWS generated rows (~110 bytes each) into TABLE and
//                                         prints `<rows> <bytes sent> <resident growth in bytes>`: the
//                                         streaming-memory test runs it as a process of its own, so
//                                         no other test's allocations count against it
//
// Each measuring mode prints `<ops per second>` on its last line. Connection settings come from
// REDIS_URL and DATABASE_URL.
import ETLSupport
import Foundation
import PostgresClient
import RedisClient

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ClientBench: \(message)\n".utf8))
    exit(2)
}

let args = CommandLine.arguments.dropFirst()
guard let mode = args.first else {
    fail("usage: ClientBench redis-single N | redis-pipeline N DEPTH | gen-copy FILE ROWS | copy FILE TABLE")
}
let env: Environment
do { env = try Environment.load() } catch { fail("\(error)") }

func number(_ i: Int) -> Int {
    let a = Array(args)
    guard a.count > i, let n = Int(a[i]), n > 0 else { fail("argument \(i) of \(mode) must be a positive number") }
    return n
}

do {
    switch mode {
    case "redis-single":
        let n = number(1)
        let redis = try RedisConnection(config: RedisConfig(environment: env))
        // The same command, key and 3-byte value as `redis-benchmark -t set` without -r.
        let key = "key:__rand_int__"
        let value = "xxx"
        for _ in 0..<1000 { try redis.command("SET", key, value) }  // warm-up
        let t0 = monotonicSeconds()
        for _ in 0..<n { try redis.command("SET", key, value) }
        print(Double(n) / (monotonicSeconds() - t0))
    case "redis-pipeline":
        let n = number(1)
        let depth = number(2)
        let redis = try RedisConnection(config: RedisConfig(environment: env))
        let key = "key:__rand_int__"
        let value = "xxx"
        let t0 = monotonicSeconds()
        var done = 0
        while done < n {
            let batch = min(depth, n - done)
            let replies = try redis.pipeline { p in for _ in 0..<batch { p.add("SET", key, value) } }
            guard replies.count == batch else { fail("pipeline returned \(replies.count) of \(batch) replies") }
            done += batch
        }
        print(Double(n) / (monotonicSeconds() - t0))
    case "gen-copy":
        let a = Array(args)
        guard a.count > 1 else { fail("gen-copy needs FILE ROWS") }
        let rows = number(2)
        _ = FileManager.default.createFile(atPath: a[1], contents: nil)
        guard let fh = FileHandle(forWritingAtPath: a[1]) else { fail("cannot write \(a[1])") }
        let devices = ["iPhone", "Samsung SM-G991B", "Windows PC", "Mac", "iPad", "Pixel 7"]
        let countries = ["AR", "BR", "US", "DE", "ES", "MX"]
        let paths = ["/login", "/products/1234", "/cart", "/checkout", "/products/98"]
        var chunk = ""
        for i in 0..<rows {
            let ts = 1_700_000_000 + i
            chunk += """
                \(i + 1)\t\(PostgresTimestamp.format(Date(timeIntervalSince1970: Double(ts))))\t\
                10.\(i % 250).\(i / 250 % 250).\(i % 199)\tuser\(i % 5000)\t\(devices[i % devices.count])\t\
                \(countries[i % countries.count])\tGET\t\(paths[i % paths.count])\t200\t\(1000 + i % 9000)\n
                """
            if chunk.utf8.count > 1 << 20 {
                fh.write(Data(chunk.utf8))
                chunk = ""
            }
        }
        fh.write(Data(chunk.utf8))
        try fh.close()
    case "copy":
        let a = Array(args)
        guard a.count > 2 else { fail("copy needs FILE TABLE") }
        let pg = try PostgresConnection(config: PostgresConfig(environment: env))
        let fd = open(a[1], O_RDONLY)
        guard fd >= 0 else { fail("cannot open \(a[1])") }
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 16)
        defer { buffer.deallocate() }
        let t0 = monotonicSeconds()
        let rows = try pg.copyIn("COPY \(a[2]) FROM STDIN") { w in
            while true {
                let got = read(fd, buffer.baseAddress, buffer.count)
                guard got > 0 else { break }
                try w.write(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            }
        }
        let elapsed = monotonicSeconds() - t0
        FileHandle.standardError.write(Data("copied \(rows) rows in \(String(format: "%.2f", elapsed)) s\n".utf8))
        print(Double(rows) / elapsed)
    case "copy-memory":
        let a = Array(args)
        guard a.count > 2 else { fail("copy-memory needs TABLE ROWS") }
        let rows = number(2)
        func resident() -> Int {
            guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
            return (Int(s.split(separator: " ")[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
        }
        let pg = try PostgresConnection(config: PostgresConfig(environment: env))
        let before = resident()
        var peak = before
        var sent = 0
        let padding = String(repeating: "x", count: 80)
        let copied = try pg.copyIn("COPY \(a[1]) (id, label, amount) FROM STDIN") { w in
            for i in 0..<rows {
                try w.write("\(i)\tlabel-\(i)-\(padding)\t\(i % 10_000).\(i % 100)\n")
                if i % 20_000 == 0 { peak = max(peak, resident()) }
            }
            sent = w.bytesSent
        }
        peak = max(peak, resident())
        print("\(copied) \(sent) \(peak - before)")
    default:
        fail("unknown mode \(mode)")
    }
} catch {
    fail("\(error)")
}

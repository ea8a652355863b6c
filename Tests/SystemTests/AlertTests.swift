import ETLSupport
import Foundation
import TestSupport
import Testing

/// A webhook of the test's own on loopback (Python's http.server): it saves each POST's body and
/// answers 500 to the first `failFirst` of them, 200 after.
final class WebhookReceiver {
    let dir: URL
    let port: Int
    private let process: Process

    init(failFirst: Int) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("etl-hook-\(TestServices.randomSuffix())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let script = """
            import http.server, os, sys
            out, fail_first = sys.argv[1], int(sys.argv[2])
            seen = [0]
            class Hook(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                    seen[0] += 1
                    code = 500 if seen[0] <= fail_first else 200
                    with open(os.path.join(out, '%04d-%d.json' % (seen[0], code)), 'wb') as f:
                        f.write(body)
                    self.send_response(code)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                def log_message(self, *args):
                    pass
            server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Hook)
            with open(os.path.join(out, 'port.tmp'), 'w') as f:
                f.write(str(server.server_address[1]))
            os.rename(os.path.join(out, 'port.tmp'), os.path.join(out, 'port'))
            server.serve_forever()
            """
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, dir.path, String(failFirst)]
        try process.run()
        let end = monotonicSeconds() + 10
        var found: Int?
        while found == nil && monotonicSeconds() < end {
            found = (try? String(contentsOf: dir.appendingPathComponent("port"), encoding: .utf8)).flatMap {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            if found == nil { usleep(20_000) }
        }
        guard let found else { throw TestSetupError(message: "the test's webhook did not start (python3)") }
        port = found
    }

    /// The bodies received, in order, with the status each was answered.
    func received() throws -> [(status: Int, json: [String: Any])] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".json") }.sorted().map {
            let status = Int($0.dropFirst(5).prefix(3)) ?? 0
            let data = try Data(contentsOf: dir.appendingPathComponent($0))
            return (status, (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:])
        }
    }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        _ = TestServices.waitForExit(process)
        try? FileManager.default.removeItem(at: dir)
    }
}

@Suite("Alerts to webhooks", .serialized, .timeLimit(.minutes(5)))
struct AlertTests {
    @Test(
        """
        a task's final failure, its failed run and a dead letter reach a webhook of ours once each, with the DAG, \
        run, date, error and a link; the first refusal is retried and every attempt recorded; the URL is never \
        logged
        """
    )
    func failedRunAndDeadLetter() throws {
        let hook = try WebhookReceiver(failFirst: 1)
        let secret = "hooks/T0/secret-\(TestServices.randomSuffix())"
        let c = try Cluster(extra: [
            "ETL_ALERT_WEBHOOKS": "http://127.0.0.1:\(hook.port)/\(secret)",
            "ETL_PUBLIC_URL": "http://etl.example.test/",
        ])
        defer { c.stopAll() }
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_retry_out")
        #expect(try c.wait(run: run, timeout: 60) == .failed, "\(c.logs())")
        // A message nobody can read: the worker dead-letters it.
        _ = try c.queue.redis.command("XADD", c.queue.keys.queue("default"), "*", "body", "not a message", "sig", "x")
        let s = c.schema
        try c.waitFor("three alerts delivered", timeout: 60) {
            try c.store.pg.query(
                """
                SELECT count(*) FILTER (WHERE d.sent_at IS NOT NULL) = 3 AND count(*) = 3
                FROM \(s).alert a JOIN \(s).alert_delivery d USING (alert_id)
                """
            ).rows[0].decode(Bool.self, 0)
        }
        let got = try hook.received()
        #expect(got.count == 4 && got[0].status == 500, "\(got.map(\.status))")
        let accepted = got.filter { $0.status == 200 }.map { $0.json["alert"] as? [String: Any] ?? [:] }
        let failed = try #require(accepted.first { $0["kind"] as? String == "run_failed" }, "\(accepted)")
        #expect(failed["dag"] as? String == "example_retry_out")
        #expect((failed["run"] as? NSNumber)?.int64Value == run)
        #expect(failed["date"] as? String == "2024-06-01")
        #expect((failed["error"] as? String)?.hasPrefix("doomed: ") == true, "\(failed)")
        #expect(failed["link"] as? String == "http://etl.example.test/dags/example_retry_out/runs/\(run)")
        let text = got.first { ($0.json["alert"] as? [String: Any])?["kind"] as? String == "run_failed" }?.json["text"]
        #expect((text as? String)?.contains("failed") == true)
        let task = try #require(accepted.first { $0["kind"] as? String == "task_failed" }, "\(accepted)")
        #expect(task["task"] as? String == "doomed")
        #expect((task["error"] as? String)?.hasPrefix("doomed: ") == true, "\(task)")
        #expect(task["link"] as? String == "http://etl.example.test/dags/example_retry_out/runs/\(run)/tasks/doomed")
        let dead = try #require(accepted.first { $0["kind"] as? String == "dead_letter" }, "\(accepted)")
        #expect((dead["message"] as? String)?.hasPrefix("queue default: ") == true, "\(dead)")
        // Every attempt recorded: four, the refused one first, with its status.
        let attempts = try c.store.pg.query(
            "SELECT ok, detail FROM \(s).alert_attempt ORDER BY at"
        ).rows.map { (try $0.decode(Bool.self, 0), try $0.decode(String.self, 1)) }
        #expect(attempts.map(\.0) == [false, true, true, true] && attempts[0].1 == "HTTP 500", "\(attempts)")
        // Made once each: finishing again or another leader adds none.
        #expect(try c.store.pg.query("SELECT count(*) FROM \(s).alert").rows[0].decode(Int.self, 0) == 3)
        #expect(!c.logs(whole: true).contains(secret), "the webhook's URL is in a log")
    }

    @Test(
        """
        e-mail through msmtp to an SMTP server of ours: a scheduled run past its deadline (ETL_DAG_DEADLINES) and \
        a run that waited longer than ETL_UPSTREAM_WAIT_LIMIT for its upstream DAG (it fails with the reason) \
        each reach both recipients once; a mail program that is not there stops the scheduler with the fix
        """
    )
    func mailDeadlineAndWaitLimit() throws {
        let smtp = try SMTPReceiver()
        let rc = smtp.dir.appendingPathComponent("msmtprc")
        try """
        defaults
        auth off
        tls off
        account default
        host 127.0.0.1
        port \(smtp.port)
        from etl@example.test

        """.write(to: rc, atomically: true, encoding: .utf8)
        chmod(rc.path, 0o600)
        let c = try Cluster(extra: [
            "ETL_ALERT_EMAIL_TO": "ops@example.test, data@example.test", "ETL_ALERT_EMAIL_FROM": "etl@example.test",
            "ETL_ALERT_SENDMAIL": "/usr/bin/msmtp -C \(rc.path)", "ETL_PUBLIC_URL": "http://etl.example.test",
            "ETL_DAG_DEADLINES": "example_hourly=0.01", "ETL_UPSTREAM_WAIT_LIMIT": "0.05",
        ])
        defer { c.stopAll() }
        // No worker: example_hourly's scheduled run cannot finish; example_downstream waits for an
        // example_upstream run that nobody makes.
        try c.startScheduler()
        let run = try c.trigger("example_downstream")
        #expect(try c.wait(run: run, timeout: 30) == .failed, "\(c.logs())")
        let consume = try #require(try c.store.taskRows(run: run).first { $0.task == "consume" })
        #expect(consume.state == "upstream_failed")
        #expect(consume.error?.contains("waited over 0.05 min for the runs of example_upstream") == true, "\(consume)")
        try c.waitFor("two mails", timeout: 40) { try smtp.messages().count >= 2 }
        sleepSeconds(2)
        let mails = try smtp.messages()
        #expect(mails.count == 2, "\(mails)")
        let deadline = try #require(mails.first { $0.contains("has not finished by its deadline") }, "\(mails)")
        #expect(deadline.contains("Subject: [etl] run ") && deadline.contains("of example_hourly for "))
        #expect(deadline.contains("To: ops@example.test, data@example.test"))
        #expect(deadline.contains("http://etl.example.test/dags/example_hourly/runs/"))
        let failed = try #require(mails.first { $0.contains("Subject: [etl] run \(run) of example_downstream") })
        #expect(failed.contains("consume: waited over 0.05 min"), "\(failed)")
        #expect(failed.contains("http://etl.example.test/dags/example_downstream/runs/\(run)"))
        // Both recipients had each one (the server records the envelope).
        #expect(mails.allSatisfy { $0.contains("X-RcptTo: ops@example.test, data@example.test") }, "\(mails)")
        let attempts = try c.store.pg.query("SELECT ok, detail FROM \(c.schema).alert_attempt WHERE target = 'email'")
            .rows.map { (try $0.decode(Bool.self, 0), try $0.decode(String.self, 1)) }
        #expect(attempts.count == 2 && attempts.allSatisfy { $0.0 && $0.1 == "msmtp exited 0" }, "\(attempts)")
        // A mail program that is not there: the scheduler does not start, and says what to do.
        var env = c.env
        env["ETL_ALERT_SENDMAIL"] = "/nonexistent/sendmail -t"
        let bad = try TestServices.run(Cluster.binDir.appendingPathComponent("scheduler").path, [], environment: env)
        #expect(bad.status == 1 && bad.stderr.contains("ETL_ALERT_SENDMAIL") && bad.stderr.contains("Fix"), "\(bad)")
    }
}

/// An SMTP server of the test's own on loopback (aiosmtpd, Debian's python3-aiosmtpd), saving
/// every message into a Maildir.
final class SMTPReceiver {
    let dir: URL
    let port: Int
    private let process: Process

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("etl-smtp-\(TestServices.randomSuffix())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        port = TestServices.freePort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [
            "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:\(port)", "-c", "aiosmtpd.handlers.Mailbox",
            dir.appendingPathComponent("mail").path,
        ]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let end = monotonicSeconds() + 10
        while monotonicSeconds() < end {
            if Self.listening(port) { return }
            usleep(50_000)
        }
        throw TestSetupError(message: "the test's SMTP server did not start (/usr/bin/python3 -m aiosmtpd)")
    }

    static func listening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// The messages received, whole (headers and body).
    func messages() throws -> [String] {
        let new = dir.appendingPathComponent("mail/new")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: new.path)) ?? []
        return try names.sorted().map { try String(contentsOf: new.appendingPathComponent($0), encoding: .utf8) }
    }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        _ = TestServices.waitForExit(process)
        try? FileManager.default.removeItem(at: dir)
    }
}

import Broker
import ETLSupport
import Foundation
import Logging
import Metadata
import PostgresClient
import RedisClient

/// Where alerts go and what raises them (issue 16).
///
///   ETL_ALERT_WEBHOOKS    http(s) URLs, separated by commas or spaces (Slack's and Mattermost's
///                         incoming webhooks accept the body); secrets: never logged or shown
///   ETL_ALERT_ON_SUCCESS  also a run's success (default false)
///   ETL_PUBLIC_URL        the web UI's address as people reach it, for the links in alerts
///   ETL_ALERT_TIMEOUT     seconds one POST (or one mail program's run) may take (default 10)
///   ETL_ALERT_EMAIL_TO    e-mail addresses, separated by commas or spaces: one message to them all
///   ETL_ALERT_EMAIL_FROM  the sender (default etl@<host name>)
///   ETL_ALERT_SENDMAIL    a sendmail-compatible program with its options (default /usr/sbin/sendmail;
///                         e.g. `/usr/bin/msmtp -C /etc/etl/msmtprc`): its own configuration holds
///                         the SMTP server and any password, never this program's settings
public struct AlertSettings: Sendable {
    public let webhooks: [URL]
    public let mailTo: [String]
    public let mailFrom: String
    /// The mail program and its options (the recipients are added after `--`).
    public let sendmail: [String]
    public let onSuccess: Bool
    public let publicURL: String
    public let timeout: Double
    /// Attempts per delivery before it is given up (recorded, and logged once).
    public let maxAttempts = 8

    public init(environment env: Environment) throws {
        var hooks: [URL] = []
        let raw = env["ETL_ALERT_WEBHOOKS"] ?? ""
        for (i, part) in raw.split(whereSeparator: { $0 == "," || $0.isWhitespace }).enumerated() {
            guard let url = URL(string: String(part)), let scheme = url.scheme?.lowercased(),
                scheme == "http" || scheme == "https", url.host?.isEmpty == false
            else {
                throw ConfigError(
                    variable: "ETL_ALERT_WEBHOOKS",
                    problem: "entry \(i + 1) is not an http:// or https:// URL with a host (not shown: it is a secret)",
                    fix: "give each webhook's full URL, separated by commas, or unset ETL_ALERT_WEBHOOKS")
            }
            hooks.append(url)
        }
        webhooks = hooks
        switch (env["ETL_ALERT_ON_SUCCESS"] ?? "false").lowercased() {
        case "true", "1", "yes": onSuccess = true
        case "false", "0", "no": onSuccess = false
        case let other:
            throw ConfigError(
                variable: "ETL_ALERT_ON_SUCCESS", problem: "'\(other)' is not true or false",
                fix: "set it to true or false, or unset it (false)")
        }
        var base = env["ETL_PUBLIC_URL"] ?? "http://127.0.0.1:\(env["ETL_WEB_PORT"] ?? "8080")"
        while base.hasSuffix("/") { base.removeLast() }
        publicURL = base
        timeout = try env.seconds("ETL_ALERT_TIMEOUT", default: 10, range: 0.5...120)
        mailTo = try Self.addresses(env["ETL_ALERT_EMAIL_TO"] ?? "", variable: "ETL_ALERT_EMAIL_TO")
        let from = env["ETL_ALERT_EMAIL_FROM"] ?? "etl@\(ProcessInfo.processInfo.hostName)"
        mailFrom = mailTo.isEmpty ? from : try Self.addresses(from, variable: "ETL_ALERT_EMAIL_FROM").first ?? from
        let words = (env["ETL_ALERT_SENDMAIL"] ?? "/usr/sbin/sendmail").split(whereSeparator: \.isWhitespace).map(
            String.init)
        if !mailTo.isEmpty {
            guard let program = words.first, let path = ChildProgram.resolve(program) else {
                throw ConfigError(
                    variable: "ETL_ALERT_SENDMAIL",
                    problem:
                        "'\(words.first ?? "")' is not a program found on this host, and ETL_ALERT_EMAIL_TO is set",
                    fix: "install a sendmail-compatible program (apt-get install msmtp msmtp-mta) or set "
                        + "ETL_ALERT_SENDMAIL to one with its options, e.g. '/usr/bin/msmtp -C /etc/etl/msmtprc'")
            }
            sendmail = [path] + words.dropFirst()
        } else {
            sendmail = words
        }
    }

    /// Mail addresses from a list separated by commas or spaces; each must be one plain address
    /// (no name, no angle brackets, no line break: nothing that could add a header).
    static func addresses(_ raw: String, variable: String) throws -> [String] {
        try raw.split(whereSeparator: { $0 == "," || $0.isWhitespace }).enumerated().map { i, part in
            let a = String(part)
            let at = a.split(separator: "@", omittingEmptySubsequences: false)
            guard at.count == 2, !at[0].isEmpty, !at[1].isEmpty,
                a.allSatisfy({ $0.isASCII && !"<>()[]\\;:\"".contains($0) && !$0.isWhitespace && $0 != "\u{0}" })
            else {
                throw ConfigError(
                    variable: variable, problem: "entry \(i + 1), '\(a.prefix(80))', is not a plain e-mail address",
                    fix: "give addresses like ops@example.com, separated by commas")
            }
            return a
        }
    }

    /// The targets' names, as deliveries record them: each webhook, and "email" for the recipients.
    public var targets: [String] {
        webhooks.indices.map { "webhook \($0 + 1)" } + (mailTo.isEmpty ? [] : ["email"])
    }

    /// The webhook a target names.
    func webhook(_ target: String) -> URL? {
        guard target.hasPrefix("webhook "), let n = Int(target.dropFirst(8)), webhooks.indices.contains(n - 1) else {
            return nil
        }
        return webhooks[n - 1]
    }

    /// What an alert says in one line, its date and the page it links to.
    func summary(_ a: MetadataStore.DueAlert) -> (what: String, date: String?, link: String?) {
        let date = a.logicalDate.map { String(PostgresTimestamp.format($0).prefix(10)) }
        var link: String?
        if let dag = a.dag, let run = a.run {
            link = "\(publicURL)/dags/\(Self.component(dag))/runs/\(run)"
            if a.kind == "task_failed", let task = a.task { link! += "/tasks/\(Self.component(task))" }
        } else if a.kind == "dead_letter" {
            link = "\(publicURL)/queues"
        }
        let run = "run \(a.run ?? 0) of \(a.dag ?? "?") for \(date ?? "?")"
        let what: String
        switch a.kind {
        case "run_failed": what = "\(run) failed"
        case "run_success": what = "\(run) succeeded"
        case "task_failed": what = "task \(a.task ?? "?") of \(run) failed, with no tries left"
        case "deadline_missed": what = "\(run) has not finished by its deadline"
        case "dead_letter":
            what = "a message went to the dead letters" + (a.dag.map { " (\($0).\(a.task ?? "?"))" } ?? "")
        default: what = a.kind
        }
        return (what, date, link)
    }

    /// The alert as an e-mail for a sendmail-compatible program (headers, blank line, body).
    public func mail(_ a: MetadataStore.DueAlert, now: Date = Date()) -> String {
        let (what, _, link) = summary(a)
        var body = what + "\n"
        if !a.message.isEmpty { body += "\n" + a.message + "\n" }
        if let link { body += "\n" + link + "\n" }
        body += "\n-- \nalert \(a.id) (\(a.kind)) from the ETL scheduler\n"
        // A line of one dot ends a message for some programs: never send one.
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false).map { $0 == "." ? ".." : String($0) }
        let date = Self.rfc2822(now)
        let subject = String("[etl] \(what)".map { $0.isNewline || !$0.isASCII ? " " : $0 }.prefix(200))
        return """
            From: ETL <\(mailFrom)>
            To: \(mailTo.joined(separator: ", "))
            Subject: \(subject)
            Date: \(date)
            Message-ID: <etl-alert-\(a.id)-\(a.kind)@\(mailFrom.split(separator: "@").last ?? "localhost")>
            MIME-Version: 1.0
            Content-Type: text/plain; charset=utf-8
            Content-Transfer-Encoding: 8bit

            """ + lines.joined(separator: "\n")
    }

    static func rfc2822(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        return f.string(from: d)
    }

    /// The JSON body of an alert: `text` for chat webhooks, and the alert's fields under `alert`.
    public func body(_ a: MetadataStore.DueAlert) -> Data {
        let (what, date, link) = summary(a)
        var text = "etl: " + what
        if !a.message.isEmpty { text += "\n" + a.message }
        if let link { text += "\n" + link }
        var alert: [String: Any] = ["id": a.id, "kind": a.kind, "message": a.message]
        if let dag = a.dag { alert["dag"] = dag }
        if let run = a.run { alert["run"] = run }
        if let task = a.task { alert["task"] = task }
        if let date { alert["date"] = date }
        if let link { alert["link"] = link }
        if let first = a.message.split(separator: "\n").first { alert["error"] = String(first) }
        let object: [String: Any] = ["text": text, "username": "etl", "alert": alert]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    }

    static func component(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/")))
            ?? s
    }
}

/// Sends alerts from a thread of its own in the scheduler, while it leads: scheduling never waits
/// for a webhook. Dead letters become alerts here too (read from the stream after a cursor kept in
/// Postgres). Each delivery is tried with a timeout, again after 5 s, 10 s, 20 s, … (up to 10 min)
/// and given up after `maxAttempts`; every attempt is recorded (`alert_attempt`). An alert is made
/// once (by its key) whichever scheduler leads; a leader that dies between a POST and its record
/// leaves that one delivery to be sent again by the next, with the same `alert.id`.
public final class AlertSender: @unchecked Sendable {
    /// POSTs `body` (JSON) to `url` within `timeout` seconds; returns the HTTP status.
    public typealias Post = @Sendable (_ url: URL, _ body: Data, _ timeout: Double) throws -> Int

    let settings: AlertSettings
    let env: Environment
    let schema: String
    let logger: Logger
    let post: Post?
    let isLeading: @Sendable () -> Bool
    let stop: StopFlag

    init(
        settings: AlertSettings, env: Environment, schema: String, logger: Logger, post: Post?,
        isLeading: @escaping @Sendable () -> Bool, stop: StopFlag
    ) {
        (self.settings, self.env, self.schema, self.logger, self.post) = (settings, env, schema, logger, post)
        (self.isLeading, self.stop) = (isLeading, stop)
    }

    func start() {
        let t = Thread { [self] in loop() }
        t.name = "alerts"
        t.start()
    }

    private func loop() {
        var store: MetadataStore?
        var queue: TaskQueue?
        var failing: String?
        while !stop.isSet {
            do {
                if isLeading() {
                    if store == nil {
                        store = MetadataStore(
                            pg: try PostgresConnection(config: PostgresConfig(environment: env)), schema: schema)
                    }
                    if queue == nil {
                        queue = TaskQueue(
                            redis: try RedisConnection(config: RedisConfig(environment: env)),
                            keys: RedisKeys(environment: env))
                    }
                    try collectDeadLetters(store: store!, queue: queue!)
                    try deliverDue(store: store!)
                }
                if failing != nil { logger.info("alerts: going through again") }
                failing = nil
            } catch {
                // One line per kind of trouble, not one per second.
                let kind = "\(type(of: error))"
                if failing != kind { logger.warning("alerts: \(error); trying again in 2 s") }
                failing = kind
                sleepSeconds(1)
            }
            sleepSeconds(1)
        }
    }

    private static let cursor = "dead_letters"

    /// Dead letters added since the cursor become alerts (the first look starts at the stream's end:
    /// what was there before alerts were set up is not told again).
    private func collectDeadLetters(store: MetadataStore, queue: TaskQueue) throws {
        guard let from = try store.alertCursor(Self.cursor) else {
            let last = try queue.redis.command("XREVRANGE", queue.keys.dead, "+", "-", "COUNT", 1).array?.first
            let id = last?.array?.first?.string ?? "0-0"
            try store.recordDeadLetterAlerts([], cursor: (Self.cursor, id), targets: settings.targets)
            return
        }
        let entries = try queue.redis.command("XRANGE", queue.keys.dead, "(" + from, "+", "COUNT", 200).array ?? []
        guard !entries.isEmpty else { return }
        var letters: [MetadataStore.DeadLetterAlert] = []
        var last = from
        for e in entries {
            guard let id = e.array?.first?.string, let fields = e.array?.last?.array else { continue }
            last = id
            let reason = TaskQueue.field("reason", in: fields)?.string ?? "no reason given"
            let q = TaskQueue.field("queue", in: fields)?.string ?? "?"
            var dag: String?
            var run: Int64?
            var task: String?
            if let body = TaskQueue.field("body", in: fields)?.string,
                let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            {
                dag = json["dag"] as? String
                run = (json["run"] as? NSNumber)?.int64Value
                task = json["task"] as? String
            }
            letters.append(
                .init(
                    entryID: id, dag: dag, run: run, task: task,
                    message: "queue \(q): \(reason.split(separator: "\n").first.map(String.init) ?? "")"))
        }
        try store.recordDeadLetterAlerts(letters, cursor: (Self.cursor, last), targets: settings.targets)
    }

    private func deliverDue(store: MetadataStore) throws {
        for a in try store.dueAlerts(limit: 20) {
            guard isLeading(), !stop.isSet else { return }
            if a.target == "email" {
                try deliverMail(a, store: store)
                continue
            }
            guard let url = settings.webhook(a.target), let post else {
                // The webhook list changed and this target is gone.
                try store.recordAlertAttempt(
                    a, ok: false, detail: "\(a.target) is no longer configured (ETL_ALERT_WEBHOOKS)", retryIn: nil)
                continue
            }
            var ok = false
            var detail: String
            do {
                let status = try post(url, settings.body(a), settings.timeout)
                ok = (200..<300).contains(status)
                detail = "HTTP \(status)"
            } catch {
                detail = Self.redact("\(error)", url: url)
            }
            try recordAttempt(a, ok: ok, detail: detail, store: store)
        }
    }

    /// One message to every recipient through the mail program (its options, then `-i -f FROM --`
    /// and the recipients): sent when it exits 0.
    private func deliverMail(_ a: MetadataStore.DueAlert, store: MetadataStore) throws {
        var ok = false
        var detail: String
        do {
            let r = try ChildProgram.run(
                settings.sendmail + ["-i", "-f", settings.mailFrom, "--"] + settings.mailTo,
                input: Data(settings.mail(a).utf8), timeout: settings.timeout)
            ok = r.status == 0
            let said = r.stderr.split(separator: "\n").first.map { ": " + $0.prefix(300) } ?? ""
            detail = "\(URL(fileURLWithPath: settings.sendmail[0]).lastPathComponent) exited \(r.status)\(said)"
        } catch {
            detail = "\(error)"
        }
        try recordAttempt(a, ok: ok, detail: detail, store: store)
    }

    private func recordAttempt(_ a: MetadataStore.DueAlert, ok: Bool, detail: String, store: MetadataStore) throws {
        let attempt = a.attempts + 1
        let retryIn: Double? =
            ok || attempt >= settings.maxAttempts ? nil : min(600, 5 * pow(2, Double(attempt - 1)))
        try store.recordAlertAttempt(a, ok: ok, detail: detail, retryIn: retryIn)
        if ok {
            logger.info("alert \(a.id) (\(a.kind)) sent to \(a.target)")
        } else if retryIn == nil {
            logger.error("alert \(a.id) (\(a.kind)) to \(a.target) given up after \(attempt) attempts: \(detail)")
        } else {
            logger.warning("alert \(a.id) (\(a.kind)) to \(a.target): \(detail); trying again in \(Int(retryIn!)) s")
        }
    }

    /// An error's text without the webhook's URL, host or path (secrets).
    static func redact(_ text: String, url: URL) -> String {
        var t = text
        for secret in [url.absoluteString, url.path, url.host ?? ""] where secret.count > 1 {
            t = t.replacingOccurrences(of: secret, with: "<webhook>")
        }
        return String(t.prefix(500))
    }
}

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
///   ETL_ALERT_TIMEOUT     seconds one POST may take (default 10)
public struct AlertSettings: Sendable {
    public let webhooks: [URL]
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
    }

    /// The targets' names, as deliveries record them.
    public var targets: [String] { webhooks.indices.map { "webhook \($0 + 1)" } }

    /// The webhook a target names.
    func webhook(_ target: String) -> URL? {
        guard target.hasPrefix("webhook "), let n = Int(target.dropFirst(8)), webhooks.indices.contains(n - 1) else {
            return nil
        }
        return webhooks[n - 1]
    }

    /// The JSON body of an alert: `text` for chat webhooks, and the alert's fields under `alert`.
    public func body(_ a: MetadataStore.DueAlert) -> Data {
        let date = a.logicalDate.map { String(PostgresTimestamp.format($0).prefix(10)) }
        var link: String?
        if let dag = a.dag, let run = a.run {
            link = "\(publicURL)/dags/\(Self.component(dag))/runs/\(run)"
        } else if a.kind == "dead_letter" {
            link = "\(publicURL)/dead-letters"
        }
        let what: String
        switch a.kind {
        case "run_failed": what = "run \(a.run ?? 0) of \(a.dag ?? "?") for \(date ?? "?") failed"
        case "run_success": what = "run \(a.run ?? 0) of \(a.dag ?? "?") for \(date ?? "?") succeeded"
        case "dead_letter":
            what = "a message went to the dead letters" + (a.dag.map { " (\($0).\(a.task ?? "?"))" } ?? "")
        default: what = a.kind
        }
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
    let post: Post
    let isLeading: @Sendable () -> Bool
    let stop: StopFlag

    init(
        settings: AlertSettings, env: Environment, schema: String, logger: Logger, post: @escaping Post,
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
            guard let url = settings.webhook(a.target) else {
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
            let attempt = a.attempts + 1
            let retryIn: Double? =
                ok || attempt >= settings.maxAttempts ? nil : min(600, 5 * pow(2, Double(attempt - 1)))
            try store.recordAlertAttempt(a, ok: ok, detail: detail, retryIn: retryIn)
            if ok {
                logger.info("alert \(a.id) (\(a.kind)) sent to \(a.target)")
            } else if retryIn == nil {
                logger.error("alert \(a.id) (\(a.kind)) to \(a.target) given up after \(attempt) attempts: \(detail)")
            } else {
                logger.warning(
                    "alert \(a.id) (\(a.kind)) to \(a.target): \(detail); trying again in \(Int(retryIn!)) s")
            }
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

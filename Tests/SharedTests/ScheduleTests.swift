import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Testing
import Workflow

@Suite("Schedules and cron", .timeLimit(.minutes(10)))
struct ScheduleTests {
    static func utc(_ y: Int, _ m: Int, _ d: Int, _ h: Int = 0, _ mi: Int = 0) -> Date {
        Date(timeIntervalSince1970: Double(CivilDate.toDays(year: y, month: m, day: d) * 86_400 + h * 3600 + mi * 60))
    }

    @Test("presets and cron fields find the next fire time")
    func nextFire() throws {
        let at = Self.utc(2024, 2, 28, 23, 59)
        #expect(try CronExpression("0 0 * * *").next(after: at) == Self.utc(2024, 2, 29))
        #expect(try CronExpression("*/15 * * * *").next(after: Self.utc(2024, 1, 1, 10, 7)) == Self.utc(2024, 1, 1, 10, 15))
        #expect(try CronExpression("30 2 * * mon-fri").next(after: Self.utc(2024, 6, 7, 3)) == Self.utc(2024, 6, 10, 2, 30))  // Fri -> Mon
        #expect(try CronExpression("0 0 29 feb *").next(after: Self.utc(2024, 3, 1)) == Self.utc(2028, 2, 29))
        #expect(try CronExpression("0 0 1 * *").next(after: Self.utc(2024, 12, 15)) == Self.utc(2025, 1, 1))
        #expect(try CronExpression("0 12 * * 7").next(after: Self.utc(2024, 6, 10)) == Self.utc(2024, 6, 16, 12))  // 7 = Sunday
        // Both day fields restricted: either matches (Vixie cron).
        #expect(try CronExpression("0 0 13 * fri").next(after: Self.utc(2024, 9, 1)) == Self.utc(2024, 9, 6))
        #expect(try CronExpression("0 0 31 2 *").next(after: Self.utc(2024, 1, 1)) == nil)  // never
    }

    @Test("bad schedules explain themselves")
    func badSchedules() {
        let e1 = #expect(throws: ScheduleError.self) { try Schedule("0 0 * *") }
        #expect(e1?.description.contains("5 fields") == true)
        let e2 = #expect(throws: ScheduleError.self) { try Schedule("61 * * * *") }
        #expect(e2?.description.contains("'61' is not a valid minute") == true)
        let e3 = #expect(throws: ScheduleError.self) { try Schedule("@fortnightly") }
        #expect(e3?.description.contains("@daily") == true)
        let e4 = #expect(throws: ScheduleError.self) { try Schedule("0 0 * * 5-1") }
        #expect(e4?.description.contains("backwards") == true)
    }

    @Test("without catchup the latest due interval is the one an independent cron matcher finds")
    func skipAhead() throws {
        let start = Date(timeIntervalSince1970: 1_640_995_200)  // 2022-01-01
        var rng = SystemRandomNumberGenerator()
        let cases = ["@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *",
                     "*/7 3-5 * * 1-5": "*/7 3-5 * * 1-5", "0 9 * * 1-5": "0 9 * * 1-5", "30 2 29 2 *": "30 2 29 2 *",
                     "15 */6 1,15 * *": "15 */6 1,15 * *"]
        for (text, cron) in cases {
            let schedule = try Schedule(text)
            let oracle = NaiveCron(cron)
            for _ in 0..<8 {
                let now = Date(timeIntervalSince1970: (1_700_000_000 + Double.random(in: 0...50_000_000, using: &rng)).rounded(.down))
                // Airflow: the latest interval [F1, F2) that has ended by now has logical date F1.
                // The first interval starts at the first fire at or after the start date.
                let fires = oracle.lastTwoFires(atOrBefore: now).flatMap { $0.0 >= start ? $0 : nil }
                let expected = fires.map { [$0.0] } ?? []
                #expect(schedule.dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: false) == expected, "\(text) at \(now)")
            }
        }
    }

    /// A cron matcher written for this test alone (minute by minute within matching days, walking
    /// back from a moment), so the schedule code is checked against something other than itself.
    struct NaiveCron {
        let fields: [Set<Int>]
        let domRestricted: Bool, dowRestricted: Bool

        init(_ text: String) {
            let parts = text.split(separator: " ").map(String.init)
            let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
            fields = zip(parts, bounds).map { part, b in
                var set = Set<Int>()
                for item in part.split(separator: ",") {
                    let pieces = item.split(separator: "/")
                    let step = pieces.count == 2 ? Int(pieces[1])! : 1
                    var lo = b.0, hi = b.1
                    if pieces[0] != "*" {
                        let r = pieces[0].split(separator: "-").map { Int($0)! }
                        lo = r[0]
                        hi = r.count == 2 ? r[1] : (pieces.count == 2 ? b.1 : r[0])
                    }
                    for v in stride(from: lo, through: hi, by: step) { set.insert(v == 7 && b.1 == 7 ? 0 : v) }
                }
                return set
            }
            domRestricted = parts[2] != "*"
            dowRestricted = parts[4] != "*"
        }

        func dayMatches(_ days: Int) -> Bool {
            let (_, m, d) = CivilDate.fromDays(days)
            guard fields[3].contains(m) else { return false }
            let dow = ((days % 7) + 11) % 7  // 1970-01-01 was a Thursday (4)
            let domOK = fields[2].contains(d), dowOK = fields[4].contains(dow)
            if domRestricted && dowRestricted { return domOK || dowOK }  // Vixie cron: either
            return domOK && dowOK
        }

        /// The two latest fire times at or before `now`, older first.
        func lastTwoFires(atOrBefore now: Date) -> (Date, Date)? {
            var found: [Int] = []
            let nowMinute = Int(now.timeIntervalSince1970) / 60
            var day = nowMinute / 1440
            while found.count < 2 && day > nowMinute / 1440 - 4000 {
                if dayMatches(day) {
                    for h in fields[1].sorted(by: >) {
                        for mi in fields[0].sorted(by: >) {
                            let t = day * 1440 + h * 60 + mi
                            if t <= nowMinute && found.count < 2 { found.append(t) }
                        }
                    }
                }
                day -= 1
            }
            guard found.count == 2 else { return nil }
            return (Date(timeIntervalSince1970: Double(found[1] * 60)), Date(timeIntervalSince1970: Double(found[0] * 60)))
        }
    }

    @Test("due runs follow Airflow: logical date is the interval start, catchup fills or skips")
    func dueRuns() throws {
        let daily = try Schedule("@daily")
        #expect(daily.description == "@daily")
        let start = Self.utc(2024, 5, 1)
        let now = Self.utc(2024, 5, 4, 6)
        #expect(daily.dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: true)
                == [Self.utc(2024, 5, 1), Self.utc(2024, 5, 2), Self.utc(2024, 5, 3)])
        #expect(daily.dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: false) == [Self.utc(2024, 5, 3)])
        #expect(daily.dueLogicalDates(start: start, lastLogical: Self.utc(2024, 5, 3), now: now, catchup: true).isEmpty)
        let once = try Schedule("@once")
        #expect(once.dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: false) == [start])
        #expect(once.dueLogicalDates(start: start, lastLogical: start, now: now, catchup: false).isEmpty)
        #expect(try Schedule(nil) == .manual)
        #expect(try Schedule("@none").dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: true).isEmpty)
    }
}

@Suite("Signed task messages", .timeLimit(.minutes(10)))
struct MessageCodecTests {
    let codec = try! MessageCodec(secret: "a-test-secret-that-is-long-enough")
    let message = TaskMessage(dag: "b2b", runID: 7, task: "load_company", logicalDate: "2024-05-01", tryNumber: 2,
                              queue: "default", timeoutSeconds: 300, arguments: ["file": "company.csv"])

    @Test("a signed message round-trips")
    func roundTrip() throws {
        let (body, sig) = try codec.encode(message)
        #expect(sig.count == 64)
        #expect(try codec.decode(body: body, signature: sig) == message)
    }

    @Test("the hand-written JSON agrees with Foundation's both ways, escapes and Unicode included")
    func flatJSONAgreesWithFoundation() throws {
        let odd = "quote \" backslash \\ slash / tab \t newline \n bell \u{7} é 日本 🚀 \u{0}"
        let messages = [
            message,
            TaskMessage(id: odd, dag: odd, runID: Int64(Int32.max) * 4, task: "t", logicalDate: "2024-05-01T00:00:00+00:00", tryNumber: 0,
                        queue: "q", timeoutSeconds: 0.25, enqueuedAt: 1_764_040_000.123456, arguments: [odd: odd, "": "", "b": "2"]),
        ]
        for m in messages {
            // Ours read by Foundation, and Foundation's read by ours.
            #expect(try JSONDecoder().decode(TaskMessage.self, from: Data(m.json)) == m)
            #expect(TaskMessage(flat: Array(try JSONEncoder().encode(m))) == m)
            #expect(TaskMessage(flat: m.json) == m)
        }
        let event = CompletionEvent(dag: odd, runID: 12, task: "n1", tryNumber: 3, state: "success", worker: "w/0", finishedAt: 1_764_040_000.5)
        #expect(try JSONDecoder().decode(CompletionEvent.self, from: Data(event.json)) == event)
        #expect(CompletionEvent(flat: Array(try JSONEncoder().encode(event))) == event)
        // A batch's events of one run and state travel as one, listing their tasks.
        let batch = CompletionEvent.merged([event, CompletionEvent(dag: odd, runID: 12, task: "n2", tryNumber: 1, state: "success", worker: "w/0"),
                                            CompletionEvent(dag: odd, runID: 12, task: "n3", tryNumber: 1, state: "failed", worker: "w/0"),
                                            CompletionEvent(dag: odd, runID: 13, task: "n4", tryNumber: 1, state: "success", worker: "w/0")])
        #expect(batch.map(\.allTasks) == [["n1", "n2"], ["n3"], ["n4"]])
        #expect(try JSONDecoder().decode(CompletionEvent.self, from: Data(batch[0].json)) == batch[0])
        #expect(CompletionEvent(flat: batch[0].json) == batch[0])
        #expect(CompletionEvent(flat: Array(try JSONEncoder().encode(batch[0]))) == batch[0])
        // Escaped forms Foundation may write, a surrogate pair, whitespace: read the same.
        let escaped = Array(#" { "dag" : "a\u00e9\ud83d\ude80\/" , "runID":1,"task":"t","tryNumber":1,"state":"s","worker":"w","finishedAt":1.5e0 } "#.utf8)
        #expect(CompletionEvent(flat: escaped)?.dag == "aé🚀/")
        // Not the shape, or not JSON: nil, and the caller falls back to Foundation.
        for bad in [#"{"a":[1]}"#, #"{"a":"x""#, #"{"a":"\q"}"#, #"{"a":"\ud83d"}"#, "[]", #"{"a":{"b":{}}}"#, #"{"a":1} x"#] {
            #expect(FlatJSON.parse(Array(bad.utf8)) == nil, "\(bad)")
        }
        // The shape, with a field of the wrong type: parsed, but no event.
        #expect(FlatJSON.parse(Array(#"{"dag":1}"#.utf8)) != nil)
        #expect(CompletionEvent(flat: Array(#"{"dag":1,"runID":1,"task":"t","tryNumber":1,"state":"s","worker":"w","finishedAt":1}"#.utf8)) == nil)
        #expect(FlatJSON.parse(Array(#"{"a":"x\u0001"}"#.utf8))?["a"] == .string("x\u{1}"))
    }

    @Test("unsigned, tampered, wrongly keyed, truncated, oversized and future messages are refused with reasons")
    func rejections() throws {
        let (body, sig) = try codec.encode(message)
        #expect(throws: MessageRejection.unsigned) { try codec.decode(body: body, signature: nil) }
        var tampered = body
        tampered[tampered.count / 2] ^= 1
        #expect(throws: MessageRejection.badSignature) { try codec.decode(body: tampered, signature: sig) }
        let other = try MessageCodec(secret: "another-secret-also-long-enough")
        #expect(throws: MessageRejection.badSignature) { try other.decode(body: body, signature: sig) }
        #expect(throws: MessageRejection.badSignature) { try codec.decode(body: body, signature: "zz") }
        let truncated = Array(body.prefix(body.count - 5))
        #expect(throws: MessageRejection.malformed("the body is not a version-1 task message: it is not valid JSON")) {
            try codec.decode(body: truncated, signature: codec.sign(truncated))
        }
        let huge = [UInt8](repeating: 32, count: MessageCodec.maxBodyBytes + 1)
        #expect(throws: MessageRejection.oversized(bytes: huge.count)) { try codec.decode(body: huge, signature: sig) }
        let future = Array(#"{"v":2,"id":"x"}"#.utf8)
        #expect(throws: MessageRejection.unsupportedVersion(2)) { try codec.decode(body: future, signature: codec.sign(future)) }
        let missing = Array(#"{"v":1,"id":"x"}"#.utf8)
        let e = #expect(throws: MessageRejection.self) { try codec.decode(body: missing, signature: codec.sign(missing)) }
        #expect(e?.description.contains("is missing") == true)
    }

    @Test("a short or missing secret is a configuration error naming ETL_SECRET_KEY")
    func secretChecks() {
        let short = #expect(throws: ConfigError.self) { try MessageCodec(secret: "short") }
        #expect(short?.variable == "ETL_SECRET_KEY")
        let missing = #expect(throws: ConfigError.self) { try MessageCodec(environment: Environment([:])) }
        #expect(missing?.variable == "ETL_SECRET_KEY")
    }
}

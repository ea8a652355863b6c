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

@Suite("Schedules and cron", .timeLimit(.minutes(10)))
struct ScheduleTests {
    static func utc(_ y: Int, _ m: Int, _ d: Int, _ h: Int = 0, _ mi: Int = 0) -> Date {
        Date(timeIntervalSince1970: Double(CivilDate.toDays(year: y, month: m, day: d) * 86_400 + h * 3600 + mi * 60))
    }

    @Test("presets and cron fields find the next fire time")
    func nextFire() throws {
        let at = Self.utc(2024, 2, 28, 23, 59)
        #expect(try CronExpression("0 0 * * *").next(after: at) == Self.utc(2024, 2, 29))
        #expect(
            try CronExpression("*/15 * * * *").next(after: Self.utc(2024, 1, 1, 10, 7)) == Self.utc(2024, 1, 1, 10, 15))
        // Fri -> Mon.
        #expect(
            try CronExpression("30 2 * * mon-fri").next(after: Self.utc(2024, 6, 7, 3)) == Self.utc(2024, 6, 10, 2, 30))
        #expect(try CronExpression("0 0 29 feb *").next(after: Self.utc(2024, 3, 1)) == Self.utc(2028, 2, 29))
        #expect(try CronExpression("0 0 1 * *").next(after: Self.utc(2024, 12, 15)) == Self.utc(2025, 1, 1))
        // 7 = Sunday.
        #expect(try CronExpression("0 12 * * 7").next(after: Self.utc(2024, 6, 10)) == Self.utc(2024, 6, 16, 12))
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
        let cases = [
            "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *",
            "*/7 3-5 * * 1-5": "*/7 3-5 * * 1-5", "0 9 * * 1-5": "0 9 * * 1-5", "30 2 29 2 *": "30 2 29 2 *",
            "15 */6 1,15 * *": "15 */6 1,15 * *",
        ]
        for (text, cron) in cases {
            let schedule = try Schedule(text)
            let oracle = NaiveCron(cron)
            for _ in 0..<8 {
                let now = Date(
                    timeIntervalSince1970: (1_700_000_000 + Double.random(in: 0...50_000_000, using: &rng)).rounded(
                        .down))
                // Airflow: the latest interval [F1, F2) that has ended by now has logical date F1.
                // The first interval starts at the first fire at or after the start date.
                let fires = oracle.lastTwoFires(atOrBefore: now).flatMap { $0.0 >= start ? $0 : nil }
                let expected = fires.map { [$0.0] } ?? []
                #expect(
                    schedule.dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: false) == expected,
                    "\(text) at \(now)")
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
                    var lo = b.0
                    var hi = b.1
                    if pieces[0] != "*" {
                        let r = pieces[0].split(separator: "-").map { Int($0)! }
                        lo = r[0]
                        hi = r.count == 2 ? r[1] : (pieces.count == 2 ? b.1 : r[0])
                    }
                    for v in stride(from: lo, through: hi, by: step) { set.insert(v == 7 && b.1 == 7 ? 0 : v) }
                }
                return set
            }
            // Vixie cron: a day field starting with * (also */2) does not restrict.
            domRestricted = !parts[2].hasPrefix("*")
            dowRestricted = !parts[4].hasPrefix("*")
        }

        func dayMatches(_ days: Int) -> Bool {
            let (_, m, d) = CivilDate.fromDays(days)
            guard fields[3].contains(m) else { return false }
            let dow = ((days % 7) + 11) % 7  // 1970-01-01 was a Thursday (4)
            let domOK = fields[2].contains(d)
            let dowOK = fields[4].contains(dow)
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
            return (
                Date(timeIntervalSince1970: Double(found[1] * 60)), Date(timeIntervalSince1970: Double(found[0] * 60))
            )
        }
    }

    @Test("due runs follow Airflow: logical date is the interval start, catchup fills or skips")
    func dueRuns() throws {
        let daily = try Schedule("@daily")
        #expect(daily.description == "@daily")
        let start = Self.utc(2024, 5, 1)
        let now = Self.utc(2024, 5, 4, 6)
        #expect(
            daily.dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: true)
                == [Self.utc(2024, 5, 1), Self.utc(2024, 5, 2), Self.utc(2024, 5, 3)])
        #expect(
            daily.dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: false) == [Self.utc(2024, 5, 3)])
        #expect(daily.dueLogicalDates(start: start, lastLogical: Self.utc(2024, 5, 3), now: now, catchup: true).isEmpty)
        let once = try Schedule("@once")
        #expect(once.dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: false) == [start])
        #expect(once.dueLogicalDates(start: start, lastLogical: start, now: now, catchup: false).isEmpty)
        #expect(try Schedule(nil) == .manual)
        #expect(try Schedule("@none").dueLogicalDates(start: start, lastLogical: nil, now: now, catchup: true).isEmpty)
    }
}

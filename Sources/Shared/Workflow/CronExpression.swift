import ETLSupport
import Foundation

/// A five-field cron expression (minute, hour, day of month, month, day of week), evaluated in UTC.
///
/// Fields take `*`, numbers, ranges `a-b`, lists `a,b`, steps `*/n` and `a-b/n`; months and
/// weekdays also take names (`jan`, `mon`). As in Vixie cron, when both day fields are restricted
/// a day matches if either does.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    let minutes: UInt64  // bits 0...59
    let hours: UInt32  // bits 0...23
    let daysOfMonth: UInt32  // bits 1...31
    let months: UInt16  // bits 1...12
    let daysOfWeek: UInt8  // bits 0...6, Sunday = 0 (7 is folded into 0)
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool
    public let description: String

    public init(_ text: String) throws {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ScheduleError(
                text: text,
                problem:
                    "a cron expression has 5 fields (minute hour day-of-month month day-of-week)"
                    + ", this has \(fields.count)"
            )
        }
        let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
        minutes = try Self.parse(fields[0], 0...59, names: [], field: "minute", text: text)
        hours = UInt32(try Self.parse(fields[1], 0...23, names: [], field: "hour", text: text))
        daysOfMonth = UInt32(try Self.parse(fields[2], 1...31, names: [], field: "day of month", text: text))
        months = UInt16(try Self.parse(fields[3], 1...12, names: monthNames, nameBase: 1, field: "month", text: text))
        var dow = try Self.parse(fields[4], 0...7, names: dayNames, field: "day of week", text: text)
        if dow & (1 << 7) != 0 { dow = (dow | 1) & ~(1 << 7) }
        daysOfWeek = UInt8(dow)
        dayOfMonthRestricted = !fields[2].hasPrefix("*")
        dayOfWeekRestricted = !fields[4].hasPrefix("*")
        description = fields.joined(separator: " ")
    }

    private static func parse(
        _ field: String, _ range: ClosedRange<Int>, names: [String], nameBase: Int = 0,
        field name: String, text: String
    ) throws -> UInt64 {
        func value(_ s: Substring) throws -> Int {
            if let n = Int(s), range.contains(n) { return n }
            if let i = names.firstIndex(of: s.lowercased()) { return i + nameBase }
            throw ScheduleError(
                text: text,
                problem:
                    "'\(s)' is not a valid \(name)"
                    + " (\(range.lowerBound)-\(range.upperBound)\(names.isEmpty ? "" : " or a name like \(names[0])"))"
            )
        }
        var bits: UInt64 = 0
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            var rangePart = part
            var step = 1
            if let slash = part.firstIndex(of: "/") {
                rangePart = part[..<slash]
                guard let s = Int(part[part.index(after: slash)...]), s > 0 else {
                    throw ScheduleError(
                        text: text, problem: "the step in '\(part)' (\(name)) must be a positive number")
                }
                step = s
            }
            let lo: Int
            let hi: Int
            if rangePart == "*" {
                (lo, hi) = (range.lowerBound, range.upperBound)
            } else if let dash = rangePart.firstIndex(of: "-") {
                lo = try value(rangePart[..<dash])
                hi = try value(rangePart[rangePart.index(after: dash)...])
                guard lo <= hi else {
                    throw ScheduleError(text: text, problem: "the range '\(rangePart)' (\(name)) runs backwards")
                }
            } else {
                lo = try value(rangePart)
                hi = step > 1 ? range.upperBound : lo
            }
            for v in stride(from: lo, through: hi, by: step) { bits |= 1 << UInt64(v) }
        }
        return bits
    }

    func matchesDay(year: Int, month: Int, day: Int) -> Bool {
        // 1970-01-01 was a Thursday (4).
        let weekday = ((CivilDate.toDays(year: year, month: month, day: day) % 7) + 11) % 7
        let domOK = daysOfMonth & (1 << UInt32(day)) != 0
        let dowOK = daysOfWeek & (1 << UInt8(weekday)) != 0
        if dayOfMonthRestricted && dayOfWeekRestricted { return domOK || dowOK }
        return domOK && dowOK
    }

    /// The first matching minute strictly after `date`, or nil if none within 8 years.
    public func next(after date: Date) -> Date? {
        var minuteCount = Int(floor(date.timeIntervalSince1970 / 60)) + 1
        let limit = minuteCount + 8 * 366 * 1440
        while minuteCount < limit {
            let days = minuteCount >= 0 ? minuteCount / 1440 : (minuteCount - 1439) / 1440
            let (y, m, d) = CivilDate.fromDays(days)
            let minuteOfDay = minuteCount - days * 1440
            if months & (1 << UInt16(m)) == 0 {
                // Jump to the first day of the next month.
                let (ny, nm) = m == 12 ? (y + 1, 1) : (y, m + 1)
                minuteCount = CivilDate.toDays(year: ny, month: nm, day: 1) * 1440
                continue
            }
            if !matchesDay(year: y, month: m, day: d) {
                minuteCount = (days + 1) * 1440
                continue
            }
            let hour = minuteOfDay / 60
            if hours & (1 << UInt32(hour)) == 0 {
                minuteCount = days * 1440 + (hour + 1) * 60
                continue
            }
            let minute = minuteOfDay % 60
            if minutes & (1 << UInt64(minute)) == 0 {
                // Jump to the next allowed minute of this hour, or to the next hour.
                if let m = (minute + 1..<60).first(where: { minutes & (1 << UInt64($0)) != 0 }) {
                    minuteCount += m - minute
                } else {
                    minuteCount = days * 1440 + (hour + 1) * 60
                }
                continue
            }
            return Date(timeIntervalSince1970: Double(minuteCount) * 60)
        }
        return nil
    }
}

/// A schedule that does not parse, with what is wrong.
public struct ScheduleError: Error, CustomStringConvertible, Sendable {
    public let text: String
    public let problem: String
    public var description: String {
        "schedule \"\(text)\": \(problem)."
            + " Fix: use @once, @hourly, @daily, @weekly, @monthly, or 5 cron fields such as \"30 2 * * mon-fri\""
    }
}

import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// A calendar day (UTC), the unit of logical dates and report partitions.
public struct Day: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let year: Int
    public let month: Int
    public let day: Int

    public init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    public init(daysSince1970 days: Int) {
        let (y, m, d) = CivilDate.fromDays(days)
        self.init(year: y, month: m, day: d)
    }

    /// The UTC day holding this many seconds since 1970 (floored: before 1970 counts back).
    public init(epochSeconds seconds: Int64) {
        let (q, r) = seconds.quotientAndRemainder(dividingBy: 86_400)
        self.init(daysSince1970: Int(r < 0 ? q - 1 : q))
    }

    /// The UTC day of `date` (a run's logical date, a time).
    public init(_ date: Date) {
        self.init(daysSince1970: Int((date.timeIntervalSince1970 / 86_400).rounded(.down)))
    }

    /// From `YYYY-MM-DD` (a real calendar day: not 2024-02-30), or the date part of a timestamp like a
    /// logical date.
    public init?(_ text: String) {
        let date = String(text.prefix(10))
        guard text.count >= 10, CivilDateCheck.date(date), let d = PostgresTimestamp.parse(date) else { return nil }
        self.init(d)
    }

    /// Exactly `YYYY-MM-DD` and a real calendar day (what a user types for a date), else nil.
    public init?(strict text: String) {
        guard text.count == 10 else { return nil }
        self.init(text)
    }

    public static func today() -> Day { Day(Date()) }

    public var daysSince1970: Int { CivilDate.toDays(year: year, month: month, day: day) }
    public var epochSeconds: Int64 { Int64(daysSince1970) * 86_400 }
    /// Midnight UTC at the start of the day.
    public var date: Date { Date(timeIntervalSince1970: Double(epochSeconds)) }
    /// `YYYY-MM-DD` (the year in four digits at least).
    public var description: String {
        let y = String(year)
        return "\(String(repeating: "0", count: max(0, 4 - y.count)))\(y)-\(month < 10 ? "0" : "")\(month)-"
            + "\(day < 10 ? "0" : "")\(day)"
    }
    /// The first day of the month `n` months from this day's month (negative for earlier).
    public func monthStart(offset n: Int) -> Day {
        let m = year * 12 + (month - 1) + n
        return Day(year: m / 12, month: m % 12 + 1, day: 1)
    }
    public static func < (a: Day, b: Day) -> Bool { a.daysSince1970 < b.daysSince1970 }
}

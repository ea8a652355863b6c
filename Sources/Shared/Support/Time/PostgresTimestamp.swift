import Foundation

/// Reads and writes `YYYY-MM-DD[ HH:MM:SS[.ffffff]][+HH[:MM]]` without a DateFormatter (which is
/// slow and locale-bound).
public enum PostgresTimestamp {
    public static func format(_ date: Date) -> String {
        let totalMicros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        var seconds = Int(floor(totalMicros / 1_000_000))
        let micros = Int(totalMicros - Double(seconds) * 1_000_000)
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        seconds -= days * 86_400
        let (y, m, d) = CivilDate.fromDays(days)
        var s = """
            \(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2)) \
            \(pad(seconds / 3600, 2)):\(pad(seconds / 60 % 60, 2)):\(pad(seconds % 60, 2))
            """
        if micros != 0 { s += "." + pad(micros, 6) }
        return s + "+00"
    }

    public static func parse(_ text: String) -> Date? {
        let u = Array(text.utf8)
        var i = 0
        func number(_ n: Int) -> Int? {
            guard i + n <= u.count else { return nil }
            var v = 0
            for k in i..<(i + n) {
                let c = u[k]
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < u.count, u[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = number(4), expect(45), let mo = number(2), expect(45), let d = number(2),
            (1...12).contains(mo), (1...31).contains(d)
        else { return nil }
        var secs = Double(CivilDate.toDays(year: y, month: mo, day: d)) * 86_400
        if i < u.count && (u[i] == 32 || u[i] == 84) {  // ' ' or 'T'
            i += 1
            guard let h = number(2), expect(58), let mi = number(2), expect(58), let s = number(2),
                h < 24, mi < 60, s < 61
            else { return nil }
            secs += Double(h * 3600 + mi * 60 + s)
            if i < u.count && u[i] == 46 {  // '.'
                i += 1
                var frac = 0.0
                var scale = 0.1
                while i < u.count, u[i] >= 48, u[i] <= 57 {
                    frac += Double(u[i] - 48) * scale
                    scale /= 10
                    i += 1
                }
                secs += frac
            }
        }
        if i < u.count {  // zone: +HH, -HH, +HH:MM, Z
            if u[i] == 90 {
                i += 1
            } else {
                let sign: Double = u[i] == 45 ? -1 : 1
                guard u[i] == 43 || u[i] == 45 else { return nil }
                i += 1
                guard let zh = number(2) else { return nil }
                var offset = zh * 3600
                if expect(58) {
                    guard let zm = number(2) else { return nil }
                    offset += zm * 60
                }
                if expect(58) {
                    guard let zs = number(2) else { return nil }
                    offset += zs
                }
                secs -= sign * Double(offset)
            }
        }
        guard i == u.count else { return nil }
        return Date(timeIntervalSince1970: secs)
    }

    private static func pad(_ v: Int, _ width: Int) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}

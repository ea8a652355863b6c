import ETLSupport
import Foundation

/// IPv4 ranges to countries, looked up by binary search (the ip2geo table, held in a worker's
/// memory while it loads logs: about 385,000 ranges, 12 bytes each plus the country codes).
public struct IPRangeTable: Sendable {
    public struct Country: Sendable, Equatable {
        public let code: String
        public let name: String
    }

    private var starts: [UInt32] = []
    private var ends: [UInt32] = []
    private var countryIndex: [UInt16] = []
    private var countries: [Country] = []
    /// Country code → index into `countries` (ranges come by the hundred thousand).
    private var indexOfCode: [String: UInt16] = [:]

    public var count: Int { starts.count }

    public init() {}

    /// Reads the IP2Location DB1 CSV shape (`"ip_from","ip_to","CC","Country"`), ranges in
    /// ascending order without overlap; `-` country rows are skipped. Errors name the line.
    public init(csv text: String, file: String = "ip2geo.csv") throws(IPRangeError) {
        var lineNumber = 0
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            if raw.isEmpty { continue }
            guard let fields = CSVLine.split(raw) else {
                throw IPRangeError(file: file, line: lineNumber, reason: "a quoted field never closes")
            }
            guard fields.count == 4 else {
                throw IPRangeError(
                    file: file, line: lineNumber,
                    reason: "expected 4 fields (ip_from, ip_to, country code, country name), found \(fields.count)")
            }
            guard let lo = UInt32(fields[0]), let hi = UInt32(fields[1]), lo <= hi else {
                throw IPRangeError(
                    file: file, line: lineNumber,
                    reason: "ip_from and ip_to must be integers with ip_from <= ip_to,"
                        + " found \(fields[0].prefix(20)), \(fields[1].prefix(20))"
                )
            }
            if let last = ends.last, lo <= last {
                throw IPRangeError(
                    file: file, line: lineNumber,
                    reason: "range starts at \(lo), inside or before the previous range (ending \(last));"
                        + " sort the file by ip_from"
                )
            }
            let code = String(fields[2])
            if code == "-" { continue }
            let index: UInt16
            if let known = indexOfCode[code] {
                index = known
            } else {
                index = UInt16(countries.count)
                indexOfCode[code] = index
                countries.append(Country(code: code, name: String(fields[3])))
            }
            starts.append(lo)
            ends.append(hi)
            countryIndex.append(index)
        }
    }

    /// The country of an IPv4 address, nil when no range holds it.
    public func country(of ip: UInt32) -> Country? {
        var lo = 0
        var hi = starts.count
        while lo < hi {  // first range starting after ip
            let mid = (lo + hi) / 2
            if starts[mid] <= ip { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0, ip <= ends[lo - 1] else { return nil }
        return countries[Int(countryIndex[lo - 1])]
    }

    public func country(of ip: String) -> Country? { Self.ipv4(ip).flatMap { country(of: $0) } }

    /// Every range, for generators that draw addresses from anywhere.
    public var allRanges: [ClosedRange<UInt32>] { starts.indices.map { starts[$0]...ends[$0] } }

    /// Adds a range after the last one (ranges come sorted, e.g. from the ip2geo table).
    public mutating func append(from lo: UInt32, to hi: UInt32, code: String, name: String) {
        precondition(
            lo <= hi && (ends.last.map { lo > $0 } ?? true), "ranges must be added in ascending order without overlap")
        let index: UInt16
        if let known = indexOfCode[code] {
            index = known
        } else {
            index = UInt16(countries.count)
            indexOfCode[code] = index
            countries.append(Country(code: code, name: name))
        }
        starts.append(lo)
        ends.append(hi)
        countryIndex.append(index)
    }

    /// Every range of a country, for generators that draw addresses from it.
    public func ranges(of code: String) -> [ClosedRange<UInt32>] {
        guard let c = indexOfCode[code] else { return [] }
        return starts.indices.filter { countryIndex[$0] == UInt16(c) }.map { starts[$0]...ends[$0] }
    }

    /// `a.b.c.d` to an integer, nil if it is not a dotted quad.
    public static func ipv4(_ s: String) -> UInt32? {
        var value: UInt32 = 0
        var part: UInt32 = 0
        var digits = 0
        var dots = 0
        for c in s.utf8 {
            if c == 46 {
                guard digits > 0, dots < 3 else { return nil }
                value = value << 8 | part
                part = 0
                digits = 0
                dots += 1
            } else if c >= 48 && c <= 57 {
                part = part * 10 + UInt32(c - 48)
                digits += 1
                guard digits <= 3, part <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        return value << 8 | part
    }

    public static func dottedQuad(_ ip: UInt32) -> String {
        "\(ip >> 24).\(ip >> 16 & 255).\(ip >> 8 & 255).\(ip & 255)"
    }
}

/// A line of the ip2geo file that cannot be used.
public struct IPRangeError: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let reason: String
    public var description: String { "\(file) line \(line): \(reason)" }
}

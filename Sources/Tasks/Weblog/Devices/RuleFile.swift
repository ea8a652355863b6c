import Foundation

/// Reads the flat YAML of uap-core's `regexes.yaml` and `tests/*.yaml`: top-level sections, each a
/// list of entries of `key: value` pairs whose values are single-quoted (`''` escapes a quote),
/// double-quoted (`\"` and `\\`), bare, or empty (absent). That is all those files use; anything
/// else is an error naming the line, rather than a silent misreading.
public enum RuleFile {
    public typealias Entry = [String: String]

    public struct FormatError: Error, CustomStringConvertible {
        public let file: String
        public let line: Int
        public let problem: String
        public var description: String { "\(file) line \(line): \(problem) (expected uap-core's YAML layout)" }
    }

    /// The entries of each top-level section, in file order.
    public static func sections(of text: String, file: String) throws(FormatError) -> [String: [Entry]] {
        var result: [String: [Entry]] = [:]
        var section: String?
        var entry: Entry?
        func close() {
            if let s = section, let e = entry { result[s, default: []].append(e) }
            entry = nil
        }
        var number = 0
        // "\r\n" is one Character: a CRLF file splits on it, not on "\n".
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            number += 1
            var line = Substring(raw)
            if line.last == "\r" { line = line.dropLast() }
            let trimmed = line.drop { $0 == " " }
            if trimmed.isEmpty || trimmed.first == "#" { continue }
            if trimmed.startIndex == line.startIndex {
                // `section:` at column 0.
                close()
                guard trimmed.hasSuffix(":") else {
                    throw FormatError(file: file, line: number, problem: "a top-level line should be `name:`")
                }
                section = String(trimmed.dropLast())
                continue
            }
            var body = trimmed
            if body.hasPrefix("- ") {
                close()
                entry = [:]
                body = body.dropFirst(2).drop { $0 == " " }
            }
            guard entry != nil else {
                throw FormatError(file: file, line: number, problem: "a key outside a `- ` list entry")
            }
            guard let colon = body.firstIndex(of: ":") else {
                throw FormatError(file: file, line: number, problem: "no `key:` on the line")
            }
            let key = String(body[..<colon])
            let value = body[body.index(after: colon)...].drop { $0 == " " }
            if let v = try scalar(value, file: file, line: number) { entry![key] = v }
        }
        close()
        return result
    }

    private static func scalar(_ v: Substring, file: String, line: Int) throws(FormatError) -> String? {
        guard let first = v.first else { return nil }
        switch first {
        case "'":
            var out = ""
            var i = v.index(after: v.startIndex)
            while i < v.endIndex {
                let c = v[i]
                if c == "'" {
                    let next = v.index(after: i)
                    if next < v.endIndex && v[next] == "'" {
                        out.append("'")
                        i = v.index(after: next)
                        continue
                    }
                    return out
                }
                out.append(c)
                i = v.index(after: i)
            }
            throw FormatError(file: file, line: line, problem: "a single-quoted value is not closed on its line")
        case "\"":
            var out = ""
            var i = v.index(after: v.startIndex)
            while i < v.endIndex {
                let c = v[i]
                if c == "\"" { return out }
                if c == "\\" {
                    i = v.index(after: i)
                    guard i < v.endIndex else { break }
                    switch v[i] {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    default: out.append(v[i])
                    }
                } else {
                    out.append(c)
                }
                i = v.index(after: i)
            }
            throw FormatError(file: file, line: line, problem: "a double-quoted value is not closed on its line")
        default:
            let bare = v.prefix { $0 != "#" }.trimmingCharacters(in: .whitespaces)
            return bare.isEmpty ? nil : bare
        }
    }
}

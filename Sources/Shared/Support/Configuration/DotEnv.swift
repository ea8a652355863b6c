/// Parses dotenv files (`local.env`): `KEY=value`, optional `export `, `#` comments, and values in
/// single quotes (taken literally) or double quotes (with `\n`, `\"`, `\\` escapes).
public enum DotEnv {
    /// Parses `text`; `file` names it in errors (`local.env:7: ...`).
    public static func parse(_ text: String, file: String = "local.env") throws -> [String: String] {
        var values: [String: String] = [:]
        var lineNumber = 0
        // "\r\n" is one Character in Swift, so split on both forms of line end.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            var line = Substring(rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine)
            line = line.drop(while: { $0 == " " || $0 == "\t" })
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = line.dropFirst(7).drop(while: { $0 == " " }) }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError(
                    variable: "\(file):\(lineNumber)", problem: "line has no '=' (expected KEY=value)",
                    fix: "write it as NAME=value, or start it with # to make it a comment")
            }
            let key = line[..<eq].trimmingSpaces()
            guard isValidName(key) else {
                // The text is not echoed: it may be a value (a URL with a password) missing its '='.
                throw ConfigError(
                    variable: "\(file):\(lineNumber)", problem: "the text before '=' is not a variable name",
                    fix: "write NAME=value, with letters, digits and underscores in NAME, not starting with a digit")
            }
            let rest = line[line.index(after: eq)...].drop(while: { $0 == " " || $0 == "\t" })
            values[String(key)] = try parseValue(rest, file: file, line: lineNumber, key: String(key))
        }
        return values
    }

    static func isValidName(_ s: Substring) -> Bool {
        guard let first = s.first, first == "_" || first.isLetter else { return false }
        return s.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
    }

    private static func parseValue(_ rest: Substring, file: String, line: Int, key: String) throws -> String {
        guard let quote = rest.first, quote == "\"" || quote == "'" else {
            // Unquoted: up to an inline comment (" #"), trailing blanks trimmed.
            var value = rest
            if value.hasPrefix("#") { return "" }
            if let hash = value.range(of: " #") { value = value[..<hash.lowerBound] }
            return String(value.trimmingSpaces())
        }
        var out = ""
        var i = rest.index(after: rest.startIndex)
        while i < rest.endIndex {
            let c = rest[i]
            if c == quote { return out }
            if quote == "\"" && c == "\\" {
                let n = rest.index(after: i)
                guard n < rest.endIndex else { break }
                switch rest[n] {
                case "n": out.append("\n")
                case "t": out.append("\t")
                default: out.append(rest[n])
                }
                i = rest.index(after: n)
                continue
            }
            out.append(c)
            i = rest.index(after: i)
        }
        throw ConfigError(
            variable: "\(file):\(line)", problem: "the value of \(key) opens a \(quote) quote that never closes",
            fix: "close the quote on the same line")
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

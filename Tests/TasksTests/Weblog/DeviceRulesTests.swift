import Foundation
import Tasks
import TestSupport
import Testing

@Suite("User agent to device (uap-core rules)", .timeLimit(.minutes(10)))
struct DeviceRulesTests {
    static let testFile = "/usr/share/uap-core/tests/test_device.yaml"

    @Test("uap-core's own device test suite: every case's family, brand and model as uap-core expects")
    func uapCoreSuite() throws {
        let rules = try DeviceRules.shared()
        let text = try String(contentsOfFile: Self.testFile, encoding: .utf8)
        let cases = try RuleFile.sections(of: text, file: Self.testFile)["test_cases"] ?? []
        #expect(cases.count > 15_000)
        var agree = 0
        var brandAgree = 0
        var modelAgree = 0
        var misses: [String] = []
        for c in cases {
            guard let ua = c["user_agent_string"] else { continue }
            let d = rules.classify(ua)
            if d.family == (c["family"] ?? "Other") {
                agree += 1
            } else if misses.count < 10 {
                misses.append("\(ua) -> \(d.family), expected \(c["family"] ?? "Other")")
            }
            if d.brand == c["brand"] {
                brandAgree += 1
            } else if misses.count < 10 {
                misses.append("\(ua) -> brand \(d.brand ?? "nil"), expected \(c["brand"] ?? "nil")")
            }
            if d.model == c["model"] {
                modelAgree += 1
            } else if misses.count < 10 {
                misses.append("\(ua) -> model \(d.model ?? "nil"), expected \(c["model"] ?? "nil")")
            }
        }
        // All 16,111 cases of the suite agree on all three (the README says so); any regression fails.
        #expect(agree == cases.count, "family \(agree)/\(cases.count); first misses: \(misses)")
        #expect(brandAgree == cases.count, "brand \(brandAgree)/\(cases.count); first misses: \(misses)")
        #expect(modelAgree == cases.count, "model \(modelAgree)/\(cases.count); first misses: \(misses)")
    }

    @Test("readable labels for phones, tablets and desktops")
    func labels() throws {
        let rules = try DeviceRules.shared()
        let cases: [(String, String)] = [
            (
                """
                Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
                Version/17.1 Mobile/15E148 Safari/604.1
                """,
                "iPhone"
            ),
            (
                """
                Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 \
                Mobile/15E148 Safari/604.1
                """,
                "iPad"
            ),
            (
                """
                Mozilla/5.0 (Linux; Android 13; SM-G991B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 \
                Mobile Safari/537.36
                """,
                "Samsung SM-G991B"
            ),
            (
                """
                Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 \
                Safari/537.36
                """,
                "Windows PC"
            ),
            (
                """
                Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 \
                Safari/605.1.15
                """,
                "Mac"
            ),
            ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0", "Linux PC"),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Bot"),
        ]
        for (ua, label) in cases {
            #expect(rules.classify(ua).label == label, "\(ua)")
        }
    }

    @Test("the required-literal prefilter never hides a match: agrees with a plain first-match over every rule")
    func prefilterIsSafe() throws {
        // The oracle is written here: Foundation's NSRegularExpression over uap-core's rules in
        // order, first match wins, no prefilter. The inputs are the user agents of uap-core's other
        // test files (browsers and OSes), which the device suite above does not contain.
        let rules = try DeviceRules.shared()
        let yaml = try String(contentsOfFile: DeviceRules.defaultPath, encoding: .utf8)
        let sections = try RuleFile.sections(of: yaml, file: DeviceRules.defaultPath)
        let devices = NaiveParser(sections["device_parsers"] ?? [], replacement: "device_replacement")
        let systems = NaiveParser(sections["os_parsers"] ?? [], replacement: "os_replacement")
        // Every rule compiled (a rule dropped would shift which one matches first).
        #expect(devices.rules.count == (sections["device_parsers"] ?? []).count && devices.rules.count > 100)
        #expect(systems.rules.count == (sections["os_parsers"] ?? []).count && systems.rules.count > 50)
        var agents: [String] = []
        for name in ["test_ua.yaml", "test_os.yaml"] {
            let path = "/usr/share/uap-core/tests/\(name)"
            let cases =
                try RuleFile.sections(of: try String(contentsOfFile: path, encoding: .utf8), file: path)["test_cases"]
                ?? []
            agents += cases.compactMap { $0["user_agent_string"] }
        }
        let sample = stride(from: 0, to: agents.count, by: max(1, agents.count / 1500)).map { agents[$0] }
        #expect(sample.count >= 1000)
        var differences: [String] = []
        for ua in sample {
            let d = rules.classify(ua)
            let family = devices.first(ua) ?? "Other"
            let os = systems.first(ua) ?? "Other"
            if d.family != family || d.os != os {
                differences.append("\(ua): ours \(d.family) / \(d.os), plain \(family) / \(os)")
            }
        }
        #expect(differences.isEmpty, "\(differences.count) of \(sample.count) differ: \(differences.prefix(5))")
    }

    /// uap-core's rule semantics, plainly: the first rule whose regex matches names the result,
    /// `$N` in its replacement standing for group N, else group 1.
    struct NaiveParser {
        let rules: [(NSRegularExpression, String?)]
        init(_ entries: [[String: String]], replacement key: String) {
            rules = entries.compactMap { e in
                guard let pattern = e["regex"] else { return nil }
                let options: NSRegularExpression.Options = e["regex_flag"] == "i" ? [.caseInsensitive] : []
                guard let re = try? NSRegularExpression(pattern: pattern, options: options) else { return nil }
                return (re, e[key])
            }
        }
        func first(_ ua: String) -> String? {
            let ns = ua as NSString
            for (re, replacement) in rules {
                guard let m = re.firstMatch(in: ua, range: NSRange(location: 0, length: ns.length)) else { continue }
                func group(_ n: Int) -> String? {
                    guard n < m.numberOfRanges, m.range(at: n).location != NSNotFound else { return nil }
                    return ns.substring(with: m.range(at: n))
                }
                var out: String
                if let replacement {
                    out = replacement
                    for n in (1...9).reversed() { out = out.replacingOccurrences(of: "$\(n)", with: group(n) ?? "") }
                } else {
                    out = group(1) ?? ""
                }
                out = out.trimmingCharacters(in: .whitespaces)
                return out.isEmpty ? nil : out
            }
            return nil
        }
    }

    @Test("the rule-file reader names the line of a malformed entry")
    func ruleFileErrors() {
        #expect(throws: RuleFile.FormatError.self) {
            try RuleFile.sections(of: "s:\n  - regex: 'open\n", file: "x.yaml")
        }
        let e = try? RuleFile.sections(
            of: "s:\n  - regex: 'a''b'\n    device_replacement: \"q\\\"x\"\n    model:\n", file: "x.yaml")
        #expect(e?["s"]?.first?["regex"] == "a'b")
        #expect(e?["s"]?.first?["device_replacement"] == "q\"x")
        #expect(e?["s"]?.first?["model"] == nil)
    }
}

@Suite("User-agent prefilter on unusual rules", .timeLimit(.minutes(10)))
struct PrefilterEdgeTests {
    @Test("escapes with operands, a top-level alternation and non-ASCII case folding never hide a match")
    func edgeRules() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("uap-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let yaml = """
            user_agent_parsers:
              - regex: 'x'
            os_parsers:
              - regex: '(Plan9)'
            device_parsers:
              - regex: '\\x41ndroidish (\\w+)'
                device_replacement: 'Escaped $1'
              - regex: '^Foo|Bar (\\w+)'
                device_replacement: 'Alternation $1'
              - regex: 'KAIOS (\\w+)'
                regex_flag: 'i'
                device_replacement: 'Folded $1'
              - regex: '; {0,2}(\\d{3})X Build'
                device_replacement: 'Digits $1'
            """
        let path = dir.appendingPathComponent("regexes.yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        let rules = try DeviceRules(path: path)
        let cases: [(String, String)] = [
            ("Mozilla Androidish Phone1", "Escaped Phone1"),
            ("Mozilla Bar Phone2", "Alternation Phone2"),
            ("Mozilla \u{212A}AIOS Phone3", "Folded Phone3"),  // KELVIN SIGN folds to k
            // Arabic-Indic digits are \d.
            ("Mozilla (Linux; \u{0661}\u{0662}\u{0663}X Build/1)", "Digits \u{0661}\u{0662}\u{0663}"),
        ]
        for (ua, family) in cases {
            #expect(rules.classifyWithoutPrefilter(ua).family == family, "\(ua)")
            #expect(rules.classify(ua).family == family, "\(ua)")
        }
    }
}

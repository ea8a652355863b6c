import Foundation

/// What a user agent says about the device: uap-core's device family, brand and model, the OS
/// family, and a label a person understands ("iPhone", "Samsung SM-G991B", "Windows PC", "Mac").
public struct Device: Sendable, Hashable {
    public var family: String
    public var brand: String?
    public var model: String?
    public var os: String
    public var label: String
}

/// An error in the rule file, naming the file and the rule.
public struct DeviceRulesError: Error, CustomStringConvertible {
    public let description: String
}

/// uap-core's rules (`regexes.yaml`: `device_parsers` and `os_parsers`), applied as the uap-core
/// specification says: the first rule whose regex matches wins, `$1`…`$9` in a replacement are that
/// match's groups, a family without replacement is group 1.
///
/// Speed: a rule's regex runs only when the user agent contains the literal text every match of
/// that regex must contain (found by `RequiredLiteral`, all rules searched at once by one
/// Aho–Corasick pass); the answer for each distinct user agent is cached (bounded).
public final class DeviceRules: @unchecked Sendable {
    struct Rule {
        let regex: ICURegex
        let replacements: [String: String]
        /// Each requirement: indexes into the literal table, one of which must be present. Empty =
        /// always tried.
        let requirements: [[Int]]
        /// Where the match must begin and the texts one of which must follow there.
        let lead: Lead?
    }

    struct RuleSet {
        let rules: [Rule]
        /// For each literal, the rules whose first (most selective) requirement names it; a rule
        /// can only match when one of those literals is present.
        var byLiteral: [[Int32]] = []
        /// Rules without a requirement: always tried.
        var unconditional: [Int32] = []

        /// `literals` numbers the required texts of every rule set (one scan finds them all).
        init(_ entries: [RuleFile.Entry], file: String, section: String, literals: inout [[UInt8]: Int]) throws {
            var rules: [Rule] = []
            for (n, e) in entries.enumerated() {
                guard let pattern = e["regex"] else {
                    throw DeviceRulesError(description: "\(file): rule \(n + 1) of \(section) has no regex")
                }
                let regex: ICURegex
                do { regex = try ICURegex(pattern, caseInsensitive: e["regex_flag"] == "i") } catch {
                    throw DeviceRulesError(
                        description: "\(file): rule \(n + 1) of \(section) does not compile: \(error)")
                }
                let reqs = RequiredLiteral.requirements(in: pattern).map { req in
                    req.map { l in
                        if let i = literals[l] { return i }
                        literals[l] = literals.count
                        return literals.count - 1
                    }
                }
                rules.append(
                    Rule(
                        regex: regex, replacements: e, requirements: reqs,
                        lead: RequiredLiteral.lead(in: pattern).map(Lead.init)))
            }
            self.rules = rules
        }

        mutating func index(literalCount: Int) {
            byLiteral = Array(repeating: [], count: literalCount)
            for (i, r) in rules.enumerated() {
                if let first = r.requirements.first {
                    for l in first { byLiteral[l].append(Int32(i)) }
                } else {
                    unconditional.append(Int32(i))
                }
            }
        }

        @inline(__always) static func satisfied(_ requirements: [[Int]], _ present: [Bool]) -> Bool {
            for req in requirements {
                var any = false
                for l in req where present[l] {
                    any = true
                    break
                }
                if !any { return false }
            }
            return true
        }

        /// The first matching rule and its groups. `subject` is the user agent as scanned once by the
        /// classifier; `regexes` are the caller's own clones.
        func firstMatch(_ subject: Subject, prefilter: Bool, regexes: inout [ICURegex?]) -> (Rule, [String?])? {
            // The candidates, in rule order: those reachable from a present literal, and the
            // unconditional ones.
            var candidates: [Int32]
            if prefilter {
                candidates = unconditional
                for l in subject.found { candidates += byLiteral[Int(l)] }
                candidates.sort()
            } else {
                candidates = rules.indices.map { Int32($0) }
            }
            var last: Int32 = -1
            for c in candidates where c != last {
                last = c
                let i = Int(c)
                let r = rules[i]
                if prefilter {
                    if !Self.satisfied(r.requirements, subject.present) { continue }
                    if let lead = r.lead, !subject.hasLead(lead) { continue }
                }
                if regexes[i] == nil { regexes[i] = r.regex.clone() }
                guard let groups = regexes[i]!.firstMatch(subject.text) else { continue }
                return (r, groups)
            }
            return nil
        }
    }

    /// A rule's lead, with the first two bytes of its texts in a set for a quick first test.
    struct Lead {
        let anchor: RequiredLiteral.Anchor
        let prefixes: [[UInt8]]
        let heads: Set<UInt16>
        init(_ l: (anchor: RequiredLiteral.Anchor, prefixes: [[UInt8]])) {
            anchor = l.anchor
            prefixes = l.prefixes
            heads = Set(l.prefixes.map { UInt16($0[0]) << 8 | UInt16($0[1]) })
        }
    }

    /// A user agent prepared for the rules: UTF-16 for ICU, which required texts it contains, and
    /// where text can follow a `;` (and up to two spaces).
    struct Subject {
        let text: UnsafeBufferPointer<UInt16>
        let lowered: [UInt8]
        let present: [Bool]
        /// The present literals' ids.
        let found: [Int32]
        let afterSemicolon: [Int]

        func hasLead(_ lead: Lead) -> Bool {
            func at(_ i: Int) -> Bool {
                guard i + 1 < lowered.count, lead.heads.contains(UInt16(lowered[i]) << 8 | UInt16(lowered[i + 1]))
                else { return false }
                for p in lead.prefixes where i + p.count <= lowered.count && lowered[i..<(i + p.count)].elementsEqual(p)
                { return true }
                return false
            }
            switch lead.anchor {
            case .start: return at(0)
            case .afterSemicolon: return afterSemicolon.contains(where: at)
            }
        }
    }

    let devices: RuleSet
    let systems: RuleSet
    /// Every required text of both rule sets, found in one pass.
    let matcher: LiteralMatcher

    /// The Debian package's rule file.
    public static let defaultPath = "/usr/share/uap-core/regexes.yaml"

    public init(path: String = DeviceRules.defaultPath) throws {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DeviceRulesError(
                description: "cannot read the user-agent rules \(path): install uap-core (apt-get install uap-core)"
                    + " or set ETL_UAP_REGEXES to its regexes.yaml"
            )
        }
        let sections = try RuleFile.sections(of: text, file: path)
        guard let d = sections["device_parsers"], let o = sections["os_parsers"] else {
            throw DeviceRulesError(
                description: "\(path) has no device_parsers or os_parsers section; is it uap-core's regexes.yaml?")
        }
        var literals: [[UInt8]: Int] = [:]
        var devices = try RuleSet(d, file: path, section: "device_parsers", literals: &literals)
        var systems = try RuleSet(o, file: path, section: "os_parsers", literals: &literals)
        devices.index(literalCount: literals.count)
        systems.index(literalCount: literals.count)
        self.devices = devices
        self.systems = systems
        var table = [[UInt8]](repeating: [], count: literals.count)
        for (l, i) in literals { table[i] = l }
        matcher = LiteralMatcher(table)
    }

    /// Rule files are read once per process and per path.
    nonisolated(unsafe) private static var loaded: [String: DeviceRules] = [:]
    private static let lock = NSLock()
    public static func shared(path: String = DeviceRules.defaultPath) throws -> DeviceRules {
        try lock.withLock {
            if let r = loaded[path] { return r }
            let r = try DeviceRules(path: path)
            loaded[path] = r
            return r
        }
    }

    /// Classifies one user agent (uncached; serialized: loaders use their own `DeviceClassifier`).
    public func classify(_ ua: String) -> Device { lock.withLock { shared.classify(ua, prefilter: true) } }

    /// The same without skipping any rule: the reference the prefilter is tested against.
    public func classifyWithoutPrefilter(_ ua: String) -> Device {
        lock.withLock { shared.classify(ua, prefilter: false) }
    }

    private let lock = NSLock()
    private lazy var shared = DeviceClassifier(rules: self)

    /// A replacement with `$n` filled in, or group `default` when there is no replacement; trimmed,
    /// nil when empty.
    static func fill(_ replacement: String?, _ groups: [String?], default group: Int?) -> String? {
        var out: String
        if let replacement {
            guard replacement.contains("$") else { return replacement.isEmpty ? nil : replacement }
            out = ""
            var it = replacement.makeIterator()
            var pending: Character? = it.next()
            while let c = pending {
                pending = it.next()
                if c == "$", let d = pending, let n = d.wholeNumberValue, n >= 1 {
                    if n <= groups.count, let g = groups[n - 1] { out += g }
                    pending = it.next()
                } else {
                    out.append(c)
                }
            }
        } else if let group, group <= groups.count, let g = groups[group - 1] {
            out = g
        } else {
            return nil
        }
        let t = out.trimmingCharacters(in: .whitespaces)
        return t.isEmpty ? nil : t
    }

    /// The readable label: the device family where uap-core knows the device; for desktops (family
    /// "Other") the kind of computer, from the OS, so desktop traffic is never one big "Other".
    static func label(family: String, brand: String?, model: String?, os: String) -> String {
        switch family {
        case "Spider": return "Bot"
        case "Other":
            switch os {
            case "Windows": return "Windows PC"
            case "Mac OS X", "macOS": return "Mac"
            case "Chrome OS": return "Chromebook"
            case "Linux", "Ubuntu", "Debian", "Fedora", "Red Hat", "SUSE", "openSUSE", "Mint", "Arch Linux",
                "FreeBSD", "OpenBSD", "NetBSD", "Solaris", "Slackware", "Gentoo", "Mageia", "CentOS":
                return "Linux PC"
            case "iOS": return "iPhone"
            case "Android": return "Android device"
            case "Other": return "Other"
            default: return "Other (\(os))"
            }
        default:
            return family
        }
    }
}

/// Applies the rules with regex objects of its own: one per thread.
public final class DeviceClassifier {
    let rules: DeviceRules
    private var deviceRegexes: [ICURegex?]
    private var osRegexes: [ICURegex?]

    public init(rules: DeviceRules) {
        self.rules = rules
        deviceRegexes = Array(repeating: nil, count: rules.devices.rules.count)
        osRegexes = Array(repeating: nil, count: rules.systems.rules.count)
    }

    public func classify(_ ua: String) -> Device { classify(ua, prefilter: true) }

    func classify(_ ua: String, prefilter requested: Bool) -> Device {
        var lowered = Array(ua.utf8)
        // The prefilter lower-cases ASCII only and reads `\d` as 0-9; ICU folds some non-ASCII
        // letters to ASCII (K, ſ) and takes any Unicode digit for `\d`. Such agents are rare:
        // they go through every rule.
        let prefilter = requested && !lowered.contains { $0 >= 0x80 }
        for i in lowered.indices where lowered[i] >= 65 && lowered[i] <= 90 { lowered[i] += 32 }
        var present = [Bool](repeating: false, count: rules.matcher.count)
        var found: [Int32] = []
        if prefilter { lowered.withUnsafeBufferPointer { rules.matcher.scan($0, found: &present, list: &found) } }
        var after: [Int] = []
        for i in lowered.indices where lowered[i] == UInt8(ascii: ";") {
            var at = i + 1
            after.append(at)
            for _ in 0..<2 where at < lowered.count && lowered[at] == UInt8(ascii: " ") {
                at += 1
                after.append(at)
            }
        }
        let utf16 = Array(ua.utf16)
        return utf16.withUnsafeBufferPointer { text in
            let subject = DeviceRules.Subject(
                text: text, lowered: lowered, present: present, found: found, afterSemicolon: after)
            var family = "Other"
            var brand: String?
            var model: String?
            if let (rule, groups) = rules.devices.firstMatch(subject, prefilter: prefilter, regexes: &deviceRegexes) {
                let r = rule.replacements
                family = DeviceRules.fill(r["device_replacement"], groups, default: 1) ?? "Other"
                brand = DeviceRules.fill(r["brand_replacement"], groups, default: nil)
                model = DeviceRules.fill(r["model_replacement"], groups, default: 1)
            }
            var os = "Other"
            if let (rule, groups) = rules.systems.firstMatch(subject, prefilter: prefilter, regexes: &osRegexes) {
                os = DeviceRules.fill(rule.replacements["os_replacement"], groups, default: 1) ?? "Other"
            }
            return Device(
                family: family, brand: brand, model: model, os: os,
                label: DeviceRules.label(family: family, brand: brand, model: model, os: os))
        }
    }
}

/// A bounded cache of classified user agents, one per loader (not shared between threads).
public struct DeviceCache {
    private let classifier: DeviceClassifier
    private var entries: [String: Device] = [:]
    private let limit: Int

    public init(rules: DeviceRules, limit: Int = 50_000) {
        classifier = DeviceClassifier(rules: rules)
        self.limit = limit
    }

    public mutating func device(_ ua: String) -> Device {
        if let d = entries[ua] { return d }
        let d = classifier.classify(ua)
        guard limit > 0 else { return d }
        if entries.count >= limit { entries.removeAll(keepingCapacity: true) }
        entries[ua] = d
        return d
    }
}

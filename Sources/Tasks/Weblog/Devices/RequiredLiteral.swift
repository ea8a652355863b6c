/// Finds text that every match of a regular expression must contain, so that a user agent can skip
/// the (costly) regex of every rule whose required text it lacks.
///
/// The answer is a list of requirements that must all hold; each requirement is a set of literals
/// of which at least one must occur (an alternation like `(?: Build|\) AppleWebKit)` gives the set
/// {" build", ") applewebkit"}). Only what is certain is kept: literals at the pattern's top level or
/// in groups that are not optional, lower-cased ASCII (the caller lower-cases the subject, so
/// case-insensitive rules are covered). Classes, escapes it does not know and non-ASCII bytes end a
/// literal; a pattern with no requirement is always tried.
enum RequiredLiteral {
    typealias Requirement = [[UInt8]]

    /// At most `limit` requirements, the most selective first.
    static func requirements(in pattern: String, limit: Int = 6) -> [Requirement] {
        let p = Array(pattern.utf8)
        let all = alternatives(p, 0, p.count).map { ($0, score($0)) }
        return Array(all.sorted { $0.1 > $1.1 }.prefix(limit).map(\.0))
    }

    /// Where a rule's match must begin, when the pattern says so.
    enum Anchor: Equatable {
        /// `^…`: at the start of the subject.
        case start
        /// `; {0,2}…` (a third of uap-core's device rules): right after a `;` and up to two spaces.
        case afterSemicolon
    }

    /// For a pattern of the shape `^X…` or `; {0,2}X…` where X is plain text or a group of plain
    /// alternatives: the anchor and the texts one of which must follow it (lower-cased; each
    /// alternative contributes its plain prefix, up to the first character that is not a literal;
    /// `[Aa]` counts as `a`). Nil otherwise.
    static func lead(in pattern: String) -> (anchor: Anchor, prefixes: [[UInt8]])? {
        let p = Array(pattern.utf8)
        let anchor: Anchor
        let at: Int
        if p.first == UInt8(ascii: "^") {
            anchor = .start
            at = 1
        } else if p.starts(with: Array("; {0,2}".utf8)) {
            anchor = .afterSemicolon
            at = 7
        } else {
            return nil
        }
        guard at < p.count else { return nil }
        // `^a|b`: the anchor binds only the first alternative, so there is no lead.
        guard let whole = branches(p, 0, p.count), whole.count == 1 else { return nil }
        let (prefixes, _) = expand(p, at, p.count)
        guard !prefixes.isEmpty, prefixes.allSatisfy({ $0.count >= 2 }) else { return nil }
        return (anchor, Array(Set(prefixes)))
    }

    /// The literal texts a match of `p[from..<to]` can start with, lower-cased, and whether they
    /// cover the whole span (so that what follows may extend them). Literal characters extend every
    /// prefix; a small class (`[BLRQ]`, `\d`) or a group's alternatives fork them (an empty
    /// alternative forks an unextended copy); an atom repeated at least once (`+`, `{2,}`) extends
    /// them once and ends them; anything else (`.`, an optional atom, a large class) ends them.
    /// Forks stop past 64 prefixes. A match certainly begins with one of the returned prefixes.
    static func expand(_ b: [UInt8], _ from: Int, _ to: Int) -> (prefixes: [[UInt8]], complete: Bool) {
        var prefixes: [[UInt8]] = [[]]
        var i = from
        func quantifier(_ j: Int) -> (kind: Int, next: Int) {  // 0 none, 1 optional, 2 at least once
            guard j < to else { return (0, j) }
            switch b[j] {
            case UInt8(ascii: "?"), UInt8(ascii: "*"): return (1, j + 1)
            case UInt8(ascii: "+"): return (2, j + 1)
            case UInt8(ascii: "{"):
                var k = j + 1
                while k < to && b[k] != UInt8(ascii: "}") { k += 1 }
                let low = b[(j + 1)..<min(k, to)].prefix { $0 != UInt8(ascii: ",") }
                return ((low.isEmpty || low.allSatisfy { $0 == UInt8(ascii: "0") }) ? 1 : 2, k + 1)
            default: return (0, j)
            }
        }
        func isPlain(_ c: UInt8) -> Bool {
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
                || c == UInt8(ascii: " ") || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: "/")
                || c == UInt8(ascii: ";") || c == UInt8(ascii: ":") || c == UInt8(ascii: ",")
        }
        /// Appends one of `choices` to every prefix; false when that would make too many.
        func fork(_ choices: [[UInt8]]) -> Bool {
            let unique = Array(Set(choices))
            guard !unique.isEmpty, prefixes.count * unique.count <= 64 else { return false }
            prefixes = prefixes.flatMap { p in unique.map { p + $0 } }
            return true
        }
        while i < to {
            let c = b[i]
            var choices: [[UInt8]]
            var atomEnd: Int
            var atomComplete = true
            if c == UInt8(ascii: "\\") {
                guard i + 1 < to else { return (prefixes, false) }
                let e = b[i + 1]
                if e == UInt8(ascii: "d") {
                    choices = (48...57).map { [UInt8($0)] }
                } else if isEscapedLiteral(e) {
                    choices = [[lower(e)]]
                } else {
                    return (prefixes, false)
                }
                atomEnd = i + 2
            } else if c == UInt8(ascii: "[") {
                guard let e = classEnd(b, i, to), b[i + 1] != UInt8(ascii: "^") else { return (prefixes, false) }
                var members = Set<UInt8>()
                var j = i + 1
                while j < e {
                    let m = b[j]
                    if m == UInt8(ascii: "\\") && j + 1 < e && b[j + 1] == UInt8(ascii: "d") {
                        for x in UInt8(48)...57 { members.insert(x) }
                        j += 2
                    } else if j + 2 < e && b[j + 1] == UInt8(ascii: "-") {
                        let hi = b[j + 2]
                        guard isPlain(m), isPlain(hi), hi >= m, Int(hi - m) < 12 else { return (prefixes, false) }
                        for x in m...hi { members.insert(lower(x)) }
                        j += 3
                    } else {
                        guard isPlain(m) else { return (prefixes, false) }
                        members.insert(lower(m))
                        j += 1
                    }
                }
                guard members.count <= 12 else { return (prefixes, false) }
                choices = members.sorted().map { [$0] }
                atomEnd = e + 1
            } else if c == UInt8(ascii: "(") {
                guard let close = matching(b, i, to) else { return (prefixes, false) }
                var body = i + 1
                if b[body] == UInt8(ascii: "?") {
                    guard body + 1 < close, b[body + 1] == UInt8(ascii: ":") else { return (prefixes, false) }
                    body += 2
                }
                // Expand each of the group's alternatives.
                guard let bounds = branches(b, body, close) else { return (prefixes, false) }
                choices = []
                for (a, z) in bounds {
                    let (sub, complete) = expand(b, a, z)
                    choices += sub
                    if !complete { atomComplete = false }
                }
                atomEnd = close + 1
            } else if isPlain(c) {
                choices = [[lower(c)]]
                atomEnd = i + 1
            } else {
                return (prefixes, false)
            }
            let (q, next) = quantifier(atomEnd)
            if q == 1 { return (prefixes, false) }
            guard fork(choices) else { return (prefixes, false) }
            if q == 2 || !atomComplete { return (prefixes, false) }
            i = next
        }
        return (prefixes, true)
    }

    /// Longer literals are rarer; among equals, fewer alternatives.
    /// How well a requirement filters: a literal found in many everyday user agents ("android",
    /// "windows") filters little out of real traffic, however long it is; then longer literals
    /// are rarer, and fewer alternatives are better. So a crawler rule keeps its "bot" requirement
    /// rather than its "android" one.
    static func score(_ r: Requirement) -> Int {
        let seen = r.reduce(0) { $0 + frequency($1) }
        return -seen * 1000 + min(r.map(\.count).min() ?? 0, 8) * 10 - min(r.count, 9)
    }

    /// Lower-cased real user agents of desktops, phones and tablets, with the generator's weights.
    static let everyday: [(agent: [UInt8], weight: Int)] = WeblogGenerator.builtInAgents.map {
        (Array($0.agent.lowercased().utf8), $0.weight)
    }

    /// How many of the everyday user agents (by weight) contain `literal`.
    static func frequency(_ literal: [UInt8]) -> Int {
        var n = 0
        for (ua, weight) in everyday where ua.count >= literal.count {
            if (0...(ua.count - literal.count)).contains(where: { ua[$0..<($0 + literal.count)].elementsEqual(literal) }
            ) {
                n += weight
            }
        }
        return n
    }

    /// The requirements of `p[from..<to]`, which may be an alternation.
    private static func alternatives(_ p: [UInt8], _ from: Int, _ to: Int) -> [Requirement] {
        guard let branches = branches(p, from, to) else { return [] }
        if branches.count == 1 { return sequence(p, from, to) }
        // One of the branches matches: the union of each branch's best requirement is required.
        var union: Requirement = []
        for (a, b) in branches {
            guard let best = sequence(p, a, b).max(by: { score($0) < score($1) }) else { return [] }
            union += best
        }
        return [Array(Set(union)).sorted { $0.lexicographicallyPrecedes($1) }]
    }

    /// The requirements of a branch without a top-level `|`.
    private static func sequence(_ p: [UInt8], _ from: Int, _ to: Int) -> [Requirement] {
        var found: [Requirement] = []
        var run: [UInt8] = []
        func endRun() {
            if run.count >= 2 { found.append([run]) }
            run = []
        }
        /// What follows an atom ending before `i`: 0 = nothing, 1 = optional (`?`, `*`, `{0`),
        /// 2 = repeated at least once (`+`, `{n`); and the index after the quantifier.
        func quantifier(_ i: Int) -> (Int, Int) {
            guard i < to else { return (0, i) }
            var j = i
            var kind = 0
            switch p[j] {
            case UInt8(ascii: "?"), UInt8(ascii: "*"):
                kind = 1
                j += 1
            case UInt8(ascii: "+"):
                kind = 2
                j += 1
            case UInt8(ascii: "{"):
                var k = j + 1
                while k < to && p[k] != UInt8(ascii: "}") { k += 1 }
                guard k < to else { return (0, i) }
                let low = p[(j + 1)..<k].prefix { $0 != UInt8(ascii: ",") }
                kind = (low.isEmpty || low.allSatisfy { $0 == UInt8(ascii: "0") }) ? 1 : 2
                j = k + 1
            default: return (0, i)
            }
            if j < to && (p[j] == UInt8(ascii: "?") || p[j] == UInt8(ascii: "+")) { j += 1 }
            return (kind, j)
        }
        var i = from
        while i < to {
            let c = p[i]
            switch c {
            case UInt8(ascii: "("):
                endRun()
                guard let close = matching(p, i, to) else { return found }
                let (q, next) = quantifier(close + 1)
                var bodyStart = i + 1
                var usable = q != 1
                if bodyStart < close && p[bodyStart] == UInt8(ascii: "?") {
                    let kind = bodyStart + 1 < close ? p[bodyStart + 1] : 0
                    if kind == UInt8(ascii: ":") || kind == UInt8(ascii: "=") {
                        bodyStart += 2
                    } else if kind == UInt8(ascii: "<") && bodyStart + 2 < close
                        && p[bodyStart + 2] == UInt8(ascii: "=")
                    {
                        bodyStart += 3
                    } else {
                        usable = false  // negative look-around, inline flags, named groups: skip
                    }
                }
                if usable { found += alternatives(p, bodyStart, close) }
                i = next
            case UInt8(ascii: "["):
                endRun()
                guard let close = classEnd(p, i, to) else { return found }
                i = quantifier(close + 1).1
            case UInt8(ascii: "\\"):
                guard i + 1 < to else {
                    endRun()
                    return found
                }
                let e = p[i + 1]
                let literal = isEscapedLiteral(e)
                let (q, next) = quantifier(escapeEnd(p, i, to))
                if literal && q != 1 { run.append(lower(e)) } else { endRun() }
                if q != 0 { endRun() }
                i = next
            case UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "$"):
                endRun()
                i = quantifier(i + 1).1
            default:
                let (q, next) = quantifier(i + 1)
                if c >= 0x80 {
                    endRun()  // case folding of non-ASCII is not ours to guess
                } else if q != 1 {
                    run.append(lower(c))
                }
                if q != 0 { endRun() }
                i = next
            }
        }
        endRun()
        return found
    }

    /// The index after the escape at `i` (`\\x41`, `\\x{263A}`, `\\u00E9`, `\\0101`, `\\cA`,
    /// `\\p{L}`, `\\Q…\\E` take their operands along).
    static func escapeEnd(_ p: [UInt8], _ i: Int, _ to: Int) -> Int {
        guard i + 1 < to else { return to }
        let e = p[i + 1]
        func braced(_ j: Int) -> Int? {
            guard j < to, p[j] == UInt8(ascii: "{") else { return nil }
            var k = j
            while k < to && p[k] != UInt8(ascii: "}") { k += 1 }
            return min(k + 1, to)
        }
        switch e {
        case UInt8(ascii: "x"): return braced(i + 2) ?? min(i + 4, to)
        case UInt8(ascii: "u"): return min(i + 6, to)
        case UInt8(ascii: "U"): return min(i + 10, to)
        case UInt8(ascii: "c"): return min(i + 3, to)
        case UInt8(ascii: "p"), UInt8(ascii: "P"), UInt8(ascii: "N"): return braced(i + 2) ?? min(i + 3, to)
        case UInt8(ascii: "0"):
            var k = i + 2
            while k < to && k < i + 5 && p[k] >= 48 && p[k] <= 55 { k += 1 }
            return k
        case UInt8(ascii: "Q"):
            var k = i + 2
            while k + 1 < to && !(p[k] == UInt8(ascii: "\\") && p[k + 1] == UInt8(ascii: "E")) { k += 1 }
            return min(k + 2, to)
        default: return i + 2
        }
    }

    private static func lower(_ c: UInt8) -> UInt8 { c >= 65 && c <= 90 ? c + 32 : c }

    private static func isEscapedLiteral(_ e: UInt8) -> Bool {
        switch e {
        case UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: "-"), UInt8(ascii: "("), UInt8(ascii: ")"),
            UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "+"),
            UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "|"), UInt8(ascii: "^"), UInt8(ascii: "$"),
            UInt8(ascii: " "), UInt8(ascii: ";"), UInt8(ascii: ":"), UInt8(ascii: "_"), UInt8(ascii: "'"),
            UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: ","), UInt8(ascii: "!"), UInt8(ascii: "#"),
            UInt8(ascii: "&"), UInt8(ascii: "="), UInt8(ascii: "@"), UInt8(ascii: "%"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// The alternatives of `p[from..<to]`: the spans between its top-level `|` (one span when
    /// there is none); nil when a class is not closed.
    static func branches(_ p: [UInt8], _ from: Int, _ to: Int) -> [(Int, Int)]? {
        var spans: [(Int, Int)] = []
        var depth = 0
        var start = from
        var i = from
        while i < to {
            switch p[i] {
            case UInt8(ascii: "\\"): i = escapeEnd(p, i, to) - 1
            case UInt8(ascii: "["):
                guard let e = classEnd(p, i, to) else { return nil }
                i = e
            case UInt8(ascii: "("): depth += 1
            case UInt8(ascii: ")"): depth -= 1
            case UInt8(ascii: "|") where depth == 0:
                spans.append((start, i))
                start = i + 1
            default: break
            }
            i += 1
        }
        spans.append((start, to))
        return spans
    }

    /// The index of the `)` closing the group opened at `open`.
    private static func matching(_ p: [UInt8], _ open: Int, _ to: Int) -> Int? {
        var depth = 0
        var i = open
        while i < to {
            switch p[i] {
            case UInt8(ascii: "\\"): i += 1
            case UInt8(ascii: "["):
                guard let e = classEnd(p, i, to) else { return nil }
                i = e
            case UInt8(ascii: "("): depth += 1
            case UInt8(ascii: ")"):
                depth -= 1
                if depth == 0 { return i }
            default: break
            }
            i += 1
        }
        return nil
    }

    /// The index of the `]` closing the class opened at `open` (ICU allows nested sets).
    private static func classEnd(_ p: [UInt8], _ open: Int, _ to: Int) -> Int? {
        var depth = 0
        var i = open
        while i < to {
            switch p[i] {
            case UInt8(ascii: "\\"): i += 1
            case UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "]"):
                // A `]` right after `[` or `[^` is a literal member.
                let prev = p[i - 1]
                let prev2 = i >= 2 ? p[i - 2] : 0
                if prev == UInt8(ascii: "[") || (prev == UInt8(ascii: "^") && prev2 == UInt8(ascii: "[")) { break }
                depth -= 1
                if depth == 0 { return i }
            default: break
            }
            i += 1
        }
        return nil
    }
}

/// Aho–Corasick over a set of byte strings: one pass over a subject reports every pattern it
/// contains. Bytes that appear in no pattern share one column of the transition table.
struct LiteralMatcher {
    private var classes = [UInt8](repeating: 0, count: 256)
    private var width = 1
    private var next: [Int32] = []
    /// For each state: the pattern ending there (or -1) and the next state on the suffix chain with
    /// an output (or -1).
    private var output: [Int32] = []
    private var outputLink: [Int32] = []
    let count: Int

    init(_ patterns: [[UInt8]]) {
        count = patterns.count
        var used = Set<UInt8>()
        for p in patterns { used.formUnion(p) }
        for (n, b) in used.sorted().enumerated() { classes[Int(b)] = UInt8(n + 1) }
        width = used.count + 1
        // The trie.
        var trie: [[Int32]] = [[Int32](repeating: -1, count: width)]
        var out: [Int32] = [-1]
        for (id, p) in patterns.enumerated() {
            var s = 0
            for b in p {
                let c = Int(classes[Int(b)])
                if trie[s][c] < 0 {
                    trie[s][c] = Int32(trie.count)
                    trie.append([Int32](repeating: -1, count: width))
                    out.append(-1)
                }
                s = Int(trie[s][c])
            }
            if out[s] < 0 { out[s] = Int32(id) }
        }
        // Breadth first: failure links, full transitions and output links.
        var fail = [Int32](repeating: 0, count: trie.count)
        var link = [Int32](repeating: -1, count: trie.count)
        var queue: [Int] = []
        for c in 0..<width {
            if trie[0][c] < 0 { trie[0][c] = 0 } else { queue.append(Int(trie[0][c])) }
        }
        trie[0][0] = 0
        var head = 0
        while head < queue.count {
            let s = queue[head]
            head += 1
            let f = Int(fail[s])
            link[s] = out[f] >= 0 ? Int32(f) : link[f]
            for c in 0..<width {
                let t = trie[s][c]
                if t < 0 || c == 0 {
                    trie[s][c] = c == 0 ? 0 : trie[f][c]
                } else {
                    fail[Int(t)] = s == 0 ? 0 : trie[f][c]
                    queue.append(Int(t))
                }
            }
        }
        next = trie.flatMap { $0 }
        output = out
        outputLink = link
    }

    /// Sets `found[id] = true` for every pattern occurring in `subject` (already lower-cased) and
    /// appends each newly found id to `list`.
    func scan(_ subject: UnsafeBufferPointer<UInt8>, found: inout [Bool], list: inout [Int32]) {
        next.withUnsafeBufferPointer { next in
            output.withUnsafeBufferPointer { output in
                outputLink.withUnsafeBufferPointer { outputLink in
                    classes.withUnsafeBufferPointer { classes in
                        found.withUnsafeMutableBufferPointer { found in
                            var s = 0
                            for b in subject {
                                s = Int(next[s &* width &+ Int(classes[Int(b)])])
                                var o = output[s] >= 0 ? s : Int(outputLink[s])
                                while o >= 0 {
                                    let id = Int(output[o])
                                    if id >= 0 && !found[id] {
                                        found[id] = true
                                        list.append(Int32(id))
                                    }
                                    o = Int(outputLink[o])
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

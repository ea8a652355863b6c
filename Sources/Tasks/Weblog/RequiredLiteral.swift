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
        let all = alternatives(p, 0, p.count)
        return Array(all.sorted { score($0) > score($1) }.prefix(limit))
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
        var at: Int
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
        var branches: [ArraySlice<UInt8>] = []
        if p[at] == UInt8(ascii: "(") {
            guard let close = matching(p, at, p.count) else { return nil }
            var body = at + 1
            if p[body] == UInt8(ascii: "?") {
                guard body + 1 < close, p[body + 1] == UInt8(ascii: ":") else { return nil }
                body += 2
            }
            if close + 1 < p.count && [UInt8(ascii: "?"), UInt8(ascii: "*"), UInt8(ascii: "{")].contains(p[close + 1]) { return nil }
            var depth = 0, start = body
            var i = body
            while i < close {
                switch p[i] {
                case UInt8(ascii: "\\"): i += 1
                case UInt8(ascii: "["): if let e = classEnd(p, i, close) { i = e } else { return nil }
                case UInt8(ascii: "("): depth += 1
                case UInt8(ascii: ")"): depth -= 1
                case UInt8(ascii: "|") where depth == 0: branches.append(p[start..<i]); start = i + 1
                default: break
                }
                i += 1
            }
            branches.append(p[start..<close])
        } else {
            branches = [p[at...]]
        }
        var prefixes: [[UInt8]] = []
        for b in branches {
            let expanded = plainPrefixes(Array(b))
            guard !expanded.isEmpty, expanded.allSatisfy({ $0.count >= 2 }) else { return nil }
            prefixes += expanded
        }
        return prefixes.isEmpty ? nil : (anchor, Array(Set(prefixes)))
    }

    /// The literal texts a branch can start with, lower-cased: literal characters extend every
    /// prefix; a small class (`[BLRQ]`, `[34]`) or a group of plain alternatives (`(?:7|8|10)`)
    /// forks them; anything else (a quantifier, `.`, `\d`, a large class) ends them. Forks stop past
    /// 64 prefixes. A match of the branch certainly begins with one of the returned prefixes.
    private static func plainPrefixes(_ b: [UInt8]) -> [[UInt8]] {
        var prefixes: [[UInt8]] = [[]]
        var i = 0
        let quantifiers: [UInt8] = [UInt8(ascii: "?"), UInt8(ascii: "*"), UInt8(ascii: "{"), UInt8(ascii: "+")]
        func quantified(_ j: Int) -> Bool { j < b.count && quantifiers.contains(b[j]) }
        func isPlain(_ c: UInt8) -> Bool {
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
                || c == UInt8(ascii: " ") || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: "/")
                || c == UInt8(ascii: ";") || c == UInt8(ascii: ":") || c == UInt8(ascii: ",")
        }
        func fork(_ choices: [[UInt8]]) -> Bool {
            guard !choices.isEmpty, choices.allSatisfy({ !$0.isEmpty }), prefixes.count * choices.count <= 64 else { return false }
            prefixes = prefixes.flatMap { p in choices.map { p + $0 } }
            return true
        }
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\\") {
                guard i + 1 < b.count, isEscapedLiteral(b[i + 1]), !quantified(i + 2) else { break }
                prefixes = prefixes.map { $0 + [lower(b[i + 1])] }
                i += 2
                continue
            }
            if c == UInt8(ascii: "[") {
                guard let e = classEnd(b, i, b.count), !quantified(e + 1), b[i + 1] != UInt8(ascii: "^") else { break }
                // Members: plain characters and short ranges like 0-9 or A-C.
                var members = Set<UInt8>()
                var j = i + 1
                var ok = true
                while j < e {
                    let m = b[j]
                    if j + 2 < e && b[j + 1] == UInt8(ascii: "-") {
                        let hi = b[j + 2]
                        guard isPlain(m), isPlain(hi), hi >= m, Int(hi - m) < 12 else { ok = false; break }
                        for x in m...hi { members.insert(lower(x)) }
                        j += 3
                    } else {
                        guard isPlain(m) else { ok = false; break }
                        members.insert(lower(m))
                        j += 1
                    }
                }
                guard ok, members.count <= 12, fork(members.sorted().map { [$0] }) else { break }
                i = e + 1
                continue
            }
            if c == UInt8(ascii: "(") {
                guard let close = matching(b, i, b.count), !quantified(close + 1) else { break }
                var body = i + 1
                if b[body] == UInt8(ascii: "?") {
                    guard body + 1 < close, b[body + 1] == UInt8(ascii: ":") else { break }
                    body += 2
                }
                // The group's alternatives, each entirely plain.
                var choices: [[UInt8]] = []
                var current: [UInt8] = []
                var j = body
                var ok = true
                while j < close {
                    let m = b[j]
                    if m == UInt8(ascii: "|") { choices.append(current); current = []; j += 1; continue }
                    if m == UInt8(ascii: "\\"), j + 1 < close, isEscapedLiteral(b[j + 1]), !(j + 2 < close && quantifiers.contains(b[j + 2])) {
                        current.append(lower(b[j + 1]))
                        j += 2
                        continue
                    }
                    guard isPlain(m), !(j + 1 < close && quantifiers.contains(b[j + 1])) else { ok = false; break }
                    current.append(lower(m))
                    j += 1
                }
                choices.append(current)
                guard ok, fork(choices) else { break }
                i = close + 1
                continue
            }
            guard isPlain(c), !quantified(i + 1) else { break }
            prefixes = prefixes.map { $0 + [lower(c)] }
            i += 1
        }
        return prefixes
    }

    /// Longer literals are rarer; among equals, fewer alternatives.
    static func score(_ r: Requirement) -> Int {
        (r.map(\.count).min() ?? 0) * 1000 - r.count
    }

    /// The requirements of `p[from..<to]`, which may be an alternation.
    private static func alternatives(_ p: [UInt8], _ from: Int, _ to: Int) -> [Requirement] {
        var branches: [(Int, Int)] = []
        var depth = 0, start = from, i = from
        while i < to {
            switch p[i] {
            case UInt8(ascii: "\\"): i += 1
            case UInt8(ascii: "["): if let e = classEnd(p, i, to) { i = e } else { return [] }
            case UInt8(ascii: "("): depth += 1
            case UInt8(ascii: ")"): depth -= 1
            case UInt8(ascii: "|") where depth == 0:
                branches.append((start, i))
                start = i + 1
            default: break
            }
            i += 1
        }
        branches.append((start, to))
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
            case UInt8(ascii: "?"), UInt8(ascii: "*"): kind = 1; j += 1
            case UInt8(ascii: "+"): kind = 2; j += 1
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
                    } else if kind == UInt8(ascii: "<") && bodyStart + 2 < close && p[bodyStart + 2] == UInt8(ascii: "=") {
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
                guard i + 1 < to else { endRun(); return found }
                let e = p[i + 1]
                let literal = isEscapedLiteral(e)
                let (q, next) = quantifier(i + 2)
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

    /// The index of the `)` closing the group opened at `open`.
    private static func matching(_ p: [UInt8], _ open: Int, _ to: Int) -> Int? {
        var depth = 0
        var i = open
        while i < to {
            switch p[i] {
            case UInt8(ascii: "\\"): i += 1
            case UInt8(ascii: "["): guard let e = classEnd(p, i, to) else { return nil }; i = e
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
                                    if id >= 0 && !found[id] { found[id] = true; list.append(Int32(id)) }
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

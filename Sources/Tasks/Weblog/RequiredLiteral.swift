/// Finds a piece of text that every match of a regular expression must contain, so that a user
/// agent can skip the (costly) regex of every rule whose piece it lacks.
///
/// Only what is certain is returned: literals at the pattern's top level or inside groups that are
/// neither optional nor alternations, lower-cased ASCII (the caller lower-cases the subject too, so a
/// case-insensitive rule is covered). When unsure (alternation at the top, classes, escapes it
/// does not know), a run ends; a pattern with no run of two or more bytes gets `nil` and is always
/// tried.
enum RequiredLiteral {
    static func longest(in pattern: String) -> [UInt8]? {
        let p = Array(pattern.utf8)
        var runs: [[UInt8]] = []
        guard scan(p, 0, p.count, into: &runs) else { return nil }
        let best = runs.max { $0.count < $1.count }
        guard let best, best.count >= 2 else { return nil }
        return best
    }

    /// Scans `p[from..<to]` (one level of the pattern); false when the level has a top-level `|`,
    /// which makes nothing in it required.
    private static func scan(_ p: [UInt8], _ from: Int, _ to: Int, into runs: inout [[UInt8]]) -> Bool {
        var found: [[UInt8]] = []
        var run: [UInt8] = []
        func endRun() { if !run.isEmpty { found.append(run); run = [] } }
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
            case UInt8(ascii: "|"):
                return false
            case UInt8(ascii: "("):
                endRun()
                guard let close = matching(p, i, to) else { return false }
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
                if usable {
                    var inner: [[UInt8]] = []
                    if scan(p, bodyStart, close, into: &inner) { found += inner }
                }
                i = next
            case UInt8(ascii: "["):
                endRun()
                guard let close = classEnd(p, i, to) else { return false }
                i = quantifier(close + 1).1
            case UInt8(ascii: "\\"):
                guard i + 1 < to else { return false }
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
        runs += found
        return true
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

    /// Sets `found[id] = true` for every pattern occurring in `subject` (already lower-cased).
    func scan(_ subject: UnsafeBufferPointer<UInt8>, found: inout [Bool]) {
        var s = 0
        for b in subject {
            s = Int(next[s * width + Int(classes[Int(b)])])
            var o = output[s] >= 0 ? s : Int(outputLink[s])
            while o >= 0 {
                if output[o] >= 0 { found[Int(output[o])] = true }
                o = Int(outputLink[o])
            }
        }
    }
}

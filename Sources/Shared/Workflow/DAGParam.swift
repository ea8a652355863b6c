import ETLSupport
import Foundation

/// A parameter a DAG declares: a name, a type, a default, and what it does to the DAG's output.
/// A run records its parameters (every declared one, defaults filled in) when it is created;
/// tasks read them from their context (`TaskContext.param`).
///
/// ```swift
/// DAGParam("top", .integer(1...100), default: "5", effect: .definesOutput,
///          help: "how many rows the ranking lists")
/// ```
public struct DAGParam: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A whole number in the range.
        case integer(ClosedRange<Int>)
        /// A folder given relative to `root` (or as an absolute path inside it) that must exist, be
        /// another folder than the root, and stay inside it once symbolic links are resolved.
        case folder(root: String)
    }

    /// How the parameter bears on what a run produces: a report for a date must never depend on
    /// how it was run.
    public enum Effect: Sendable, Equatable {
        /// Part of what the output is: a run with another value writes another output (its own
        /// file), never over the default one; any run may set it.
        case definesOutput
        /// Changes what is read or done, not what a date's output means (where a load reads its
        /// files from): manual runs only; scheduled and backfilled runs take the default.
        case manualOnly
    }

    public let name: String
    public let kind: Kind
    /// The value a run gets when none is given ("" for a folder: none).
    public let defaultValue: String
    public let effect: Effect
    public let help: String

    public init(_ name: String, _ kind: Kind, default defaultValue: String, effect: Effect, help: String) {
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.effect = effect
        self.help = help
    }

    /// The type as operators read it ("integer 1...100", "folder under /data/logs").
    public var typeDescription: String {
        switch kind {
        case .integer(let r): "integer \(r.lowerBound)...\(r.upperBound)"
        case .folder(let root): "folder under \(root)"
        }
    }

    /// `value` in its canonical form ("007" is "7"; a folder as given, without trailing slashes),
    /// or why it is not a value of this parameter. A folder's existence is checked by `folder(_:)`.
    public func canonical(_ value: String) -> Result<String, DAGParamError> {
        switch kind {
        case .integer(let range):
            guard let n = Int(value.trimmingCharacters(in: .whitespaces)), range.contains(n) else {
                return .failure(
                    DAGParamError(
                        name,
                        "\"\(value)\" is not a whole number from \(range.lowerBound) to \(range.upperBound). "
                            + "Fix: give \(name)=N with N in \(range.lowerBound)...\(range.upperBound)"))
            }
            return .success(String(n))
        case .folder(let root):
            if value.isEmpty { return .success("") }
            guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                return .failure(
                    DAGParamError(name, "the value holds a control character. Fix: name a folder inside \(root)"))
            }
            var v = value
            while v.count > 1 && v.hasSuffix("/") { v.removeLast() }
            guard !v.split(separator: "/").contains("..") else {
                return .failure(
                    DAGParamError(
                        name,
                        "\"\(value)\" is outside \(root). Fix: name a folder inside \(root), relative to it "
                            + "(\(name)=archive) and without '..'"))
            }
            return .success(v)
        }
    }

    /// For a folder parameter: the folder `value` names, resolved (symbolic links followed), when it
    /// exists, is a folder and stays inside the root; else why not. nil for the empty value.
    public func folder(_ value: String) -> Result<String?, DAGParamError> {
        guard case .folder(let root) = kind else { return .success(nil) }
        switch canonical(value) {
        case .failure(let e): return .failure(e)
        case .success(let v):
            if v.isEmpty { return .success(nil) }
            // Resolved where this runs: the trigger's host checks it, the task's host again.
            let base = Self.absolute(root)
            let path = v.hasPrefix("/") ? v : "\(base)/\(v)"
            guard let resolved = Self.resolved(path) else {
                return .failure(
                    DAGParamError(
                        name,
                        "\(path) does not exist. Fix: create it, or name an existing folder inside \(root)"))
            }
            guard let realRoot = Self.resolved(base) else {
                return .failure(DAGParamError(name, "\(root), its allowed folder, does not exist here. Fix: create it"))
            }
            guard resolved.hasPrefix(realRoot + "/") else {
                let why = resolved == realRoot ? "is \(root) itself" : "leads outside \(root) (to \(resolved))"
                return .failure(
                    DAGParamError(name, "\(path) \(why). Fix: name a folder inside \(root)"))
            }
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDir), isDir.boolValue else {
                return .failure(
                    DAGParamError(name, "\(path) is not a folder. Fix: name a folder inside \(root)"))
            }
            return .success(resolved)
        }
    }

    /// `path` made absolute against the working directory, without trailing slashes.
    static func absolute(_ path: String) -> String {
        var p = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }

    /// `path` with every symbolic link followed, nil when it does not exist.
    public static func resolved(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}

/// A parameter value refused, with the parameter, the reason and the fix.
public struct DAGParamError: Error, CustomStringConvertible, Sendable, Equatable {
    public let param: String
    public let problem: String
    public var description: String { "parameter \(param): \(problem)" }

    public init(_ param: String, _ problem: String) {
        self.param = param
        self.problem = problem
    }
}

extension DAG {
    /// The run parameters for a run of `type` given `given` (name to value): each checked against
    /// its declaration, in canonical form, with the defaults filled in. Refused, with the fix: a
    /// name the DAG does not declare, a value out of its type, a manual-only parameter set on a
    /// scheduled or backfilled run.
    public func resolveParams(_ given: [String: String], type: RunType) throws -> [String: String] {
        for name in given.keys.sorted() where !params.contains(where: { $0.name == name }) {
            let known = params.map(\.name)
            throw DAGParamError(
                name,
                "DAG \(id) has no parameter \(name). Fix: "
                    + (known.isEmpty
                        ? "give none: it declares no parameters"
                        : "use one of \(known.joined(separator: ", ")) (etlctl dags params \(id))"))
        }
        var out: [String: String] = [:]
        for p in params {
            guard let value = given[p.name] else {
                out[p.name] = p.defaultValue
                continue
            }
            let v = try p.canonical(value).get()
            if p.effect == .manualOnly && type != .manual && v != p.defaultValue {
                throw DAGParamError(
                    p.name,
                    "is for manual runs only, and this is a \(type) run: it would make a date's output depend "
                        + "on how it was run. Fix: trigger a manual run (etlctl dags trigger \(id) --param "
                        + "\(p.name)=\(value)), or leave it out")
            }
            if case .folder = p.kind { _ = try p.folder(v).get() }
            out[p.name] = v
        }
        return out
    }

    /// `NAME=VALUE` strings (etlctl's `--param`) as a map; a malformed or repeated one is refused.
    public static func parseParams(_ items: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        for item in items {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw DAGParamError(item, "\"\(item)\" is not NAME=VALUE. Fix: write it as --param top=20")
            }
            let name = String(item[..<eq])
            guard out[name] == nil else {
                throw DAGParamError(name, "is given twice. Fix: give each parameter once")
            }
            out[name] = String(item[item.index(after: eq)...])
        }
        return out
    }

    /// What sets a run with `params` apart from the date's default run: its output parameters that
    /// differ from their defaults (`top=3`), "" for none. A date has one run per variant: a run of
    /// another output is another report, and never takes the place of the date's default run.
    public func variant(of params: [String: String]) -> String {
        self.params.filter { $0.effect == .definesOutput }.compactMap { p in
            guard let v = params[p.name], v != p.defaultValue else { return nil }
            return "\(p.name)=\(v)"
        }.joined(separator: ",")
    }
}

import Foundation

/// The configuration variables in force: the process environment first, then `local.env`.
///
/// ```swift
/// let env = try Environment.load()              // reads ./local.env when present
/// let pg = try PostgresConfig(environment: env)
/// ```
public struct Environment: Sendable {
    /// The merged variables (process environment wins over the file).
    public let values: [String: String]
    /// The dotenv file that was read, if any.
    public let fileRead: String?

    public init(_ values: [String: String], fileRead: String? = nil) {
        self.values = values
        self.fileRead = fileRead
    }

    /// Loads the process environment over the dotenv file named by `ETL_ENV_FILE` (default
    /// `local.env` in the current directory). A missing default file is fine; a missing file that
    /// `ETL_ENV_FILE` names explicitly is an error.
    public static func load(
        processEnvironment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> Environment {
        let explicit = processEnvironment["ETL_ENV_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        let path = explicit ?? "local.env"
        var merged: [String: String] = [:]
        var fileRead: String?
        if FileManager.default.fileExists(atPath: path) {
            // Read through a file handle: FileManager.contents(atPath:) answers nil for a device
            // such as /dev/null, which scripts name to read no file at all.
            guard let handle = FileHandle(forReadingAtPath: path),
                let text = String(data: handle.readDataToEndOfFile(), encoding: .utf8)
            else {
                throw ConfigError(
                    variable: "ETL_ENV_FILE", problem: "\(path) cannot be read as UTF-8 text",
                    fix: "check the file's permissions and encoding")
            }
            merged = try DotEnv.parse(text, file: path)
            fileRead = path
        } else if explicit != nil {
            throw ConfigError(
                variable: "ETL_ENV_FILE", problem: "the file \(path) does not exist",
                fix: "point ETL_ENV_FILE at an existing dotenv file, or unset it to use ./local.env")
        }
        merged.merge(processEnvironment) { _, fromProcess in fromProcess }
        return Environment(merged, fileRead: fileRead)
    }

    /// The value of `name`, treating an empty value as unset.
    public subscript(_ name: String) -> String? {
        guard let v = values[name], !v.isEmpty else { return nil }
        return v
    }

    /// An integer variable within `range`, or `defaultValue` when unset.
    public func integer(_ name: String, default defaultValue: Int, range: ClosedRange<Int>) throws -> Int {
        guard let raw = self[name] else { return defaultValue }
        guard let v = Int(raw.trimmingCharacters(in: .whitespaces)), range.contains(v) else {
            throw ConfigError(
                variable: name,
                problem: "'\(raw)' is not a whole number from \(range.lowerBound) to \(range.upperBound)",
                fix: "set \(name) to a number in that range, or unset it for the default \(defaultValue)")
        }
        return v
    }

    /// A duration in seconds (decimals allowed) within `range`, or `defaultValue` when unset.
    public func seconds(_ name: String, default defaultValue: Double, range: ClosedRange<Double>) throws -> Double {
        guard let raw = self[name] else { return defaultValue }
        guard let v = Double(raw.trimmingCharacters(in: .whitespaces)), range.contains(v) else {
            throw ConfigError(
                variable: name,
                problem: "'\(raw)' is not a number of seconds from \(range.lowerBound) to \(range.upperBound)",
                fix: "set \(name) to seconds in that range (e.g. 2.5), or unset it for the default \(defaultValue)")
        }
        return v
    }
}

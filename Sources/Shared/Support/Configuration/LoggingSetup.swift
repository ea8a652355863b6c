import Logging

/// Sets up swift-log once per process, at the level named by `ETL_LOG_LEVEL`
/// (trace, debug, info, notice, warning, error, critical; default info), on standard error.
public enum LoggingSetup {
    public static func level(from env: Environment) throws -> Logger.Level {
        guard let raw = env["ETL_LOG_LEVEL"] else { return .info }
        guard let level = Logger.Level(rawValue: raw.lowercased()) else {
            let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigError(
                variable: "ETL_LOG_LEVEL", problem: "'\(raw)' is not a log level", fix: "use one of \(names)")
        }
        return level
    }

    /// Bootstraps the logging system; call once, first thing in `main`.
    public static func bootstrap(_ env: Environment) throws {
        let level = try level(from: env)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

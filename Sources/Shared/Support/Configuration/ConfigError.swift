/// A configuration problem, told so that a person can fix it: which variable, what is wrong, what to do.
///
/// The value itself is never repeated when it may hold a secret (URLs are shown with their
/// password replaced by `***`).
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    /// The variable (or file and line) at fault, such as `REDIS_URL` or `local.env:12`.
    public let variable: String
    /// What is wrong with it.
    public let problem: String
    /// What to do about it.
    public let fix: String

    public init(variable: String, problem: String, fix: String) {
        self.variable = variable
        self.problem = problem
        self.fix = fix
    }

    public var description: String { "\(variable): \(problem). Fix: \(fix)" }
}

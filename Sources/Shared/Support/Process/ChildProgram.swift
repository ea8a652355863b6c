import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a program to its end with `input` on its standard input, its standard error captured,
/// within a time limit: what sends an alert by e-mail through a sendmail-compatible program.
/// posix_spawn and waitpid directly (Foundation's Process can miss the end of a child that exits
/// at once, on this toolchain).
///
/// ```swift
/// let r = try ChildProgram.run(["/usr/bin/msmtp", "-t"], input: Data(message.utf8), timeout: 10)
/// guard r.status == 0 else { throw ... r.stderr ... }
/// ```
public enum ChildProgram {
    public struct Result: Sendable {
        /// The exit status, or 128 + the signal that ended it.
        public let status: Int32
        public let stderr: String
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The absolute path of `program` (as given when it has a slash, else found on `PATH`), or nil.
    public static func resolve(
        _ program: String, path: String? = ProcessInfo.processInfo.environment["PATH"]
    ) -> String? {
        if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
        for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs `argv` (its first element an absolute path); after `timeout` seconds it is killed
    /// (SIGKILL) and `Failure` thrown.
    public static func run(_ argv: [String], input: Data, timeout: Double) throws -> Result {
        guard let path = argv.first else { throw Failure(description: "no program given") }
        var inPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        guard pipe(&inPipe) == 0 else { throw Failure(description: "pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&errPipe) == 0 else {
            close(inPipe[0])
            close(inPipe[1])
            throw Failure(description: "pipe: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        for fd in inPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }
        var pid: pid_t = 0
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { for a in cArgs { free(a) } }
        // Its own small environment, never the caller's (which holds the database password, the
        // signing key, webhook URLs): what a mail program needs to find its configuration.
        let keep = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"]
        let env = ProcessInfo.processInfo.environment
        let cEnv = keep.compactMap { k in env[k].map { strdup("\(k)=\($0)") } } + [nil]
        defer { for e in cEnv { free(e) } }
        let spawned = posix_spawn(&pid, path, &actions, nil, cArgs, cEnv)
        close(inPipe[0])
        close(errPipe[1])
        guard spawned == 0 else {
            close(inPipe[1])
            close(errPipe[0])
            throw Failure(description: "cannot start \(path): \(String(cString: strerror(spawned)))")
        }
        // Written as the program reads it, within the deadline (a program that stops reading, or
        // exits early, cannot hold this thread: EPIPE and EAGAIN are not waited on).
        signal(SIGPIPE, SIG_IGN)
        _ = fcntl(inPipe[1], F_SETFL, fcntl(inPipe[1], F_GETFL) | O_NONBLOCK)
        let bytes = [UInt8](input)
        var written = 0
        var inputOpen = true
        func feed() {
            guard inputOpen else { return }
            while written < bytes.count {
                let n = bytes.withUnsafeBytes { write(inPipe[1], $0.baseAddress! + written, bytes.count - written) }
                if n > 0 {
                    written += n
                } else {
                    if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
                    break  // EPIPE: it stopped reading; its status says why
                }
            }
            close(inPipe[1])
            inputOpen = false
        }
        defer { if inputOpen { close(inPipe[1]) } }
        _ = fcntl(errPipe[0], F_SETFL, fcntl(errPipe[0], F_GETFL) | O_NONBLOCK)
        var errBytes: [UInt8] = []
        func drain() {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(errPipe[0], &buf, buf.count)
                if n <= 0 { break }
                if errBytes.count < 64 * 1024 { errBytes += buf[0..<n] }
            }
        }
        defer { close(errPipe[0]) }
        let end = monotonicSeconds() + timeout
        var raw: Int32 = 0
        while true {
            feed()
            drain()
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { throw Failure(description: "waitpid: \(String(cString: strerror(errno)))") }
            if monotonicSeconds() > end {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &raw, 0)
                throw Failure(description: "\(path) did not finish within \(timeout) s; it was killed")
            }
            usleep(5_000)
        }
        drain()
        let status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        return Result(status: status, stderr: String(decoding: errBytes, as: UTF8.self))
    }
}

import ArgumentParser
import ETLSupport
import Foundation
import Metadata

/// `etlctl users`: the web UI's users and roles. etlctl reaches the database directly: whoever runs
/// it with the configured credentials is an administrator; each change is in the audit trail with
/// the OS user and host.
struct Users: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add, list, remove web users and set their roles (viewer, operator, admin).",
        discussion: """
            Passwords are read from standard input (one line), never from the command line; on a terminal
            they are asked for without echo. Stored as bcrypt hashes.
            Examples:
              etlctl users add alice --role operator          # asks for the password
              printf '%s\\n' "$PW" | etlctl users add ci --role viewer
              etlctl users set-role alice admin
            """,
        subcommands: [Add.self, List.self, Remove.self, SetRole.self, SetPassword.self])

    static func role(_ text: String) throws -> MetadataStore.Role {
        guard let r = MetadataStore.Role(rawValue: text) else {
            throw ValidationError("'\(text)' is not a role. Use viewer, operator or admin")
        }
        return r
    }

    /// One line from standard input, without echo on a terminal.
    static func readPassword() throws -> String {
        if isatty(0) != 0 {
            guard let p = getpass("password: ") else { throw fail("no password given") }
            let first = String(cString: p)
            guard let q = getpass("again: "), String(cString: q) == first else {
                throw fail("the two passwords differ. Fix: type the same one twice")
            }
            return first
        }
        guard let line = readLine(strippingNewline: true) else {
            throw fail("no password on standard input. Fix: printf '%s\\n' \"$PASSWORD\" | etlctl users ...")
        }
        return line
    }

    /// Runs a change to user `name` as an audited action; "there is no user" when it found none.
    static func change(
        _ action: String, _ name: String, detail: String = "", _ body: (MetadataStore) throws -> Bool
    )
        throws
    {
        let ctx = try Context()
        let store = try ctx.store()
        let done = try failing { try ctx.operations().audited(action, name, detail: detail) { try body(store) } }
        guard done else { throw fail("there is no user '\(name)'. Fix: etlctl users list") }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user (the password from standard input).")
        @Argument(help: "The user name.") var name: String
        @Option(help: "viewer, operator or admin (default viewer).") var role = "viewer"
        func run() throws {
            let role = try Users.role(role)
            let ctx = try Context()
            let store = try ctx.store()
            let password = try Users.readPassword()
            let added = try failing {
                try ctx.operations().audited("user-add", name, detail: "role \(role.rawValue)") {
                    try store.addUser(name, password: password, role: role)
                }
            }
            guard added else { throw fail("there is a user '\(name)' already. Fix: another name, or set-role") }
            print("added \(name) (\(role.rawValue))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The users and their roles.")
        @Flag(help: "One JSON array instead of a table.") var json = false
        func run() throws {
            let ctx = try Context()
            let users = try failing { try ctx.store().users() }
            if json { return Output.encoded(users) }
            Output.table(
                ["USER", "ROLE", "CREATED", "CHANGED"],
                users.map { [$0.name, $0.role.rawValue, Output.time($0.createdAt), Output.time($0.updatedAt)] })
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user (not the last admin).")
        @Argument(help: "The user name.") var name: String
        func run() throws {
            try Users.change("user-remove", name) { try $0.removeUser(name) }
            print("removed \(name)")
        }
    }

    struct SetRole: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-role", abstract: "Set a user's role (the last admin stays one).")
        @Argument(help: "The user name.") var name: String
        @Argument(help: "viewer, operator or admin.") var role: String
        func run() throws {
            let role = try Users.role(role)
            try Users.change("user-set-role", name, detail: role.rawValue) { try $0.setRole(name, role) }
            print("\(name) is now \(role.rawValue)")
        }
    }

    struct SetPassword: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-password", abstract: "Set a user's password (from standard input).")
        @Argument(help: "The user name.") var name: String
        func run() throws {
            let password = try Users.readPassword()
            try Users.change("user-set-password", name) { try $0.setPassword(name, password) }
            print("set the password of \(name)")
        }
    }
}

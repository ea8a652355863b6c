import Foundation
import Testing
import Workflow

@Suite("Run parameters", .timeLimit(.minutes(10)))
struct DAGParamTests {
    /// A DAG with an output parameter and a manual-only folder under a fresh folder of its own.
    static func dag(root: String) throws -> DAG {
        try DAG(
            "p", schedule: .manual, startDate: Date(timeIntervalSince1970: 0),
            params: [
                DAGParam("top", .integer(1...100), default: "5", effect: .definesOutput, help: "rows"),
                DAGParam("source", .folder(root: root), default: "", effect: .manualOnly, help: "folder"),
            ],
            tasks: [TaskSpec("t", operation: "noop")])
    }

    static func root() throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("dagparam-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: "\(root)/archive", withIntermediateDirectories: true)
        return root
    }

    static func refusal(_ body: () throws -> Any) -> String {
        do {
            _ = try body()
            return "(accepted)"
        } catch { return "\(error)" }
    }

    @Test("defaults fill in what is not given; values come back in canonical form; every run type takes them")
    func defaults() throws {
        let root = try Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let d = try Self.dag(root: root)
        for type in RunType.allCases {
            #expect(try d.resolveParams([:], type: type) == ["top": "5", "source": ""])
            #expect(try d.resolveParams(["top": "007"], type: type) == ["top": "7", "source": ""])
        }
        #expect(try d.resolveParams(["source": "archive/"], type: .manual) == ["top": "5", "source": "archive"])
        #expect(try DAG.parseParams(["top=20", "source=a=b"]) == ["top": "20", "source": "a=b"])
    }

    @Test(
        """
        refused with the parameter, the reason and the fix: unknown, out of range, not a number, manual-only on a \
        scheduled or backfilled run, a folder outside its root or missing, malformed NAME=VALUE
        """)
    func refusals() throws {
        let root = try Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let d = try Self.dag(root: root)
        let unknown = Self.refusal { try d.resolveParams(["tpo": "3"], type: .manual) }
        #expect(unknown.contains("no parameter tpo") && unknown.contains("Fix: use one of top, source"), "\(unknown)")
        for bad in ["0", "101", "five", ""] {
            let e = Self.refusal { try d.resolveParams(["top": bad], type: .manual) }
            #expect(e.contains("parameter top") && e.contains("1...100") && e.contains("Fix:"), "\(bad): \(e)")
        }
        for type in [RunType.scheduled, .backfill] {
            let e = Self.refusal { try d.resolveParams(["source": "archive"], type: type) }
            #expect(e.contains("for manual runs only") && e.contains("\(type) run") && e.contains("Fix:"), "\(e)")
        }
        try FileManager.default.createDirectory(atPath: "\(root)-other", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: "\(root)-other") }
        for outside in [
            "..", "archive/../..", "/etc", "\(root)-other", "\(root)/../\(root.split(separator: "/").last!)-other",
        ] {
            let e = Self.refusal { try d.resolveParams(["source": outside], type: .manual) }
            #expect(e.contains("outside") && e.contains("Fix:"), "\(outside): \(e)")
        }
        // The root itself is not a folder inside it; an absolute path inside it is.
        for itself in [".", root, "\(root)/"] {
            let e = Self.refusal { try d.resolveParams(["source": itself], type: .manual) }
            #expect(e.contains("itself") && e.contains("Fix:"), "\(itself): \(e)")
        }
        #expect(try d.resolveParams(["source": "\(root)/archive"], type: .manual)["source"] == "\(root)/archive")
        let nul = Self.refusal { try d.resolveParams(["source": "archive\u{0}x"], type: .manual) }
        #expect(nul.contains("control character"), "\(nul)")
        let missing = Self.refusal { try d.resolveParams(["source": "nope"], type: .manual) }
        #expect(missing.contains("does not exist") && missing.contains("Fix:"), "\(missing)")
        // A link inside the root that leads out of it.
        try FileManager.default.createSymbolicLink(atPath: "\(root)/escape", withDestinationPath: "/tmp")
        let escape = Self.refusal { try d.resolveParams(["source": "escape"], type: .manual) }
        #expect(escape.contains("leads outside") && escape.contains("Fix:"), "\(escape)")
        FileManager.default.createFile(atPath: "\(root)/file", contents: Data())
        let file = Self.refusal { try d.resolveParams(["source": "file"], type: .manual) }
        #expect(file.contains("is not a folder"), "\(file)")
        for item in ["top", "=3"] {
            let e = Self.refusal { try DAG.parseParams([item]) }
            #expect(e.contains("is not NAME=VALUE") && e.contains("Fix:"), "\(item): \(e)")
        }
        #expect(Self.refusal { try DAG.parseParams(["top=1", "top=2"]) }.contains("given twice"))
        let none = try DAG(
            "q", schedule: .manual, startDate: Date(timeIntervalSince1970: 0), tasks: [TaskSpec("t", operation: "noop")]
        )
        #expect(Self.refusal { try none.resolveParams(["top": "1"], type: .manual) }.contains("declares no parameters"))
    }

    @Test("a DAG's declaration is checked: a parameter declared twice, a bad name, a default out of its type")
    func declarations() {
        func make(_ params: [DAGParam]) -> String {
            Self.refusal {
                try DAG(
                    "d", schedule: .manual, startDate: Date(timeIntervalSince1970: 0), params: params,
                    tasks: [TaskSpec("t", operation: "noop")])
            }
        }
        let top = DAGParam("top", .integer(1...10), default: "5", effect: .definesOutput, help: "")
        #expect(make([top, top]).contains("declared twice"))
        #expect(
            make([DAGParam("a b", .integer(1...10), default: "5", effect: .definesOutput, help: "")]).contains("name"))
        #expect(
            make([DAGParam("top", .integer(1...10), default: "50", effect: .definesOutput, help: "")]).contains(
                "the default of parameter top"))
    }
}

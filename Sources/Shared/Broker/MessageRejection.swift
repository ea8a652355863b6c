import Crypto
import ETLSupport
import Foundation
import RedisClient
import Workflow

/// Why a worker refused a message. It goes to the dead letters with this reason.
public enum MessageRejection: Error, Sendable, Equatable, CustomStringConvertible {
    case unsigned
    case badSignature
    case oversized(bytes: Int)
    case malformed(String)
    case unsupportedVersion(Int)
    case unknownTask(dag: String, task: String)
    /// Taken over by this many runners, each of which died, froze or was cut off before it ended.
    case tooManyDeliveries(Int)

    public var description: String {
        switch self {
        case .unsigned:
            return
                "unsigned message: it carries no signature."
                + " Fix: enqueue tasks through the scheduler or etlctl, which sign them"
        case .badSignature:
            return
                "bad signature: the message was altered or signed with another key."
                + " Fix: give the scheduler and every worker the same ETL_SECRET_KEY"
        case .oversized(let n): return "oversized message: \(n) bytes, the limit is \(MessageCodec.maxBodyBytes)"
        case .malformed(let why): return "malformed message: \(why)"
        case .unsupportedVersion(let v):
            return
                "unsupported message version \(v): this worker reads version \(TaskMessage.currentVersion)."
                + " Fix: run the same release on the scheduler and the workers"
        case .unknownTask(let dag, let task):
            return
                "unknown task \(dag).\(task): no such DAG or task in this worker's build."
                + " Fix: deploy the same DAGs to the scheduler and the workers"
        case .tooManyDeliveries(let n):
            return
                "delivered \(n) times: each worker that took it died, froze or was cut off before it ended"
                + " (a task that crashes its worker?). Its try fails. Fix: see the workers' logs; raise"
                + " ETL_MAX_DELIVERIES if the workers were lost for another reason; retry the task"
        }
    }
}

import ETLSupport
import ServiceLifecycle

extension WorkerService: Service {
    /// The worker as a service: its blocking loops on threads of their own, stopped by the group's
    /// graceful shutdown. `outcome` says whether it stopped cleanly or handed tasks back.
    public func run() async throws {
        let outcome = try await runOnThread(stop: stop, name: "worker") { [self] in try runBlocking() }
        setOutcome(outcome)
    }
}

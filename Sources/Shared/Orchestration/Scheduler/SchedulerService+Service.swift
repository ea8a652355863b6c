import ETLSupport
import ServiceLifecycle

extension SchedulerService: Service {
    /// The scheduler as a service: its blocking loop on a thread of its own, stopped by the
    /// group's graceful shutdown (it then gives up the lease).
    public func run() async throws {
        try await runOnThread(stop: stop, name: "scheduler") { [self] in try runBlocking() }
    }
}

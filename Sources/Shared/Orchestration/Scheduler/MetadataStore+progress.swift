import Metadata

extension MetadataStore.Instance {
    /// The instance as the scheduler's decisions see it.
    var progress: RunAdvance.Task {
        RunAdvance.Task(state: state, tryNumber: tryNumber, startedAt: startedAt, nextTryAt: nextTryAt)
    }
}

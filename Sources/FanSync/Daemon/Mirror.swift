import CLinux
import Glibc
import Synchronization

/// One mirror at work: a watcher feeding a change queue, and workers moving what is queued
/// to the target with rsync. Everything shared lives in one `Monitor`.
public final class Mirror: @unchecked Sendable {
    let log: Logger
    private(set) var watcher: WatchBackend?
    private var subscription: WatcherRegistry.Subscription?
    private let registry: WatcherRegistry
    private var workers: [WorkerThread] = []
    /// What the backup holds (nil with `--no-index`). Opened by `start` after the watcher and
    /// the workers (checking a large index takes a moment: live changes are sent meanwhile,
    /// without it).
    var index: MirrorIndex? { indexBox.withLock { $0 } }
    private let indexBox = Mutex<MirrorIndex?>(nil)
    private let stateRoot: [UInt8]?
    private let allowMassDelete: Bool
    /// The start from the index, and the hashing of what the first full sync recorded.
    private var scanThread: WorkerThread?
    private var fillThread: WorkerThread?
    let state: Monitor<State>
    /// Called once when the mirror cannot go on (a changed host key): the daemon stops.
    var onFatal: (@Sendable (String) -> Void)?
    /// Called after every transfer (the status file is rewritten soon after); `urgent` the
    /// first time the mirror is caught up after its start (rewritten at once: what
    /// `fansync status` and scripts waiting for the start look at).
    var onStateChange: (@Sendable (_ urgent: Bool) -> Void)?

    /// What a reload may replace. Swapped only while no transfer runs.
    struct Parts {
        var config: MirrorConfig
        var transport: Transport
        var rules: RulesEngine
    }
    private let parts: Mutex<Parts>
    /// Device and inode of the source root at start: a root that vanished, was replaced or
    /// was unmounted is not a reason to delete the backup.
    private let sourceIdentity = Mutex<(dev: UInt64, ino: UInt64)>((0, 0))
    /// Set when a stop's grace period is over: batches the daemon copies itself stop.
    private let abandonCopies = Atomic<Bool>(false)

    public var config: MirrorConfig { parts.withLock { $0.config } }
    var transport: Transport { parts.withLock { $0.transport } }
    var rules: RulesEngine { parts.withLock { $0.rules } }

    struct State {
        var queue: ChangeQueue
        var ready: [ChangeQueue.Ticket] = []
        var idle = 0
        var stopping = false
        /// While a reload swaps the transport, no job starts.
        var paused = false
        var desiredWorkers = 1
        var liveWorkers = 0
        var running: [Int: pid_t] = [:]
        var stats = MirrorStatus.Counters()
        var consecutiveFailures = 0
        var reachable: Bool? = nil
        var lastError: String? = nil
        var lastErrorTime: Double? = nil
        var fatal: String? = nil
        var initialSyncDone = false
        /// The status was told when the mirror first caught up after its start.
        var caughtUpAnnounced = false
        var sourceProblem: String? = nil
        /// Set when the index has paths without a content hash to fill.
        var fillRequested = false
        /// When the copier's records are written to the index if the queue stays idle
        /// until then (see `workerLoop`).
        var indexWriteDue: Double? = nil
        /// When each running job started (by ticket id).
        var jobStarted: [Int: Double] = [:]
    }

    /// - Parameters:
    ///   - stateRoot: where mirrors keep their state directories (`settings.stateDir`);
    ///     nil: /var/lib/fansync. A mirror's own `stateDir` wins.
    ///   - allowMassDelete: `--allow-mass-delete`: no delete waits for confirmation.
    public init(config: MirrorConfig, log: Logger, registry: WatcherRegistry? = nil,
                stateRoot: [UInt8]? = nil, allowMassDelete: Bool = false) throws {
        self.log = log
        self.registry = registry ?? WatcherRegistry(log: log)
        self.stateRoot = stateRoot
        self.allowMassDelete = allowMassDelete
        parts = Mutex(Parts(config: config, transport: try Transport(config: config), rules: Self.makeRules(config, log: log)))
        state = Monitor(State(queue: ChangeQueue(policy: Self.policy(config))))
    }

    /// The rules engine: rules files, global excludes and lsyncd's filter rules, with
    /// malformed rules lines logged (file and line), never fatal.
    static func makeRules(_ config: MirrorConfig, log: Logger) -> RulesEngine {
        let rules = RulesEngine(sourceRoot: config.source, rulesFileNames: config.rulesFileNames, globalPatterns: config.globalPatterns)
        let name = config.name
        rules.warningHandler = { warning in log.warning("\(name): rules: \(warning)") }
        return rules
    }

    static func policy(_ config: MirrorConfig) -> ChangeQueue.Policy {
        var policy = ChangeQueue.Policy()
        policy.delay = config.delay
        policy.maxDelays = config.maxDelays
        policy.openFileInterval = config.openFileInterval
        policy.renamesOnBackup = config.delete.whileRunning
        // Holding a burst back saves rsync runs; batches the daemon copies itself cost
        // little each, and start at once (on the core the writer leaves free).
        if LocalCopier.copiesBatches(of: config) { policy.burstHold = 0 }
        return policy
    }

    // MARK: Life cycle

    /// Starts watching, then queues the initial sync, then starts the workers: nothing that
    /// changes after `start` returns can be missed.
    public func start() throws {
        var st = stat()
        guard withCPath(config.source, { stat($0, &st) }) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw MirrorError("source \(SyncPath.displayString(config.source)) is not a directory")
        }
        sourceIdentity.withLock { $0 = (UInt64(st.st_dev), UInt64(st.st_ino)) }
        let sub = try subscribe(registry)
        subscription = sub
        watcher = sub.backend
        state.update { $0.desiredWorkers = max(1, config.maxProcesses) }
        spawnWorkers()
        // A start from the index walks the whole tree: begun now, it reads ahead while the
        // index is opened and checked (dropped if the index cannot be used).
        var startWalk = config.useIndex && config.initialSync && MirrorIndex.exists(config: config, stateRoot: stateRoot)
            ? MirrorIndex.StartWalk(source: config.source, name: config.name, rules: rules, log: log) : nil
        if config.useIndex {
            do {
                let opened = try MirrorIndex(config: config, stateRoot: stateRoot, allowMassDelete: allowMassDelete, log: log)
                indexBox.withLock { $0 = opened }
            } catch {
                stop(grace: 0)
                throw error
            }
        }
        let now = monotonicNow()
        if let index, config.initialSync, case .fromIndex(let entries) = index.startMode {
            log.info("\(config.name): starting from the index (\(entries) paths in \(SyncPath.displayString(index.directory))): only what differs is sent")
            let walk = startWalk
            scanThread = WorkerThread(name: "fansync-scan") { [self] in startFromIndex(walk) }
        } else if config.initialSync {
            if let index, case .fullSync(let why) = index.startMode {
                log.info("\(config.name): \(why): the first sync is a full one, and fills the index (\(SyncPath.displayString(index.directory)))")
            }
            state.update { $0.queue.addTree(.root, initial: true, now: now) }
        } else {
            state.update { $0.initialSyncDone = true }
        }
        startWalk = nil
        if index != nil { fillThread = WorkerThread(name: "fansync-fill") { [self] in fillLoop() } }
    }

    private var isStopping: Bool { state.withLock { $0.stopping } }

    /// The transfer workers' CPU priority (nice).
    static let workerNice: Int32 = 10

    /// A start with an index: the tree is walked and compared with it while live events
    /// flow; what differs is queued as changes, deletes subject to the delete safety rules.
    private func startFromIndex(_ walk: MirrorIndex.StartWalk?) {
        guard let index else { return }
        let began = monotonicNow()
        let result = index.scan(rules: rules, deletes: config.delete.onStartup, started: walk, stop: { [self] in isStopping }) { [self] events in
            guard !events.isEmpty else { return }
            state.update { $0.queue.add(events, now: monotonicNow(), live: false) }
        }
        if isStopping { return }
        let fullSync = { [state] in state.update { $0.queue.addTree(.root, initial: true, now: monotonicNow()) } }
        if let failure = result.failure {
            log.error("\(config.name): the start from the index broke off (\(failure)): full sync instead")
            return fullSync()
        }
        // Trust the index only if the backup still looks like what it describes.
        if let probe = transport.probeBackup(result.samples.map(\.path)),
           let why = index.backupMismatch(root: probe.root, sizes: probe.sizes, samples: result.samples) {
            log.warning("\(config.name): \(why): forgetting the index; full sync")
            index.forgetEverything(why)
            return fullSync()
        }
        if result.tooMany {
            log.info("\(config.name): more than \(result.changes) paths differ from the index: full sync instead")
            return fullSync()
        }
        state.update {
            $0.initialSyncDone = true
            $0.fillRequested = true
        }
        stateChanged()
        log.info("\(config.name): start from the index: walked \(result.walked) paths in \(format3(monotonicNow() - began)) s; \(result.changes) changed, \(result.deletes) deleted\(result.held ? " (deletes held)" : "")")
    }

    /// Hashes, in the background and at idle priority, the files the index holds without a
    /// hash (after a full sync), so that later moves and copies of them are recognised.
    private func fillLoop() {
        // The lowest CPU priority for this thread alone: it must never slow the mirror.
        _ = clinux_set_thread_nice(19)
        _ = clinux_set_idle_io_priority()
        while true {
            let go: Bool = state.wait { s in
                if s.stopping { return (false, nil) }
                if s.fillRequested { s.fillRequested = false; return (true, nil) }
                return (nil, nil)
            }
            guard go, let index, waitForQuietQueue() else { return }
            let began = monotonicNow()
            let n = index.fillHashes(stop: { [self] in !waitForQuietQueue() })
            if n > 0 { log.info("\(config.name): index: hashed \(n) file(s) recorded by the full sync in \(format3(monotonicNow() - began)) s") }
        }
    }

    /// Blocks until no change waits or is being sent and none of the copier's records waits
    /// to be written; false once stopping. The fill hashes between bursts, never during
    /// one: it would take CPU from the copies and, using the index, write the copier's
    /// waiting records in the middle of the burst (after which each new path is looked up
    /// in the index). Those records are written once the queue has stayed idle a moment
    /// (`workerLoop`); after a full sync, with none waiting, the fill starts at once.
    private func waitForQuietQueue() -> Bool {
        var notBefore = 0.0
        while true {
            let idle: Bool = state.wait { s in
                if s.stopping { return (false, nil) }
                let now = monotonicNow()
                if now < notBefore { return (nil, notBefore) }
                if s.queue.isIdle { return (true, nil) }
                return (nil, now + Self.indexWritePause)
            }
            if !idle { return false }
            if (index?.copiedWaiting ?? 0) == 0 { return true }
            notBefore = monotonicNow() + Self.indexWritePause
        }
    }

    /// Starts workers until as many run as the config asks for.
    private func spawnWorkers() {
        let missing = state.update { s -> Int in
            let n = max(0, s.desiredWorkers - s.liveWorkers)
            s.liveWorkers += n
            return n
        }
        for _ in 0..<missing {
            workers.append(WorkerThread(name: "fansync-worker") { [self] in workerLoop() })
        }
    }

    /// Applies a changed config without stopping the watcher or losing queued changes:
    /// waits for running transfers, swaps transport, rules and queue policy, and queues a
    /// resync when the excludes or the target changed. Returns false when the change needs a
    /// new mirror (another source or backend).
    public func reconfigure(_ new: MirrorConfig) throws -> Bool {
        let old = config
        guard new.source == old.source, new.backend == old.backend else { return false }
        if new == old { return true }
        let newTransport = try Transport(config: new)
        state.update { $0.paused = true }
        let _: Bool = state.wait { s -> (result: Bool?, deadline: Double?) in
            s.queue.inFlightCount == 0 ? (true, nil) : (nil, monotonicNow() + 0.5)
        }
        let rulesChanged = new.excludes != old.excludes || new.filters != old.filters || new.rulesFile != old.rulesFile
            || new.useGitignore != old.useGitignore
        let targetChanged = new.target != old.target
        if targetChanged { index?.forgetEverything("the target changed") }
        index?.policy.maxDeleteShare = new.maxDeleteShare
        let oldTransport = parts.withLock { p -> Transport in
            let t = p.transport
            p = Parts(config: new, transport: newTransport, rules: rulesChanged ? Self.makeRules(new, log: log) : p.rules)
            return t
        }
        oldTransport.close()
        let now = monotonicNow()
        state.update { s in
            s.queue.policy = Self.policy(new)
            s.desiredWorkers = max(1, new.maxProcesses)
            if targetChanged {
                s.initialSyncDone = false
                s.caughtUpAnnounced = false
                s.queue.addTree(.root, initial: true, now: now)
            } else if rulesChanged {
                s.queue.addTree(.root, initial: false, now: now)
            }
            s.paused = false
        }
        if rulesChanged, let ino = watcher as? InotifyWatcher { ino.rewatch(.root) }
        spawnWorkers()
        log.info("\(new.name): configuration reloaded\(targetChanged ? "; new target \(new.target), full sync queued" : rulesChanged ? "; excludes changed, resync queued" : "")")
        return true
    }

    struct MirrorError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    private func subscribe(_ registry: WatcherRegistry) throws -> WatcherRegistry.Subscription {
        let config = self.config
        // The filter asks the current rules (a reload may replace them).
        let filter: WatchFilter = { [weak self] path, isDirectory in
            guard let self else { return false }
            return !self.rules.isExcluded(path, isDirectory: isDirectory)
        }
        let deliver: @Sendable ([WatchEvent]) -> Void = { [weak self] events in self?.receive(events) }
        let sub = try registry.subscribe(source: config.source, backend: config.backend, name: config.name, filter: filter, deliver: deliver)
        log.info("\(config.name): watching \(SyncPath.displayString(config.source)) with \(sub.backend.name) (\(sub.reason); \(sub.backend.watchedDescription.joined(separator: "; ")))")
        return sub
    }

    /// Stops watching and sending. In-flight transfers get `grace` seconds to finish, then are
    /// stopped (rsync removes its temporary file: the backup never shows a partial file).
    public func stop(grace: Double = 10) {
        if let subscription { registry.unsubscribe(subscription) }
        subscription = nil
        let deadline = monotonicNow() + grace
        state.update { $0.stopping = true }
        let drained: Bool = state.wait { s in
            if s.running.isEmpty { return (true, nil) }
            if monotonicNow() >= deadline { return (false, nil) }
            return (nil, deadline)
        }
        if !drained {
            let pids = state.withLock { Array($0.running.values) }
            log.warning("\(config.name): stopping \(pids.count) transfer(s) still running")
            abandonCopies.store(true, ordering: .relaxed)
            // 0: a batch the daemon copies itself (it stops at its next file or chunk).
            for pid in pids where pid > 0 { kill(-pid, SIGTERM) }
        }
        for w in workers { w.join() }
        workers = []
        scanThread?.join()
        fillThread?.join()
        scanThread = nil
        fillThread = nil
        transport.close()
        index?.close()
    }

    // MARK: Events

    func receive(_ events: [WatchEvent]) {
        var accepted: [WatchEvent] = []
        accepted.reserveCapacity(events.count)
        let shared = registry.isShared(config.source)
        for event in events {
            switch event {
            case .changed(let p, let isDirectory, let created, _):
                if isDirectory && created { rules.rulesChanged(in: p) }
                // A shared watcher passes what any of its mirrors wants: apply our own rules.
                if shared && rules.isExcluded(p, isDirectory: isDirectory) { continue }
                if rules.isRulesFile(p) { rulesFileChanged(in: p.parent, into: &accepted) }
                accepted.append(event)
            case .removed(let p, let isDirectory):
                if isDirectory { rules.rulesChanged(in: p) }
                if shared && rules.isExcluded(p, isDirectory: isDirectory) { continue }
                if rules.isRulesFile(p) { rulesFileChanged(in: p.parent, into: &accepted) }
                accepted.append(event)
            case .renamed(let from, let to, let isDirectory):
                if isDirectory {
                    // A directory moved brings its rules files along: the cache of both places is stale.
                    rules.rulesChanged(in: from)
                    rules.rulesChanged(in: to)
                }
                // One side excluded: it is a create or a delete for the mirror.
                let fromOut = rules.isExcluded(from, isDirectory: isDirectory)
                let toOut = rules.isExcluded(to, isDirectory: isDirectory)
                if rules.isRulesFile(from) { rulesFileChanged(in: from.parent, into: &accepted) }
                if rules.isRulesFile(to) { rulesFileChanged(in: to.parent, into: &accepted) }
                switch (fromOut, toOut) {
                case (false, false): accepted.append(event)
                case (true, false):
                    accepted.append(isDirectory ? .rescan(to) : .changed(to, isDirectory: false, created: true, closed: true))
                case (false, true): accepted.append(.removed(from, isDirectory: isDirectory))
                case (true, true): break
                }
            case .rescan(let p):
                rules.rulesChanged(in: p)
                if shared && !p.isRoot && rules.isExcluded(p, isDirectory: true) { continue }
                accepted.append(event)
            }
        }
        if accepted.isEmpty { return }
        let now = monotonicNow()
        if log.minimum <= .debug { for e in accepted { log.debug("\(config.name): event \(e)") } }
        state.update { $0.queue.add(accepted, now: now) }
    }

    private func rulesFileChanged(in directory: SyncPath, into events: inout [WatchEvent]) {
        rules.rulesChanged(in: directory)
        log.info("\(config.name): rules changed in \(directory.isRoot ? "the source root" : directory.description); resyncing it")
        // inotify places watches by the rules: directories newly included need theirs.
        (watcher as? InotifyWatcher)?.rewatch(directory)
        // What the change newly includes is sent; what it newly excludes stays on the backup.
        events.append(.rescan(directory))
    }

    // MARK: Workers

    private func workerLoop() {
        // Below the user's programs: a burst's writer keeps its core, the copies take what
        // it leaves (rsync children inherit it).
        _ = clinux_set_thread_nice(Self.workerNice)
        state.update { $0.idle += 1 }
        enum Work { case job(ChangeQueue.Ticket), writeIndex, exit }
        loop: while true {
            let work: Work = state.wait { s in
                if s.stopping || s.fatal != nil { return (.exit, nil) }
                if s.liveWorkers > s.desiredWorkers {
                    s.liveWorkers -= 1   // fewer workers after a reload
                    return (.exit, nil)
                }
                if !s.ready.isEmpty { return (.job(s.ready.removeFirst()), nil) }
                if s.paused { return (nil, monotonicNow() + 1) }
                let now = monotonicNow()
                // A job runs already: another starts beside it where a core is free for it,
                // or once the first has run `parallelAfter` (a large file holds back no
                // small change for longer). On a machine whose cores are all busy (a
                // burst's writer and the copy beside it), a second copy would only take CPU
                // from the user's program and from the first copy, and cost more in all.
                var parallel = s.idle
                if let oldest = s.jobStarted.values.min() {
                    if now - oldest < Self.parallelAfter && s.queue.queuedCount > 0 && !Self.coresFree(1) {
                        return (nil, oldest + Self.parallelAfter)
                    }
                } else if s.idle > 1 && !Self.coresFree(2) {
                    parallel = 1
                }
                var tickets = s.queue.next(now: now, idle: parallel)
                if !tickets.isEmpty {
                    let mine = tickets.removeFirst()
                    s.ready += tickets
                    return (.job(mine), nil)
                }
                let wakeup = s.queue.nextWakeup(now: now) ?? (now + 1)
                if let due = s.indexWriteDue {
                    if s.queue.isIdle && now >= due {
                        s.indexWriteDue = nil
                        return (.writeIndex, nil)
                    }
                    return (nil, min(wakeup, due))
                }
                return (nil, wakeup)
            }
            let ticket: ChangeQueue.Ticket
            switch work {
            case .exit: break loop
            case .writeIndex:
                index?.writeCopied()
                continue loop
            case .job(let t): ticket = t
            }
            let started = monotonicNow()
            state.update {
                $0.idle -= 1
                $0.jobStarted[ticket.id] = started
            }
            let outcome = run(ticket)
            let now = monotonicNow()
            state.update { s in
                s.idle += 1
                s.running[ticket.id] = nil
                s.jobStarted[ticket.id] = nil
                record(outcome, of: ticket, started: started, now: now, in: &s)
                // What the copier recorded waits for a pause (see `MirrorIndex.commitCopied`):
                // written once the queue has stayed idle for `indexWritePause`, so that a
                // burst the workers keep up with is written in one transaction after it.
                if index != nil && s.queue.isIdle { s.indexWriteDue = now + Self.indexWritePause }
            }
            stateChanged()
        }
        state.update { $0.idle -= 1 }
    }

    /// How long the queue stays idle before the copier's records are written.
    static let indexWritePause = 0.2

    /// How long a job runs before another starts beside it even with no core free.
    static let parallelAfter = 0.1

    private static let usableCPUs = max(1, Int(clinux_usable_cpus()))

    /// True when `n` more threads would find a CPU each, counting the tasks runnable now
    /// (the caller among them); true when that cannot be read.
    static func coresFree(_ n: Int) -> Bool {
        let runnable = Int(clinux_runnable_tasks())
        return runnable < 0 || runnable - 1 + n <= usableCPUs
    }

    private func stateChanged() {
        let urgent = state.update { s -> Bool in
            guard !s.caughtUpAnnounced, s.initialSyncDone, s.queue.isIdle else { return false }
            s.caughtUpAnnounced = true
            return true
        }
        onStateChange?(urgent)
    }

    private func onStart(_ ticket: ChangeQueue.Ticket) -> (pid_t) -> Void {
        { [state] pid in state.withLock { $0.running[ticket.id] = pid } }
    }

    /// Nil when the source root is the directory the mirror started on; else why not.
    func sourceRootProblem() -> String? {
        var st = stat()
        let source = SyncPath.displayString(config.source)
        guard withCPath(config.source, { stat($0, &st) }) == 0 else {
            return "the source root \(source) is gone (\(String(cString: strerror(errno)))); nothing is sent or deleted until it is back"
        }
        let (dev, ino) = sourceIdentity.withLock { $0 }
        if UInt64(st.st_dev) != dev || UInt64(st.st_ino) != ino {
            return "the source root \(source) is not the directory the mirror started on (unmounted or replaced); nothing is sent or deleted until it is back or fansync restarts"
        }
        return nil
    }

    /// Called about once a second: says once when the source root goes away (an unmount
    /// that no event reports) and once when it is back.
    func checkSourceRoot() {
        if let released = index?.takeConfirmation(), !released.isEmpty {
            let events = released.map { WatchEvent.removed($0, isDirectory: false) }
            state.update { $0.queue.add(events, now: monotonicNow(), live: false) }
        }
        let problem = sourceRootProblem()
        let changed = state.update { s -> Bool in
            guard s.sourceProblem != problem else { return false }
            s.sourceProblem = problem
            if let problem { s.lastError = problem; s.lastErrorTime = wallNow() }
            return true
        }
        guard changed else { return }
        if let problem { log.error("\(config.name): \(problem)") } else { log.info("\(config.name): the source root is back") }
    }

    private func run(_ ticket: ChangeQueue.Ticket) -> TransferOutcome {
        if let problem = sourceRootProblem() {
            return .failed(problem, targetUnreachable: false)
        }
        switch ticket.job {
        case .sync(let paths):
            return sync(paths, ticket: ticket)
        case .tree(let path, let initial):
            var deletes = initial ? config.delete.onStartup : config.delete.whileRunning
            if initial { log.info("\(config.name): initial sync of \(SyncPath.displayString(config.source)) to \(config.target) begun") }
            if deletes, let index, case let n = index.count, n > 0,
               case let decision = index.decide(deleteCount: 1, indexCount: n, minimum: 2), case .refuse = decision {
                // An empty source root, or another filesystem than the index recorded: send
                // what is there, delete nothing.
                log.error("\(config.name): \(decision.description); syncing without deletes")
                deletes = false
            }
            return syncTree(path, deletes: deletes, ticket: ticket)
        case .rename(let from, let to, let isDirectory):
            let outcome = transport.rename(from: from, to: to)
            if case .done = outcome { index?.renamed(from: from, to: to) }
            guard case .failed(let why, let unreachable, _) = outcome, !unreachable else { return outcome }
            // The backup cannot rename (it lacks the old name, or the new one is a directory
            // still holding files): send the new name and delete the old one instead.
            log.info("\(config.name): \(why); sending \(to) instead")
            let sent = isDirectory ? syncTree(to, deletes: true, ticket: ticket) : sync([to], ticket: ticket, deletes: true)
            guard case .done = sent else { return sent }
            return sync([from], ticket: ticket)
        }
    }

    /// A batch: with the index, files the backup already holds are not sent, and moves and
    /// copies are made on the backup (see `MirrorIndex.plan`); rsync then runs over every
    /// path and is the authority on the result.
    private func sync(_ paths: [SyncPath], ticket: ChangeQueue.Ticket, deletes: Bool? = nil) -> TransferOutcome {
        let deletes = deletes ?? config.delete.whileRunning
        let transport = self.transport
        func send(_ paths: [SyncPath], record: LocalCopier.Record? = nil) -> TransferOutcome {
            transport.sync(paths, deletes: deletes, onStart: onStart(ticket), abandon: { self.abandonCopies.load(ordering: .relaxed) },
                           record: record, quiet: watcher?.ownWrites)
        }
        guard let index else { return send(paths) }
        let plan = index.plan(paths, deletes: deletes, localCopy: transport.copier != nil)
        if plan.copierRecords {
            let record = LocalCopier.Record()
            let outcome = send(paths, record: record)
            guard case .done = outcome else { return outcome }
            if index.commitCopied(record) { state.update { $0.fillRequested = true } }
            log.debug("\(config.name): \(paths.count) new path(s), hashed while copied: \(record.entries.count) recorded")
            return outcome
        }
        let (done, failure) = transport.apply(plan.ops, onStart: onStart(ticket))
        if let failure { return failure }
        let outcome = plan.rsyncPaths.isEmpty ? .done(files: 0, bytes: 0) : send(plan.rsyncPaths)
        guard case .done = outcome else { return outcome }
        index.commit(plan, deletes: deletes)
        state.update { s in
            s.stats.skipped += plan.skipped
            s.stats.copied += done.copied
            s.stats.renames += done.renamed
        }
        if done.renamed + done.copied + plan.skipped + plan.held > 0 {
            log.info("\(config.name): index: \(plan.skipped) unchanged (not sent), \(done.renamed) moved and \(done.copied) copied on the backup\(plan.held > 0 ? ", \(plan.held) delete(s) held" : "")")
        }
        return outcome
    }

    private func syncTree(_ path: SyncPath, deletes: Bool, ticket: ChangeQueue.Ticket) -> TransferOutcome {
        let excluded: [ExcludedEntry]
        do {
            excluded = try rules.excludedTopmostEntries(under: path)
        } catch {
            return .failed("cannot walk \(path): \(error)", targetUnreachable: false)
        }
        let patterns = RulesEngine.rsyncExcludeFile(excluded, base: path)
        guard let index else { return transport.syncTree(path, deletes: deletes, excludePatterns: patterns, onStart: onStart(ticket)) }
        index.beforeTree(path, rules: rules)
        let outcome = transport.syncTree(path, deletes: deletes, excludePatterns: patterns, onStart: onStart(ticket))
        if case .done = outcome {
            index.afterTree(path, rules: rules)
            if path.isRoot, let probe = transport.probeBackup([]), probe.root != "missing" { index.backupRoot = probe.root }
            state.update { $0.fillRequested = true }
        }
        return outcome
    }

    private func record(_ outcome: TransferOutcome, of ticket: ChangeQueue.Ticket, started: Double, now: Double, in s: inout State) {
        let seconds = String(format3(now - started))
        switch outcome {
        case .done(let files, let bytes, let deleted):
            s.queue.succeeded(ticket)
            s.stats.deletes += deleted
            s.consecutiveFailures = 0
            s.reachable = true
            s.stats.filesSent += files
            s.stats.bytesSent += bytes
            s.stats.lastSyncTime = wallNow()
            switch ticket.job {
            case .sync(let paths):
                s.stats.batches += 1
                log.info("\(config.name): sent batch of \(paths.count) path(s): \(files) file(s), \(bytes) bytes in \(seconds) s")
                if log.minimum <= .debug { for p in paths { log.debug("\(config.name):   \(p)") } }
            case .rename(let from, let to, _):
                s.stats.renames += 1
                log.info("\(config.name): renamed \(from) -> \(to) on the backup in \(seconds) s")
            case .tree(let path, let initial):
                if initial {
                    s.initialSyncDone = true
                    log.info("\(config.name): initial sync ended: \(files) file(s), \(bytes) bytes in \(seconds) s")
                } else {
                    log.info("\(config.name): resynced \(path.isRoot ? "the whole tree" : path.description): \(files) file(s), \(bytes) bytes in \(seconds) s")
                }
            }
        case .failed(let why, _, true):
            s.queue.failed(ticket, retryAt: now + 0.2)
            log.info("\(config.name): \(why); sending again")
        case .failed(let why, let unreachable, false):
            s.consecutiveFailures += 1
            s.stats.retries += 1
            if unreachable { s.reachable = false }
            let backoff = min(30.0, 0.5 * Double(1 << min(s.consecutiveFailures, 6)))
            s.queue.failed(ticket, retryAt: now + backoff)
            s.lastError = why
            s.lastErrorTime = wallNow()
            log.error("\(config.name): \(why); will retry in \(format3(backoff)) s, changes stay queued")
        case .fatal(let why):
            s.queue.failed(ticket, retryAt: now + 3600)
            s.lastError = why
            s.lastErrorTime = wallNow()
            s.fatal = why
            s.reachable = false
            log.error("\(config.name): \(why); the mirror stops")
            onFatal?(why)
        }
    }

    // MARK: Status

    public func status() -> MirrorStatus {
        let now = monotonicNow()
        let hold = index?.deleteHold.withLock { ($0.heldCount, $0.message) } ?? (0, nil)
        return state.withLock { s in
            MirrorStatus(
                name: config.name,
                backend: watcher?.name ?? "none",
                source: SyncPath.displayString(config.source),
                target: config.target.description,
                watched: watcher?.watchedDescription ?? [],
                queued: s.queue.queuedCount,
                inFlight: s.queue.inFlightCount,
                oldestUnsyncedSeconds: s.queue.oldestUnsynced.map { max(0, now - $0) } ?? 0,
                initialSyncDone: s.initialSyncDone,
                counters: s.stats,
                lastError: s.lastError,
                lastErrorTime: s.lastErrorTime,
                targetReachable: s.reachable,
                stopped: s.fatal,
                deletesHeld: hold.0,
                deleteHold: hold.1)
        }
    }
}

func format3(_ v: Double) -> String {
    let ms = Int((v * 1000).rounded())
    return "\(ms / 1000).\(String(ms % 1000).leftPadded(to: 3))"
}

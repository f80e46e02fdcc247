/// The changes a mirror still owes its backup, coalesced per path and ordered where order
/// matters.
///
/// Most changes are "make the backup's copy of this path match the source now": a create,
/// a write, an attribute change and a delete are all that, because the transfer reads the
/// source when it runs (a path gone from the source is deleted on the backup). Such
/// entries coalesce per path and go out in batches. Two kinds of change need order:
/// a rename executed on the backup, and a tree sync (a recursive rsync of a subtree: the
/// initial sync, an overflow rescan, a directory moved in). They are barriers: the
/// syncs queued before a barrier go first, the barrier runs alone, and what arrives after
/// it waits for it.
///
/// The queue is a plain value with no locking and no clock of its own; the mirror owns it
/// under a lock and passes the time in, which keeps it testable.
public struct ChangeQueue: Sendable {
    public enum Job: Sendable, Equatable {
        /// Bring each path on the backup to the source's current state (non-recursive).
        case sync([SyncPath])
        /// Rename on the backup; if the backup cannot (it lacks `from`), sync `to` as a tree
        /// and `from` as a path instead.
        case rename(from: SyncPath, to: SyncPath, isDirectory: Bool)
        /// Recursive sync of a subtree, with deletes inside it.
        case tree(SyncPath, initial: Bool)
    }

    /// A dispatched job with what the queue needs to take it back.
    public struct Ticket: Sendable, Equatable {
        public let id: Int
        public let job: Job
        let segment: Int
        let firstSeen: Double
    }

    struct Entry: Sendable {
        /// False only when we saw the path created and nothing can have sent it yet, so a
        /// delete before it is sent cancels it.
        var existedBefore: Bool
        var firstSeen: Double
        var readyAt: Double
        var segment: Int
        var attempts: Int = 0
    }

    enum Barrier: Sendable {
        case rename(from: SyncPath, to: SyncPath, isDirectory: Bool)
        case tree(SyncPath, initial: Bool)
    }

    struct PendingBarrier: Sendable {
        var barrier: Barrier
        /// Runs after every entry of a segment <= this one.
        var segment: Int
        var firstSeen: Double
        var notBefore: Double = 0
        var attempts: Int = 0
    }

    public struct Policy: Sendable {
        /// Seconds a change waits before it may go (lsyncd's delay).
        public var delay: Double = 0
        /// When this many changes are queued, they go at once, whatever the delay (0 = off).
        public var maxDelays: Int = 0
        /// Seconds between syncs of a file written and not closed.
        public var openFileInterval: Double = 2
        /// Most paths in one batch.
        public var maxBatch: Int = 2_000
        /// Renames are executed on the backup (false when deletes are off while running:
        /// the new name is sent and the old one kept, as rsync without --delete would).
        public var renamesOnBackup: Bool = true
        /// With `delay` 0, while a burst arrives (at least `burstRate` paths within 50 ms),
        /// what is queued waits up to `burstHold` seconds for more, so that a burst goes out
        /// in fewer, larger rsync runs; a lone change is never held. 0 turns it off.
        public var burstRate: Int = 50
        public var burstHold: Double = 0.25
        /// A delete seen while a batch is being sent waits this long before it may go: a
        /// file moved in across a filesystem boundary arrives as a copy closed just before
        /// the original is deleted, and the copy's batch makes it on the backup from the
        /// original's backup copy, which the delete running at once on another worker would
        /// take away (the file was then sent again in full). With nothing in flight a delete
        /// goes at once, with whatever arrived with it (a delete and a create of the same
        /// content in one batch are a rename on the backup).
        public var deleteHold: Double = 0.05
        public init() {}
    }

    public var policy: Policy {
        didSet { dueBound = -.infinity }
    }
    private var entries: [SyncPath: Entry] = [:]
    /// Each segment's paths in arrival order (slots of entries since removed or moved to
    /// another segment are skipped when seen).
    private var segmentPaths: [Int: [SyncPath]] = [:]
    /// How many entries each segment holds (segments with none are absent).
    private var liveCount: [Int: Int] = [:]
    /// No entry may go before this time: a lower bound, exact after `next` looked at every
    /// entry that may go. Entries whose path is being sent, or queued behind a barrier,
    /// count again once that transfer ends (`finish` lowers it). It spares `next` and
    /// `nextWakeup` a look at every entry while nothing is due (a burst arriving during
    /// lsyncd's `delay`, events during the initial sync).
    private var dueBound = Double.infinity
    private var barriers: [PendingBarrier] = []
    private var currentSegment = 0
    private var inFlightPaths: [SyncPath: Int] = [:]
    private var inFlightTrees: [SyncPath] = []
    private var inFlight: [Int: Ticket] = [:]
    private var barrierInFlight = false
    private var nextTicket = 1
    // Arrival rate, for holding batches while a burst arrives.
    private var windowStart = -Double.infinity
    private var windowCount = 0
    private var burstSeenAt = -Double.infinity
    private var pendingSince: Double? = nil

    public init(policy: Policy = Policy()) {
        self.policy = policy
    }

    // MARK: Observing

    /// Changes waiting (paths plus barriers), not counting those being sent.
    public var queuedCount: Int { entries.count + barriers.count }
    public var inFlightCount: Int { inFlight.count }
    public var isIdle: Bool { entries.isEmpty && barriers.isEmpty && inFlight.isEmpty }

    /// When the oldest change not yet on the backup was seen (nil when caught up).
    public var oldestUnsynced: Double? {
        var oldest: Double? = nil
        func take(_ t: Double) { if oldest == nil || t < oldest! { oldest = t } }
        for e in entries.values { take(e.firstSeen) }
        for b in barriers { take(b.firstSeen) }
        for t in inFlight.values { take(t.firstSeen) }
        return oldest
    }

    // MARK: Adding

    /// `live`: events the watcher saw as they happened; false for differences a start found
    /// between the tree and the index (their deletes never wait: nothing is being moved).
    public mutating func add(_ events: [WatchEvent], now: Double, live: Bool = true) {
        if now - windowStart > 0.05 {
            windowStart = now
            windowCount = 0
        }
        windowCount += events.count
        if windowCount >= policy.burstRate { burstSeenAt = now }
        for event in events { add(event, now: now, live: live) }
    }

    /// Until when queued paths wait for the rest of a burst (nil: they may go now).
    func burstHoldUntil(now: Double) -> Double? {
        guard policy.burstHold > 0, policy.delay == 0, now - burstSeenAt < 0.05,
              entries.count < policy.maxBatch, let since = pendingSince else { return nil }
        let until = min(since + policy.burstHold, burstSeenAt + 0.05)
        return until > now ? until : nil
    }

    public mutating func add(_ event: WatchEvent, now: Double, live: Bool = true) {
        switch event {
        case .changed(let path, let isDirectory, let created, let closed):
            // A file written and still open waits for its close, at most openFileInterval.
            let readyAt = (closed || isDirectory) ? now : now + policy.openFileInterval
            touch(path, created: created, readyAt: readyAt, now: now)
        case .removed(let path, _):
            if let e = entries[path], !e.existedBefore, inFlightPaths[path] == nil, !coveredByTree(path) {
                // Created and deleted before anything sent it: nothing to do.
                remove(path)
            } else {
                let hold = live && !inFlight.isEmpty ? policy.deleteHold : 0
                touch(path, created: false, readyAt: now + hold, now: now)
            }
        case .renamed(let from, let to, let isDirectory):
            rename(from: from, to: to, isDirectory: isDirectory, now: now)
        case .rescan(let path):
            addTree(path, initial: false, now: now)
        }
    }

    /// Queues a recursive sync of `path` (the initial sync is `addTree(.root, initial: true)`).
    public mutating func addTree(_ path: SyncPath, initial: Bool, now: Double) {
        if let last = barriers.last, last.segment == currentSegment - 1, segmentIsEmpty(currentSegment),
           case .tree(let q, let wasInitial) = last.barrier {
            // Nothing queued after the last pending tree: merge the two.
            if path.isInside(q) { return }
            if q.isInside(path) {
                barriers[barriers.count - 1].barrier = .tree(path, initial: initial || wasInitial)
                return
            }
        }
        barriers.append(PendingBarrier(barrier: .tree(path, initial: initial), segment: currentSegment, firstSeen: now))
        currentSegment += 1
    }

    private mutating func touch(_ path: SyncPath, created: Bool, readyAt: Double, now: Double) {
        if var e = entries[path] {
            e.readyAt = min(e.readyAt, readyAt)
            update(path, e)
            return
        }
        let existedBefore = !created || inFlightPaths[path] != nil || coveredByTree(path)
        insert(path, Entry(existedBefore: existedBefore, firstSeen: now, readyAt: readyAt, segment: currentSegment))
    }

    private mutating func insert(_ path: SyncPath, _ entry: Entry) {
        if entries.isEmpty { pendingSince = entry.firstSeen }
        if let old = entries.updateValue(entry, forKey: path) { uncount(old.segment) }
        liveCount[entry.segment, default: 0] += 1
        segmentPaths[entry.segment, default: []].append(path)
        dueBound = min(dueBound, dueTime(entry))
    }

    /// `path`'s entry changed, in the same segment.
    private mutating func update(_ path: SyncPath, _ entry: Entry) {
        entries[path] = entry
        dueBound = min(dueBound, dueTime(entry))
    }

    @discardableResult
    private mutating func remove(_ path: SyncPath) -> Entry? {
        // Its slot in segmentPaths is skipped when seen.
        guard let e = entries.removeValue(forKey: path) else { return nil }
        uncount(e.segment)
        return e
    }

    private mutating func uncount(_ segment: Int) {
        if let n = liveCount[segment], n > 1 { liveCount[segment] = n - 1 } else { liveCount[segment] = nil }
    }

    /// When `e` may go, unless `maxDelays` forces it out sooner.
    private func dueTime(_ e: Entry) -> Double {
        e.attempts == 0 ? max(e.readyAt, e.firstSeen + policy.delay) : e.readyAt
    }

    /// True when an entry waits in `segment` or before it.
    private func entriesUpTo(_ segment: Int) -> Bool {
        liveCount.keys.contains { $0 <= segment }
    }

    /// True when a pending or running tree sync covers `path` (it may send whatever is there).
    private func coveredByTree(_ path: SyncPath) -> Bool {
        for t in inFlightTrees where path.isInside(t) { return true }
        for b in barriers { if case .tree(let q, _) = b.barrier, path.isInside(q) { return true } }
        return false
    }

    private mutating func rename(from: SyncPath, to: SyncPath, isDirectory: Bool, now: Double) {
        if from == to { return }
        // A file the backup cannot have yet: only its new name matters.
        if !isDirectory, let e = entries[from], !e.existedBefore, inFlightPaths[from] == nil, !coveredByTree(from) {
            remove(from)
            touch(to, created: false, readyAt: min(e.readyAt, now), now: e.firstSeen)
            return
        }
        if !policy.renamesOnBackup {
            if isDirectory { addTree(to, initial: false, now: now) } else { touch(to, created: false, readyAt: now, now: now) }
            return
        }
        // Pending entries under either name must run after the rename, under their new names.
        var moved: [(SyncPath, Entry)] = []
        if isDirectory {
            for (p, e) in entries where p.isInside(from) || p.isInside(to) { moved.append((p, e)) }
        } else {
            if let e = entries[from] { moved.append((from, e)) }
            if let e = entries[to] { moved.append((to, e)) }
        }
        for (p, _) in moved { remove(p) }
        // Chains: a->b then b->c with nothing between is a->c; a->b->a is nothing.
        var merged = false
        if let last = barriers.last, last.segment == currentSegment - 1, segmentIsEmpty(currentSegment),
           case .rename(let a, let b, let dir) = last.barrier, b == from, dir == isDirectory {
            if a == to {
                barriers.removeLast()
            } else {
                barriers[barriers.count - 1].barrier = .rename(from: a, to: to, isDirectory: isDirectory)
            }
            merged = true
        }
        if !merged {
            barriers.append(PendingBarrier(barrier: .rename(from: from, to: to, isDirectory: isDirectory),
                                           segment: currentSegment, firstSeen: now))
            currentSegment += 1
        }
        for (p, e) in moved {
            let newPath = p.rebased(from: from, to: to) ?? p
            var n = e
            n.segment = currentSegment
            n.existedBefore = true
            if let existing = entries[newPath] {
                n.firstSeen = min(n.firstSeen, existing.firstSeen)
                n.readyAt = min(n.readyAt, existing.readyAt)
            }
            remove(newPath)
            insert(newPath, n)
        }
        // What is being sent under the old name right now must also reach the new name.
        for p in inFlightPaths.keys where p.isInside(from) {
            if let newPath = p.rebased(from: from, to: to), entries[newPath] == nil {
                insert(newPath, Entry(existedBefore: true, firstSeen: now, readyAt: now, segment: currentSegment))
            }
        }
    }

    private func segmentIsEmpty(_ segment: Int) -> Bool {
        liveCount[segment] == nil
    }

    // MARK: Dispatching

    /// The jobs to start now, for up to `idle` free workers.
    public mutating func next(now: Double, idle: Int) -> [Ticket] {
        guard idle > 0, !barrierInFlight else { return [] }
        if burstHoldUntil(now: now) != nil { return [] }
        defer { pendingSince = entries.isEmpty ? nil : now }
        let limit = barriers.first?.segment ?? Int.max
        let force = policy.maxDelays > 0 && entries.count >= policy.maxDelays
        if !force && now < dueBound {
            // No entry is due: at most the first barrier goes, if nothing waits before it.
            return barrierIfFree(now: now, limit: limit)
        }
        var tickets: [Ticket] = []
        // Paths that may go: in a segment before the first barrier, ready, not being sent.
        var ready: [SyncPath] = []
        // The earliest time a path looked at and kept may go (not counting paths being sent).
        var kept = Double.infinity
        var complete = true
        // Enough for every free worker: the rest is not looked at (a large backlog would
        // otherwise be scanned whole for each batch taken from it).
        let enough = idle * max(1, policy.maxBatch)
        for segment in segmentPaths.keys.sorted() where segment <= limit {
            if ready.count >= enough {
                complete = false
                break
            }
            var keep: [SyncPath] = []
            let slots = segmentPaths[segment]!
            for (i, p) in slots.enumerated() {
                if ready.count >= enough {
                    keep.append(contentsOf: slots[i...])
                    complete = false
                    break
                }
                guard let e = entries[p], e.segment == segment else { continue }   // stale slot
                let due = force ? (e.attempts == 0 || e.readyAt <= now) : dueTime(e) <= now
                if inFlightPaths[p] != nil {
                    keep.append(p)
                } else if due {
                    ready.append(p)
                } else {
                    keep.append(p)
                    kept = min(kept, dueTime(e))
                }
            }
            segmentPaths[segment] = keep.isEmpty ? nil : keep
        }
        // What a later call must look at again: everything, when this one stopped early or
        // puts paths back.
        dueBound = complete ? kept : -.infinity
        if !ready.isEmpty {
            // Split across free workers when each gets a worthwhile share (64 paths).
            let wanted = max(ready.count / 64, (ready.count + policy.maxBatch - 1) / policy.maxBatch, 1)
            let batches = min(idle, wanted)
            let per = min(policy.maxBatch, (ready.count + batches - 1) / batches)
            // Large bursts are split across the free workers; the rest waits for the next free one.
            var start = 0
            while start < ready.count && tickets.count < idle {
                let slice = Array(ready[start..<min(start + max(per, 1), ready.count)])
                start += slice.count
                var first = now
                var segment = 0
                for p in slice {
                    let e = remove(p)!
                    first = min(first, e.firstSeen)
                    segment = max(segment, e.segment)
                    inFlightPaths[p, default: 0] += 1
                }
                tickets.append(issue(.sync(slice), segment: segment, firstSeen: first))
            }
            // Paths that did not fit go back to their segment.
            if start < ready.count {
                for p in ready[start...] { segmentPaths[entries[p]!.segment, default: []].append(p) }
                dueBound = -.infinity
            }
            return tickets
        }
        return barrierIfFree(now: now, limit: limit)
    }

    /// The first barrier, when nothing waits before it and no transfer runs: it runs alone.
    private mutating func barrierIfFree(now: Double, limit: Int) -> [Ticket] {
        guard let head = barriers.first, inFlight.isEmpty, head.notBefore <= now, !entriesUpTo(limit) else { return [] }
        barriers.removeFirst()
        barrierInFlight = true
        switch head.barrier {
        case .rename(let from, let to, let isDirectory):
            return [issue(.rename(from: from, to: to, isDirectory: isDirectory), segment: head.segment, firstSeen: head.firstSeen)]
        case .tree(let path, let initial):
            inFlightTrees.append(path)
            return [issue(.tree(path, initial: initial), segment: head.segment, firstSeen: head.firstSeen)]
        }
    }

    /// The earliest time at which `next` may have something new to give without new events
    /// or a transfer ending (nil: only those). A time that has passed means "ask `next`
    /// again"; once `next` has found nothing, never a time that has passed (a worker would
    /// ask again and again for as long as a transfer runs).
    public func nextWakeup(now: Double) -> Double? {
        if barrierInFlight { return nil }
        if let until = burstHoldUntil(now: now) { return until }
        var wake: Double? = entries.isEmpty || dueBound == .infinity ? nil : dueBound
        let limit = barriers.first?.segment ?? Int.max
        if let head = barriers.first, inFlight.isEmpty, !entriesUpTo(limit) {
            wake = min(wake ?? head.notBefore, head.notBefore)
        }
        return wake
    }

    private mutating func issue(_ job: Job, segment: Int, firstSeen: Double) -> Ticket {
        let t = Ticket(id: nextTicket, job: job, segment: segment, firstSeen: firstSeen)
        nextTicket += 1
        inFlight[t.id] = t
        return t
    }

    // MARK: Completing

    /// The job reached the backup.
    public mutating func succeeded(_ ticket: Ticket) {
        finish(ticket)
    }

    /// The job failed; its changes stay queued and may go again at `retryAt`.
    public mutating func failed(_ ticket: Ticket, retryAt: Double) {
        finish(ticket)
        switch ticket.job {
        case .sync(let paths):
            for p in paths {
                if var e = entries[p] {
                    e.existedBefore = true
                    e.firstSeen = min(e.firstSeen, ticket.firstSeen)
                    update(p, e)
                } else {
                    // Back where it came from: before any barrier queued since.
                    insert(p, Entry(existedBefore: true, firstSeen: ticket.firstSeen, readyAt: retryAt,
                                    segment: min(ticket.segment, barriers.first?.segment ?? ticket.segment), attempts: 1))
                }
            }
        case .rename(let from, let to, let isDirectory):
            barriers.insert(PendingBarrier(barrier: .rename(from: from, to: to, isDirectory: isDirectory), segment: ticket.segment,
                                           firstSeen: ticket.firstSeen, notBefore: retryAt, attempts: 1), at: 0)
        case .tree(let path, let initial):
            barriers.insert(PendingBarrier(barrier: .tree(path, initial: initial), segment: ticket.segment,
                                           firstSeen: ticket.firstSeen, notBefore: retryAt, attempts: 1), at: 0)
        }
    }

    private mutating func finish(_ ticket: Ticket) {
        inFlight[ticket.id] = nil
        // Paths queued again while this was sent, and those behind its barrier, may go now.
        dueBound = -.infinity
        switch ticket.job {
        case .sync(let paths):
            for p in paths {
                if let n = inFlightPaths[p], n > 1 { inFlightPaths[p] = n - 1 } else { inFlightPaths[p] = nil }
            }
        case .rename:
            barrierInFlight = false
        case .tree(let path, _):
            barrierInFlight = false
            if let i = inFlightTrees.firstIndex(of: path) { inFlightTrees.remove(at: i) }
        }
    }
}

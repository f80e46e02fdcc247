import CLinux
import Glibc
import Synchronization

public let fansyncVersion = "0.1.0"

/// The process: mirrors, the status file, signals.
public final class Daemon: @unchecked Sendable {
    public private(set) var settings: DaemonSettings
    public let configs: [MirrorConfig]
    let log: Logger
    private(set) var mirrors: [Mirror] = []
    private let fatal = Monitor<String?>(nil)
    /// Set by a mirror when something worth reporting happened (a transfer ended).
    /// A mirror's state changed since the last status; `urgent`: one caught up after its
    /// start (written at once, whatever the spacing).
    private struct Dirty { var changed = false; var urgent = false }
    private let dirty = Monitor(Dirty())
    private lazy var registry = WatcherRegistry(log: log)
    let startedAt = wallNow()
    /// The least time between two status writes that follow state changes (a transfer
    /// ended, the start caught up): at most 50 a second, each within 20 ms of its change;
    /// 100 ms while more than `busyQueue` paths wait (a status walks the queue for its
    /// oldest change, under the lock the workers need).
    static let statusSpacing = 0.02
    static let busyStatusSpacing = 0.1
    static let busyQueue = 1000
    /// The spacing the last status called for.
    private var spacing = Daemon.statusSpacing

    /// Loads the configuration again (SIGHUP); nil when there is no config file.
    let reload: (() throws -> (DaemonSettings, [MirrorConfig]))?

    public init(settings: DaemonSettings, mirrors: [MirrorConfig], log: Logger,
                reload: (() throws -> (DaemonSettings, [MirrorConfig]))? = nil) {
        self.settings = settings
        self.configs = mirrors
        self.log = log
        self.reload = reload
    }

    private func startMirror(_ config: MirrorConfig) throws -> Mirror {
        let mirror = try Mirror(config: config, log: log, registry: registry, stateRoot: settings.stateDir,
                                allowMassDelete: settings.allowMassDelete)
        mirror.onFatal = { [fatal] why in fatal.update { $0 = why } }
        mirror.onStateChange = { [dirty] urgent in
            // The first change since the last status wakes the main loop, and so does the
            // first urgent one.
            let first = dirty.withLock { d -> Bool in
                defer { d.changed = true; d.urgent = d.urgent || urgent }
                return !d.changed || (urgent && !d.urgent)
            }
            if first { kill(getpid(), SIGUSR2) }
        }
        try mirror.start()
        log.info("\(config.name): mirroring \(SyncPath.displayString(config.source)) to \(config.target) (delay \(config.delay) s, \(config.maxProcesses) transfer(s) at a time; \(mirror.transport.batchDescription))")
        return mirror
    }

    /// SIGHUP: a config that fails to load leaves the running one in place. Mirrors are
    /// matched by name; a changed one is reconfigured in place (its queue and watcher stay),
    /// or restarted when its source or backend changed.
    func reloadConfiguration() {
        guard let reload else {
            log.info("received SIGHUP: no config file to reload (mirror given on the command line)")
            return
        }
        let newSettings: DaemonSettings, newConfigs: [MirrorConfig]
        do {
            (newSettings, newConfigs) = try reload()
        } catch {
            log.error("reload failed, keeping the running configuration: \(error)")
            return
        }
        log.info("received SIGHUP: reloading the configuration")
        var kept: [Mirror] = []
        var remaining = mirrors
        for config in newConfigs {
            if let i = remaining.firstIndex(where: { $0.config.name == config.name }) {
                let mirror = remaining.remove(at: i)
                do {
                    if try mirror.reconfigure(config) { kept.append(mirror); continue }
                    log.info("\(config.name): source or backend changed; restarting the mirror")
                    mirror.stop()
                } catch {
                    log.error("\(config.name): cannot apply the new configuration (\(error)); keeping the old one")
                    kept.append(mirror)
                    continue
                }
            }
            do {
                kept.append(try startMirror(config))
            } catch {
                log.error("\(config.name): cannot start: \(error)")
            }
        }
        for mirror in remaining {
            log.info("\(mirror.config.name): no longer in the configuration; stopping it")
            mirror.stop()
        }
        mirrors = kept
        let oldStatus = settings.statusFile
        settings.statusFile = newSettings.statusFile
        settings.statusInterval = newSettings.statusInterval
        if newSettings.logFile != settings.logFile {
            log.warning("logfile changed in the config; it takes effect at the next start")
        }
        if oldStatus != settings.statusFile, let oldStatus { unlink(oldStatus) }
    }

    /// Runs until SIGINT or SIGTERM (exit 0) or until a mirror cannot go on (exit 1).
    public func run() -> Int32 {
        // Signals are taken by this thread only: block them before any thread starts.
        var set = sigset_t()
        sigemptyset(&set)
        // SIGUSR2: a mirror's state changed (the status is rewritten at once).
        for s in [SIGINT, SIGTERM, SIGHUP, SIGUSR2] { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
        // Transfers read at idle I/O priority (inherited by rsync) so training never waits.
        _ = clinux_set_idle_io_priority()

        restrictCapabilities()

        if let pidFile = settings.pidFile {
            do { try writeFileAtomically(pidFile, "\(getpid())\n") } catch { log.error("\(error)"); return 1 }
        }
        defer { if let pidFile = settings.pidFile { unlink(pidFile) } }

        for config in configs {
            do {
                mirrors.append(try startMirror(config))
            } catch {
                log.error("\(config.name): cannot start: \(error)")
                for m in mirrors { m.stop(grace: 0) }
                return 1
            }
        }

        var exitCode: Int32 = 0
        var nextStatus = 0.0
        var lastStatus = 0.0
        loop: while true {
            let now = monotonicNow()
            // Every statusInterval, and soon after each state change (see statusSpacing).
            let d = dirty.withLock { $0 }
            if now >= nextStatus || d.urgent || (d.changed && now >= lastStatus + spacing) {
                dirty.withLock { $0 = Dirty() }
                for m in mirrors { m.checkSourceRoot() }
                writeStatus()
                lastStatus = now
                nextStatus = now + max(0.1, settings.statusInterval)
            }
            if let why = fatal.withLock({ $0 }) {
                log.error("stopping: \(why)")
                exitCode = 1
                break
            }
            // A change soon after the last status waits for the rest of the spacing.
            let pending = dirty.withLock { $0 }
            let wait = pending.urgent ? 0.001 : pending.changed ? max(0.001, lastStatus + spacing - monotonicNow()) : 0.1
            var timeout = timespec(tv_sec: 0, tv_nsec: Int(min(wait, 0.1) * 1e9))
            var info = siginfo_t()
            let sig = sigtimedwait(&set, &info, &timeout)
            switch sig {
            case SIGINT, SIGTERM:
                log.info("received \(sig == SIGINT ? "SIGINT" : "SIGTERM"), stopping")
                break loop
            case SIGHUP:
                reloadConfiguration()
                nextStatus = 0
            default:
                continue
            }
        }
        for m in mirrors { m.stop() }
        writeStatus(stopped: true)
        log.info("stopped")
        return exitCode
    }

    /// What the daemon and the rsync and ssh it starts may need, and nothing else:
    /// fanotify marks and xattrs (sys_admin), reading any file and open_by_handle_at
    /// (dac_read_search), writing a local backup as its owners had it (dac_override, chown,
    /// fowner, fsetid, mknod for device files).
    static let keptCapabilities = ["cap_sys_admin", "cap_dac_read_search", "cap_dac_override", "cap_chown",
                                   "cap_fowner", "cap_fsetid", "cap_mknod"]

    func restrictCapabilities() {
        guard geteuid() == 0 else { return }
        var dropped: Int32 = 0
        if clinux_restrict_capabilities(Self.keptCapabilities.joined(separator: ","), &dropped) != 0 {
            log.warning("cannot drop capabilities: \(String(cString: strerror(errno))); running with those it has")
        } else {
            log.info("capabilities: keeping \(Self.keptCapabilities.joined(separator: ", ")) (\(dropped) dropped from the bounding set)")
        }
    }

    func statusJSON(stopped: Bool, statuses: [MirrorStatus]) -> JSON {
        .object([
            ("version", .string(fansyncVersion)),
            ("pid", .number(Double(getpid()))),
            ("running", .bool(!stopped)),
            ("started", .number(startedAt.rounded())),
            ("updated", .number((wallNow() * 1000).rounded() / 1000)),
            ("uptime_seconds", .number((wallNow() - startedAt).rounded())),
            ("status_interval", .number(settings.statusInterval)),
            ("syncs", .array(statuses.map(\.json))),
        ])
    }

    func writeStatus(stopped: Bool = false) {
        guard let path = settings.statusFile, !path.isEmpty else { return }
        let statuses = mirrors.map { $0.status() }
        spacing = statuses.contains { $0.queued > Self.busyQueue } ? Self.busyStatusSpacing : Self.statusSpacing
        do {
            try writeFileAtomically(path, statusJSON(stopped: stopped, statuses: statuses).serialized() + "\n")
        } catch {
            log.warning("\(error)")
        }
    }
}


import CLinux
import Glibc

public let fansyncVersion = "0.1.0"

/// The process: mirrors, the status file, signals.
public final class Daemon: @unchecked Sendable {
    public let settings: DaemonSettings
    public let configs: [MirrorConfig]
    let log: Logger
    private(set) var mirrors: [Mirror] = []
    private let fatal = Monitor<String?>(nil)
    let startedAt = wallNow()

    public init(settings: DaemonSettings, mirrors: [MirrorConfig], log: Logger) {
        self.settings = settings
        self.configs = mirrors
        self.log = log
    }

    /// Runs until SIGINT or SIGTERM (exit 0) or until a mirror cannot go on (exit 1).
    public func run() -> Int32 {
        // Signals are taken by this thread only: block them before any thread starts.
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
        // Transfers read at idle I/O priority (inherited by rsync) so training never waits.
        _ = clinux_set_idle_io_priority()

        if let pidFile = settings.pidFile {
            do { try writeFileAtomically(pidFile, "\(getpid())\n") } catch { log.error("\(error)"); return 1 }
        }
        defer { if let pidFile = settings.pidFile { unlink(pidFile) } }

        for config in configs {
            do {
                let mirror = try Mirror(config: config, log: log)
                mirror.onFatal = { [fatal] why in fatal.update { $0 = why } }
                try mirror.start()
                mirrors.append(mirror)
                log.info("\(config.name): mirroring \(SyncPath.displayString(config.source)) to \(config.target) (delay \(config.delay) s, \(config.maxProcesses) transfer(s) at a time)")
            } catch {
                log.error("\(config.name): cannot start: \(error)")
                for m in mirrors { m.stop(grace: 0) }
                return 1
            }
        }

        var exitCode: Int32 = 0
        var nextStatus = 0.0
        loop: while true {
            let now = monotonicNow()
            if now >= nextStatus {
                writeStatus()
                nextStatus = now + max(0.1, settings.statusInterval)
            }
            if let why = fatal.withLock({ $0 }) {
                log.error("stopping: \(why)")
                exitCode = 1
                break
            }
            var timeout = timespec(tv_sec: 0, tv_nsec: 200_000_000)
            var info = siginfo_t()
            let sig = sigtimedwait(&set, &info, &timeout)
            switch sig {
            case SIGINT, SIGTERM:
                log.info("received \(sig == SIGINT ? "SIGINT" : "SIGTERM"), stopping")
                break loop
            case SIGHUP:
                log.info("received SIGHUP: reloading the configuration is not available for command-line mirrors; ignored")
            default:
                continue
            }
        }
        for m in mirrors { m.stop() }
        writeStatus(stopped: true)
        log.info("stopped")
        return exitCode
    }

    func statusJSON(stopped: Bool = false) -> JSON {
        .object([
            ("version", .string(fansyncVersion)),
            ("pid", .number(Double(getpid()))),
            ("running", .bool(!stopped)),
            ("started", .number(startedAt.rounded())),
            ("updated", .number((wallNow() * 1000).rounded() / 1000)),
            ("uptime_seconds", .number((wallNow() - startedAt).rounded())),
            ("status_interval", .number(settings.statusInterval)),
            ("syncs", .array(mirrors.map { $0.status().json })),
        ])
    }

    func writeStatus(stopped: Bool = false) {
        guard let path = settings.statusFile, !path.isEmpty else { return }
        do {
            try writeFileAtomically(path, statusJSON(stopped: stopped).serialized() + "\n")
        } catch {
            log.warning("\(error)")
        }
    }
}


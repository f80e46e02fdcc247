/// Whether deletes found by comparing the tree with the index (or by a batch of events)
/// may be propagated to the backup.
///
/// The dangerous case is a source that looks empty because it is not there: an unmounted
/// volume, a missing directory, another filesystem mounted in its place. Propagating that
/// "emptiness" would wipe the backup, which is the one place the data still exists.
public enum DeleteSafety {
    public struct Facts: Hashable, Sendable {
        /// The source root exists and is a directory.
        public var rootExists: Bool
        /// Entries found under the root (any kind; 0 for an empty directory).
        public var rootEntryCount: Int
        /// The device of the source root now; nil when it could not be read.
        public var rootDevice: UInt64?
        /// The device recorded in the index when it was filled; nil when none yet.
        public var recordedDevice: UInt64?
        /// Entries in the index (what the backup holds).
        public var indexCount: Int
        /// Paths this start or batch would delete on the backup.
        public var deleteCount: Int

        public init(rootExists: Bool, rootEntryCount: Int, rootDevice: UInt64?, recordedDevice: UInt64?,
                    indexCount: Int, deleteCount: Int) {
            self.rootExists = rootExists
            self.rootEntryCount = rootEntryCount
            self.rootDevice = rootDevice
            self.recordedDevice = recordedDevice
            self.indexCount = indexCount
            self.deleteCount = deleteCount
        }
    }

    public struct Policy: Hashable, Sendable {
        /// Share of the index a start or batch may delete without confirmation (0…1).
        public var maxDeleteShare: Double
        /// `--allow-mass-delete`, or `fansync confirm-deletes` for the held set.
        public var massDeleteConfirmed: Bool

        public init(maxDeleteShare: Double = 0.5, massDeleteConfirmed: Bool = false) {
            self.maxDeleteShare = maxDeleteShare
            self.massDeleteConfirmed = massDeleteConfirmed
        }
    }

    public enum Decision: Hashable, Sendable, CustomStringConvertible {
        /// Propagate the deletes.
        case allow
        /// Propagate no delete at all (whatever the operator confirms): the source is not
        /// the tree the index describes. Transfers of what exists still go on.
        case refuse(Reason)
        /// Wait for `fansync confirm-deletes` or a restart with `--allow-mass-delete`.
        case hold(deleteCount: Int, indexCount: Int, maxShare: Double)

        public var description: String {
            switch self {
            case .allow:
                return "deletes allowed"
            case .refuse(let reason):
                return "no delete is propagated: \(reason)"
            case .hold(let n, let total, let share):
                let pct = total == 0 ? 100 : Int((Double(n) / Double(total) * 100).rounded())
                return "holding \(n) deletes (\(pct)% of the \(total) paths the backup holds, more than the \(Int((share * 100).rounded()))% allowed): run `fansync confirm-deletes` or restart with --allow-mass-delete"
            }
        }
    }

    public enum Reason: Hashable, Sendable, CustomStringConvertible {
        case rootMissing
        case rootEmpty(indexCount: Int)
        case otherDevice(recorded: UInt64, now: UInt64)
        case deviceUnknown

        public var description: String {
            switch self {
            case .rootMissing:
                return "the source root is missing"
            case .rootEmpty(let n):
                return "the source root is empty while the backup holds \(n) paths (an unmounted volume?)"
            case .otherDevice(let recorded, let now):
                return "the source root is on device \(Self.majorMinor(now)), not \(Self.majorMinor(recorded)) as recorded (another filesystem mounted, or the volume unmounted?)"
            case .deviceUnknown:
                return "the source root's device could not be read"
            }
        }

        static func majorMinor(_ dev: UInt64) -> String {
            let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)
            let minor = (dev & 0xff) | ((dev >> 12) & ~0xff)
            return "\(major):\(minor)"
        }
    }

    public static func decide(_ f: Facts, policy: Policy = Policy()) -> Decision {
        guard f.deleteCount > 0 else { return .allow }
        guard f.rootExists else { return .refuse(.rootMissing) }
        if let recorded = f.recordedDevice {
            guard let now = f.rootDevice else { return .refuse(.deviceUnknown) }
            if now != recorded { return .refuse(.otherDevice(recorded: recorded, now: now)) }
        }
        if f.rootEntryCount == 0 && f.indexCount > 0 { return .refuse(.rootEmpty(indexCount: f.indexCount)) }
        if !policy.massDeleteConfirmed {
            let share = f.indexCount == 0 ? 1.0 : Double(f.deleteCount) / Double(f.indexCount)
            if share > policy.maxDeleteShare {
                return .hold(deleteCount: f.deleteCount, indexCount: f.indexCount, maxShare: policy.maxDeleteShare)
            }
        }
        return .allow
    }
}

import CLinux
import Glibc
import Synchronization

/// A local target's batches, copied by the daemon itself: the result of
/// `rsync -a --files-from=- --relative --delete-missing-args --force` for a list of paths,
/// without starting rsync's three processes for every batch (most of the cost of a small
/// batch, and twice `cp -a`'s work per file in a burst).
///
/// What rsync does, it does: a file whose size and mtime match is left alone (its mode and
/// owner set when they differ); any other goes through a temporary `.name.XXXXXX` in its
/// directory (or an unnamed file), renamed over the old one once complete (the backup never
/// shows a partial file), with mode, owner (as root), group and mtime. A directory new on
/// the backup is itself made under a temporary name and renamed into place with what the
/// batch put in it, which is then written under final names (`makeDirectory`); a kill
/// leaves it behind as rsync leaves its temporary files, and the full sync after an unclean
/// stop deletes it. Symlinks are copied as links, devices,
/// fifos and sockets made again; a listed path missing on the source is deleted on the
/// backup (a directory with everything in it); the directories on the way to each path
/// ("implied directories") and the listed ones get the source's mode, owner and mtime, the
/// deepest first, after the files. Content goes through `copy_file_range` (a reflink where
/// the filesystem can), or a read/write loop where it cannot.
///
/// Nothing on either side is reached through a symlink: directories are opened beneath the
/// roots with every symlink refused (`openat2` with `RESOLVE_NO_SYMLINKS`), so a symlink
/// that stands where the source has a directory is replaced on the backup, never written
/// through.
///
/// Recursive transfers (the initial sync, a resync of a subtree) stay with rsync.
final class LocalCopier: Sendable {
    let source: [UInt8]
    let target: [UInt8]
    /// As root the owner is copied too (rsync's `--owner` needs the superuser).
    private let asRoot: Bool
    /// The process's umask (from /proc/self/status), nil when unknown: a file made with a
    /// mode the umask leaves whole needs no chmod.
    private let umask: mode_t?

    init(source: [UInt8], target: [UInt8]) {
        self.source = source
        self.target = target
        asRoot = geteuid() == 0
        umask = Self.currentUmask()
    }

    static func currentUmask() -> mode_t? {
        guard let text = readTextFile("/proc/self/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Umask:") {
            return mode_t(line.dropFirst(6).filter { $0 != " " && $0 != "\t" }, radix: 8)
        }
        return nil
    }

    /// True when `config`'s batches are copied by the daemon (a local target, `localCopy`
    /// auto, and rsync options the copier reproduces).
    static func copiesBatches(of config: MirrorConfig) -> Bool {
        guard case .local = config.target, config.localCopy == .auto else { return false }
        return optionNeedingRsync(config.rsync) == nil
    }

    /// Nil when the copier does what rsync does with these options; else the option that
    /// needs rsync. Options with no effect on a local copy (`compress`, `verbose`,
    /// `whole_file`) do not.
    static func optionNeedingRsync(_ r: RsyncOptions) -> String? {
        if r.binary != "rsync" { return "rsync.binary" }
        if !r.archive { return "rsync.archive = false" }
        let flags: [(Bool, String)] = [(r.hardLinks, "hard_links"), (r.acls, "acls"), (r.xattrs, "xattrs"),
                                       (r.checksum, "checksum"), (r.sparse, "sparse"), (r.inplace, "inplace")]
        if let (_, name) = flags.first(where: { $0.0 }) { return "rsync.\(name)" }
        if r.bwlimit != nil { return "rsync.bwlimit" }
        if let extra = r.extra.first(where: { $0 != "--delete" }) { return "the rsync argument \(extra)" }
        return nil
    }

    /// What a batch made or found on the backup, for the index, when the daemon did not
    /// hash it beforehand: each path's version as read (`stat`), the content hash where the
    /// copy computed it on the way (files up to `hashedCopyLimit`; larger ones and files
    /// the quick check left are recorded without, for the background hashing), and whether
    /// the file was still that version once copied.
    final class Record {
        var entries: [(path: SyncPath, entry: HashedEntry, acked: Bool)] = []
        let hasher = ContentHasher()
        /// Files copied through read, hash, write rather than `copy_file_range`.
        static let hashedCopyLimit: Int64 = 1 << 20

        func add(_ p: SyncPath, _ entry: HashedEntry, acked: Bool = true) { entries.append((p, entry, acked)) }
    }

    // MARK: A batch

    /// What one batch did, and what went wrong.
    private struct Batch {
        var files = 0
        var bytes: Int64 = 0
        var deleted = 0
        var errors: [String] = []
        /// A path changed type while it was copied: the batch goes again.
        var raced = false
        /// Directories whose mode, owner and mtime follow the source's at the end.
        var directories = Set<SyncPath>()
        var lastParent: SyncPath? = nil
        /// The read/write loop's buffer, one per batch.
        let buffer = CopyBuffer()

        mutating func fail(_ what: String, _ path: SyncPath, _ code: Int32) {
            errors.append("\(what) \(path): \(String(cString: strerror(code)))")
        }
    }

    /// Copies `paths` to the backup (in sorted order: a directory before what it holds, and
    /// one directory's paths together).
    /// `abandon` is asked between files and between chunks of a large one: when it says
    /// so the batch stops, its temporary file removed.
    /// `quiet`: keeps the batch's writes out of the watcher (see `OwnWrites`).
    func sync(_ paths: [SyncPath], deletes: Bool, abandon: () -> Bool, record: Record? = nil,
              quiet: OwnWrites? = nil) -> TransferOutcome {
        let sourceRoot = withCPath(source) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        if sourceRoot < 0 {
            return .failed("cannot open the source \(SyncPath.displayString(source)): \(String(cString: strerror(errno)))", targetUnreachable: false)
        }
        defer { Glibc.close(sourceRoot) }
        var targetRoot = withCPath(target) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        if targetRoot < 0 && errno == ENOENT {
            // As rsync: the destination directory itself is made, not its parents.
            _ = withCPath(target) { mkdir($0, 0o755) }
            targetRoot = withCPath(target) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        }
        if targetRoot < 0 {
            return .failed("cannot open the backup \(SyncPath.displayString(target)): \(String(cString: strerror(errno)))", targetUnreachable: true)
        }
        defer { Glibc.close(targetRoot) }
        let sources = DirectoryCache(root: sourceRoot)
        let targets = DirectoryCache(root: targetRoot, quiet: quiet)
        defer { targets.close() }   // before the root's descriptor
        var batch = Batch()
        var stopped = false
        for p in paths.sorted() {
            if abandon() { stopped = true; break }
            copy(p, sources, targets, deletes: deletes, &batch, abandon: abandon, record: record)
        }
        // What it holds is complete (a file cut short is not in it).
        nameHiddenDirectory(targets, &batch)
        if stopped || abandon() { return .failed("stopped before the batch was complete", targetUnreachable: false) }
        setDirectoryAttributes(batch.directories, sources, targets, &batch)
        if let first = batch.errors.first {
            let more = batch.errors.count > 1 ? " (and \(batch.errors.count - 1) more)" : ""
            return .failed("cannot copy to the backup: \(first)\(more)", targetUnreachable: false)
        }
        if batch.raced {
            return .failed("files changed type while being copied", targetUnreachable: false, transient: true)
        }
        return .done(files: batch.files, bytes: batch.bytes, deleted: batch.deleted)
    }

    private func copy(_ p: SyncPath, _ sources: DirectoryCache, _ targets: DirectoryCache, deletes: Bool,
                      _ batch: inout Batch, abandon: () -> Bool, record: Record?) {
        if p.isRoot {
            batch.directories.insert(.root)
            return
        }
        // Sorted paths: one outside the hidden directory means its paths are done.
        if let h = targets.hidden, !p.isInside(h.path) { nameHiddenDirectory(targets, &batch) }
        let parent = p.parent
        let name = p.name
        let srcDir = sources.open(parent)
        guard let st = srcDir >= 0 ? Self.lstatAt(srcDir, name) : nil else {
            let code = srcDir >= 0 ? errno : sources.lastError
            if code == ENOENT || code == ENOTDIR || code == ELOOP {
                // Gone from the source (or under what is now a file or a symlink there).
                if deletes { remove(p, targets, &batch) }
            } else {
                batch.fail("cannot read", p, code)
            }
            return
        }
        if batch.lastParent != parent {
            // rsync's implied directories: each on the way takes the source's attributes.
            var a = parent
            while !a.isRoot, batch.directories.insert(a).inserted { a = a.parent }
            batch.lastParent = parent
        }
        let dstDir = targets.open(parent, create: true)
        if dstDir < 0 {
            batch.fail("cannot make the directory of", p, targets.lastError)
            return
        }
        let failures = batch.errors.count
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            makeDirectory(p, in: dstDir, of: targets, deletes: deletes, &batch)
        case S_IFREG:
            return copyFile(p, st, in: srcDir, to: dstDir, of: targets, inNewDirectory: targets.madeByThisBatch(parent),
                            hidden: targets.isHidden(parent), deletes: deletes, &batch, abandon: abandon, record: record)
        case S_IFLNK:
            copySymlink(p, st, in: srcDir, to: dstDir, hidden: targets.isHidden(parent), deletes: deletes, &batch, record: record)
            return
        default:
            copySpecial(p, st, to: dstDir, hidden: targets.isHidden(parent), deletes: deletes, &batch)
        }
        if let record, batch.errors.count == failures { record.add(p, HashedEntry(stat: FileStat(stat: st))) }
    }

    // MARK: Each kind

    /// A directory new on the backup is made under a temporary name (`.name.XXXXXX`, 0700)
    /// and takes its name once the batch has put in it what it has for it (when the sorted
    /// paths leave it, or at the batch's end: `nameHiddenDirectory`). Until then nothing in it
    /// is seen under a final path, so its files are written under their own names, with
    /// no temporary name or unnamed file each (a burst's directories are mostly new).
    private func makeDirectory(_ p: SyncPath, in dstDir: Int32, of targets: DirectoryCache, deletes: Bool, _ batch: inout Batch) {
        batch.directories.insert(p)
        let name = p.name
        let hidden = targets.isHidden(p.parent)
        if !hidden, let old = Self.lstatAt(dstDir, name) {
            if (old.st_mode & S_IFMT) == S_IFDIR { return }
            if withCPath(name, { unlinkat(dstDir, $0, 0) }) != 0 { return batch.fail("cannot replace", p, errno) }
        }
        if hidden {
            if withCPath(name, { mkdirat(dstDir, $0, 0o700) }) == 0 {
                targets.made(p)
            } else if errno != EEXIST {
                batch.fail("cannot make", p, errno)
            }
            return
        }
        guard let (temp, _) = createTemporary(for: name, in: dstDir, p, &batch, { mkdirat(dstDir, $0, 0o700) }) else { return }
        let fd = Self.openDirectory(temp, in: dstDir)
        if fd < 0 {
            batch.fail("cannot make", p, errno)
            _ = withCPath(temp) { unlinkat(dstDir, $0, AT_REMOVEDIR) }
            return
        }
        targets.hide(p, temp: temp, fd: fd)
    }

    /// Gives the hidden directory its name: renamed into place where the name is free; where
    /// a directory stands there now (another batch made it for its own files), what the
    /// hidden one holds is moved into it, entry by entry. What cannot be placed (the name
    /// taken by a file or a symlink: the source changed meanwhile) makes the batch go again.
    private func nameHiddenDirectory(_ targets: DirectoryCache, _ batch: inout Batch) {
        guard let h = targets.unhide() else { return }
        defer { targets.release(h.fd) }
        let name = h.path.name
        let parent = targets.open(h.path.parent)
        if parent < 0 {
            // Moved or deleted on the backup meanwhile: its own events follow.
            batch.raced = true
            return
        }
        var e = withCPath(h.temp) { a in withCPath(name) { b in clinux_rename_noreplace(parent, a, parent, b) == 0 ? 0 : errno } }
        if e == EINVAL && Self.lstatAt(parent, name) == nil {
            // A filesystem without RENAME_NOREPLACE, and the name free.
            e = withCPath(h.temp) { a in withCPath(name) { b in renameat(parent, a, parent, b) == 0 ? 0 : errno } }
        }
        if e == 0 { return }
        if e == EEXIST || e == EINVAL || e == ENOTEMPTY {
            let into = Self.openDirectory(name, in: parent)
            if into < 0 || !Self.moveEntries(from: h.fd, into: into) { batch.raced = true }
            if into >= 0 { Glibc.close(into) }
        } else {
            batch.fail("cannot rename into place", h.path, e)
        }
        _ = Self.removeTree(h.temp, in: parent)
    }

    /// Moves each entry of the directory `from` into `into`, never over one there: a
    /// directory into the directory of the same name, entry by entry. False when some could
    /// not be moved (they stay in `from`).
    static func moveEntries(from: Int32, into: Int32) -> Bool {
        let fd = openat(from, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0, let stream = fdopendir(fd) else {
            if fd >= 0 { Glibc.close(fd) }
            return false
        }
        defer { closedir(stream) }
        var complete = true
        for n in directoryNames(stream) {
            if withCPath(n, { a in clinux_rename_noreplace(from, a, into, a) }) == 0 { continue }
            guard errno == EEXIST,
                  let mine = lstatAt(from, n), (mine.st_mode & S_IFMT) == S_IFDIR,
                  let theirs = lstatAt(into, n), (theirs.st_mode & S_IFMT) == S_IFDIR
            else { complete = false; continue }
            let a = Self.openDirectory(n, in: from)
            let b = Self.openDirectory(n, in: into)
            if a >= 0 && b >= 0 { complete = moveEntries(from: a, into: b) && complete } else { complete = false }
            if a >= 0 { Glibc.close(a) }
            if b >= 0 { Glibc.close(b) }
        }
        return complete
    }

    /// `fromName`: the name in `srcDir` when it is not `p`'s own (a copy inside the backup).
    /// `st`: what `lstat` found at that name (a regular file); the file opened is checked
    /// to be that inode once copied, so no second `fstat` is needed before the copy.
    /// `inNewDirectory`: `dstDir` was made by this batch (nothing stands at the name but
    /// what the batch put there). `hidden`: it is in the hidden directory (the file is
    /// written under its own name).
    private func copyFile(_ p: SyncPath, _ st: stat, fromName: [UInt8]? = nil, in srcDir: Int32, to dstDir: Int32, of targets: DirectoryCache,
                          inNewDirectory: Bool, hidden: Bool = false, deletes: Bool, _ batch: inout Batch, abandon: () -> Bool, record: Record?) {
        let name = p.name
        let sourceName = fromName ?? name
        let old = inNewDirectory ? nil : Self.lstatAt(dstDir, name)
        if let old, (old.st_mode & S_IFMT) == S_IFREG && old.st_size == st.st_size
            && old.st_mtim.tv_sec == st.st_mtim.tv_sec && old.st_mtim.tv_nsec == st.st_mtim.tv_nsec {
            // rsync's quick check: the same size and mtime is the same file.
            setAttributes(of: name, in: dstDir, from: st, current: old, p, &batch)
            record?.add(p, HashedEntry(stat: FileStat(stat: st)))
            return
        }
        var src = withCPath(sourceName) { openat(srcDir, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | clinux_o_noatime) }
        if src < 0 && errno == EPERM { src = withCPath(sourceName) { openat(srcDir, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) } }
        if src < 0 {
            switch errno {
            case ENOENT, ENOTDIR: if deletes { remove(p, targetsOf: dstDir, &batch) }
            case ELOOP: batch.raced = true
            default: batch.fail("cannot read", p, errno)
            }
            return
        }
        defer { Glibc.close(src) }
        // Made with its final permission bits where the umask keeps them (no chmod then);
        // set-id and sticky bits are set after the chown, which would clear them.
        let permissions = st.st_mode & 0o777
        let modeIsFinal = umask.map { st.st_mode & 0o7000 == 0 && permissions & $0 == 0 } ?? false
        guard let out = openOutput(for: name, in: dstDir, nameIsFree: old == nil, hidden: hidden, mode: modeIsFinal ? permissions : 0o600, p, &batch)
        else { return }
        let dst = out.fd
        var copied: Int64 = 0
        var failure: (String, Int32)? = nil
        let hasher = record.flatMap { st.st_size <= Record.hashedCopyLimit ? $0.hasher : nil }
        hasher?.reset()
        switch Self.copyContent(from: src, to: dst, size: Int64(st.st_size), copied: &copied, hasher: hasher, buffer: batch.buffer, abandon: abandon) {
        case .done: break
        case .abandoned: failure = ("stopped while copying", ECANCELED)
        case .readError(let code): failure = ("cannot read", code)
        case .writeError(let code): failure = ("cannot write", code)
        }
        // The file read must be the one seen: a name replaced between the lstat and the
        // open (by a rename over it, say) would put another file's bytes under `st`'s
        // attributes. Then nothing is named, and the batch goes again.
        var after = stat()
        if failure == nil && (fstat(src, &after) != 0 || after.st_ino != st.st_ino || after.st_dev != st.st_dev
                              || (after.st_mode & S_IFMT) != S_IFREG) {
            batch.raced = true
            failure = ("", 0)
        }
        if failure == nil {
            let chown = targets.newFileOwner(dstDir, dst).map { asRoot ? $0.uid != st.st_uid || $0.gid != st.st_gid : $0.gid != st.st_gid } ?? true
            failure = applyOwnerModeTime(dst, st, chown: chown, chmod: !modeIsFinal).map { ("cannot set the attributes of", $0) }
        }
        switch finishOutput(out, name, in: dstDir, existing: old, complete: failure == nil, deletes: deletes, p, &batch) {
        case .named: break
        case .failed(let why): failure = failure ?? why
        case .cannotLink:
            // This system cannot name an unnamed file (no /proc and no CAP_DAC_READ_SEARCH):
            // from now on through a temporary name.
            return copyFile(p, st, fromName: fromName, in: srcDir, to: dstDir, of: targets, inNewDirectory: inNewDirectory, hidden: hidden,
                            deletes: deletes, &batch, abandon: abandon, record: record)
        }
        if let failure {
            if failure.1 != 0 { batch.fail(failure.0, p, failure.1) }
            return
        }
        batch.files += 1
        batch.bytes += copied
        if let record {
            // Acknowledged only if the source is still the version copied (a write during
            // the copy has its own event).
            let before = FileStat(stat: st)
            let same = before.sameVersion(as: FileStat(stat: after)) && copied == Int64(st.st_size)
            record.add(p, HashedEntry(stat: before, content: same ? hasher?.finish() : nil), acked: same)
        }
    }

    private func copySymlink(_ p: SyncPath, _ st: stat, fromName: [UInt8]? = nil, in srcDir: Int32, to dstDir: Int32, hidden: Bool = false,
                             deletes: Bool, _ batch: inout Batch, record: Record?) {
        let name = p.name
        guard let link = Self.readLink(srcDir, fromName ?? name) else {
            if errno == EINVAL { batch.raced = true } else if errno != ENOENT { batch.fail("cannot read", p, errno) }
            return
        }
        let failures = batch.errors.count
        defer {
            if let record, batch.errors.count == failures {
                record.add(p, HashedEntry(stat: FileStat(stat: st), linkTarget: link, content: ContentHash.of(link)))
            }
        }
        let old = hidden ? nil : Self.lstatAt(dstDir, name)
        if let old, (old.st_mode & S_IFMT) == S_IFLNK && Self.readLink(dstDir, name) == link {
            setAttributes(of: name, in: dstDir, from: st, current: old, p, &batch)
            return
        }
        guard let (temp, _) = createTemporary(for: name, in: dstDir, orAsIs: hidden, p, &batch, { tmp in
            withCPath(link) { symlinkat($0, dstDir, tmp) }
        }) else { return }
        finishTemporary(temp, name, st, in: dstDir, existing: old, deletes: deletes, p, &batch)
    }

    /// Devices, fifos and sockets: made again with the source's type and device number.
    private func copySpecial(_ p: SyncPath, _ st: stat, to dstDir: Int32, hidden: Bool, deletes: Bool, _ batch: inout Batch) {
        let name = p.name
        let old = hidden ? nil : Self.lstatAt(dstDir, name)
        if let old, (old.st_mode & S_IFMT) == (st.st_mode & S_IFMT) && old.st_rdev == st.st_rdev {
            setAttributes(of: name, in: dstDir, from: st, current: old, p, &batch)
            return
        }
        guard let (temp, _) = createTemporary(for: name, in: dstDir, orAsIs: hidden, p, &batch, { tmp in
            mknodat(dstDir, tmp, (st.st_mode & S_IFMT) | 0o600, st.st_rdev)
        }) else { return }
        finishTemporary(temp, name, st, in: dstDir, existing: old, deletes: deletes, p, &batch)
    }

    /// Owner, mode and mtime of a made symlink or special file, then the rename over `name`
    /// (none when it was made as `name`, in the hidden directory).
    private func finishTemporary(_ temp: [UInt8], _ name: [UInt8], _ st: stat, in dstDir: Int32, existing: stat?,
                                 deletes: Bool, _ p: SyncPath, _ batch: inout Batch) {
        setAttributes(of: temp, in: dstDir, from: st, current: nil, p, &batch)
        if temp != name { replaceOrRemove(temp, name, in: dstDir, existing: existing, deletes: deletes, p, &batch) }
    }

    // MARK: Deletes

    /// A path missing on the source: deleted on the backup, a directory with its contents.
    private func remove(_ p: SyncPath, _ targets: DirectoryCache, _ batch: inout Batch) {
        let dir = targets.open(p.parent, create: false)
        if dir < 0 { return }   // its directory is not on the backup either
        remove(p, targetsOf: dir, &batch)
    }

    private func remove(_ p: SyncPath, targetsOf dir: Int32, _ batch: inout Batch) {
        switch Self.removeTree(p.name, in: dir) {
        case .success(let n): batch.deleted += n
        case .failure(let e): batch.fail("cannot delete", p, e.code)
        }
    }

    struct Errno: Error { let code: Int32 }

    /// Deletes `name` in `dir`, a directory with everything in it, never following a
    /// symlink; how many entries went.
    static func removeTree(_ name: [UInt8], in dir: Int32) -> Result<Int, Errno> {
        if withCPath(name, { unlinkat(dir, $0, 0) }) == 0 { return .success(1) }
        if errno == ENOENT { return .success(0) }
        guard errno == EISDIR else { return .failure(Errno(code: errno)) }
        let fd = Self.openDirectory(name, in: dir)
        if fd < 0 { return errno == ENOENT ? .success(0) : .failure(Errno(code: errno)) }
        guard let stream = fdopendir(fd) else {
            let code = errno
            Glibc.close(fd)
            return .failure(Errno(code: code))
        }
        let names = directoryNames(stream)
        var count = 0
        var failure: Errno? = nil
        for n in names {
            switch removeTree(n, in: fd) {
            case .success(let k): count += k
            case .failure(let e): failure = failure ?? e
            }
        }
        closedir(stream)
        if let failure { return .failure(failure) }
        if withCPath(name, { unlinkat(dir, $0, AT_REMOVEDIR) }) != 0 && errno != ENOENT { return .failure(Errno(code: errno)) }
        return .success(count + 1)
    }

    // MARK: Inside the backup (the moves and copies the index plans)

    /// Runs `body` with the target's directories at hand (opened beneath its root, never
    /// through a symlink; missing ones made 0755); nil when the root cannot be opened.
    private func inTarget<R>(_ body: (DirectoryCache) -> R) -> R? {
        let root = withCPath(target) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        if root < 0 { return nil }
        defer { Glibc.close(root) }
        return body(DirectoryCache(root: root, newDirectoryMode: 0o755))
    }

    /// rename(2) of `from` to `to` on the backup, `to`'s directories made as needed; nil when
    /// done, else why not.
    func renameInTarget(_ from: SyncPath, _ to: SyncPath) -> String? {
        inTarget { dirs -> String? in
            let a = dirs.open(from.parent)
            guard a >= 0, Self.lstatAt(a, from.name) != nil else { return "not on the backup: \(from)" }
            let b = dirs.open(to.parent, create: true)
            let r = b < 0 ? -1 : withCPath(from.name) { x in withCPath(to.name) { y in renameat(a, x, b, y) } }
            return r == 0 ? nil : "rename \(from) -> \(to) on the backup: \(String(cString: strerror(errno)))"
        } ?? "cannot open the backup \(SyncPath.displayString(target)): \(String(cString: strerror(errno)))"
    }

    /// A copy of the file or symlink `from` to `to` on the backup, through a temporary name,
    /// with `from`'s owner, mode and mtime (`copy_file_range`: a reflink where the
    /// filesystem can). True when made.
    func copyInTarget(_ from: SyncPath, _ to: SyncPath) -> Bool {
        inTarget { dirs -> Bool in
            var batch = Batch()
            let a = dirs.open(from.parent)
            guard a >= 0, let st = Self.lstatAt(a, from.name) else { return false }
            let b = dirs.open(to.parent, create: true)
            guard b >= 0 else { return false }
            switch st.st_mode & S_IFMT {
            case S_IFREG: copyFile(to, st, fromName: from.name, in: a, to: b, of: dirs, inNewDirectory: dirs.madeByThisBatch(to.parent), deletes: false,
                                   &batch, abandon: { false }, record: nil)
            case S_IFLNK: copySymlink(to, st, fromName: from.name, in: a, to: b, deletes: false, &batch, record: nil)
            default: return false
            }
            return batch.errors.isEmpty && !batch.raced && batch.files + (st.st_mode & S_IFMT == S_IFLNK ? 1 : 0) > 0
        } ?? false
    }

    /// Sets `path`'s mtime on the backup (not following a symlink; atime left as it is).
    func setMtimeInTarget(_ path: SyncPath, _ ns: Int64) {
        guard ns >= 0 else { return }
        _ = inTarget { dirs in
            let d = dirs.open(path.parent)
            if d >= 0 { _ = withCPath(path.name) { clinux_set_mtime(d, $0, ns / 1_000_000_000, Int(ns % 1_000_000_000), AT_SYMLINK_NOFOLLOW) } }
        }
    }

    // MARK: Helpers

    private static let serial = Atomic<UInt64>(0)
    /// The process id, in the temporary names (read once: `getpid` is a system call).
    private static let pidBits = UInt64(UInt32(bitPattern: getpid())) << 32

    /// Makes `.name.XXXXXX` in `dir` with `make` (which returns a negative value and errno on
    /// failure); returns its name and what `make` returned. `orAsIs`: `name` itself first
    /// (in the hidden directory, where it is free).
    private func createTemporary(for name: [UInt8], in dir: Int32, orAsIs: Bool = false, _ p: SyncPath, _ batch: inout Batch,
                                 _ make: (UnsafePointer<CChar>) -> Int32) -> ([UInt8], Int32)? {
        if orAsIs {
            let r = withCPath(name) { make($0) }
            if r >= 0 { return (name, r) }
            if errno != EEXIST { batch.fail("cannot create", p, errno); return nil }
        }
        for _ in 0..<100 {
            let n = Self.serial.wrappingAdd(1, ordering: .relaxed).newValue &+ Self.pidBits
            let temp = Self.temporaryName(for: name, suffix: n)
            let r = withCPath(temp) { make($0) }
            if r >= 0 { return (temp, r) }
            if errno != EEXIST { batch.fail("cannot create a temporary file for", p, errno); return nil }
        }
        batch.fail("cannot create a temporary file for", p, EEXIST)
        return nil
    }

    /// Where a copy is written before it takes its name: an unnamed file (`O_TMPFILE`),
    /// linked under the name once complete, where the name is free and the filesystem has
    /// them (one inode made and named once: cheaper than a create and a rename, and a
    /// copy cut short leaves nothing behind); else a temporary `.name.XXXXXX`, renamed over it.
    private struct Output {
        let fd: Int32
        /// Nil for an unnamed file; the name itself in the hidden directory.
        let temp: [UInt8]?
    }

    /// False once the target's filesystem refused an unnamed file, or one could not be linked.
    private let unnamedFiles = Atomic<Bool>(true)

    private func openOutput(for name: [UInt8], in dir: Int32, nameIsFree: Bool, hidden: Bool, mode: mode_t, _ p: SyncPath,
                            _ batch: inout Batch) -> Output? {
        if hidden {
            guard let (made, fd) = createTemporary(for: name, in: dir, orAsIs: true, p, &batch, { n in
                openat(dir, n, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
            }) else { return nil }
            return Output(fd: fd, temp: made)
        }
        if nameIsFree && unnamedFiles.load(ordering: .relaxed) {
            let fd = clinux_open_unnamed(dir, mode)
            if fd >= 0 { return Output(fd: fd, temp: nil) }
            if errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL { unnamedFiles.store(false, ordering: .relaxed) }
        }
        guard let (temp, fd) = createTemporary(for: name, in: dir, p, &batch, { tmp in
            openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        }) else { return nil }
        return Output(fd: fd, temp: temp)
    }

    private enum Finish { case named, failed((String, Int32)), cannotLink }

    /// Closes the output and, when `complete`, gives it `name`: an unnamed file is linked
    /// (through a temporary name and `replace` when the name was taken meanwhile), a
    /// temporary one renamed over it. An output not named is removed. A failure with code
    /// 0 is recorded in `batch` already.
    private func finishOutput(_ out: Output, _ name: [UInt8], in dir: Int32, existing: stat?, complete: Bool,
                              deletes: Bool, _ p: SyncPath, _ batch: inout Batch) -> Finish {
        guard let temp = out.temp else {
            // Only local filesystems have unnamed files, and their close reports nothing.
            defer { Glibc.close(out.fd) }
            guard complete else { return .failed(("", 0)) }   // never named: gone with its descriptor
            if withCPath(name, { clinux_link_unnamed(out.fd, dir, $0) }) == 0 { return .named }
            switch errno {
            case EEXIST:
                guard let (temp, _) = createTemporary(for: name, in: dir, p, &batch, { clinux_link_unnamed(out.fd, dir, $0) }),
                      replaceOrRemove(temp, name, in: dir, existing: nil, deletes: deletes, p, &batch)
                else { return .failed(("", 0)) }
                return .named
            case ENOENT where Self.isDeleted(dir):
                return .failed(("cannot link into place", ENOENT))
            case ENOENT, EPERM, EACCES, EOPNOTSUPP, EXDEV:
                unnamedFiles.store(false, ordering: .relaxed)
                return .cannotLink
            case let e:
                return .failed(("cannot link into place", e))
            }
        }
        let closed = Glibc.close(out.fd) == 0 ? 0 : errno
        if complete && closed == 0 {
            if temp == name { return .named }   // in the hidden directory
            return replaceOrRemove(temp, name, in: dir, existing: existing, deletes: deletes, p, &batch) ? .named : .failed(("", 0))
        }
        _ = withCPath(temp) { unlinkat(dir, $0, 0) }
        return .failed(complete ? ("cannot write", closed) : ("", 0))
    }

    /// `replace`, and the temporary removed when it did not happen.
    @discardableResult
    private func replaceOrRemove(_ temp: [UInt8], _ name: [UInt8], in dir: Int32, existing: stat?, deletes: Bool,
                                 _ p: SyncPath, _ batch: inout Batch) -> Bool {
        if replace(temp, name, in: dir, existing: existing, deletes: deletes, p, &batch) { return true }
        _ = withCPath(temp) { unlinkat(dir, $0, 0) }
        return false
    }

    /// rsync's temporary name: `.name.XXXXXX`, the name cut so the whole fits in 255 bytes.
    static func temporaryName(for name: [UInt8], suffix: UInt64) -> [UInt8] {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
        var s = suffix
        var tail: [UInt8] = [UInt8(ascii: ".")]
        for _ in 0..<6 {
            tail.append(alphabet[Int(s % UInt64(alphabet.count))])
            s /= UInt64(alphabet.count)
        }
        return [UInt8(ascii: ".")] + name.prefix(255 - 8) + tail
    }

    /// Renames the finished temporary over `name`; a directory standing there goes first
    /// (rsync's `--force`, with deletes only). `existing`: what stood at `name` when looked
    /// at; a directory made there since shows as the rename's EISDIR. False when it did not
    /// happen (the error is recorded).
    private func replace(_ temp: [UInt8], _ name: [UInt8], in dir: Int32, existing: stat?, deletes: Bool,
                         _ p: SyncPath, _ batch: inout Batch) -> Bool {
        func rename() -> Int32 {
            withCPath(temp) { a in withCPath(name) { b in renameat(dir, a, dir, b) == 0 ? 0 : errno } }
        }
        if !(existing.map { ($0.st_mode & S_IFMT) == S_IFDIR } ?? false) {
            let e = rename()
            if e == 0 { return true }
            guard e == EISDIR, let st = Self.lstatAt(dir, name), (st.st_mode & S_IFMT) == S_IFDIR else {
                batch.fail("cannot rename into place", p, e)
                return false
            }
        }
        guard deletes else { batch.fail("cannot replace the directory", p, EISDIR); return false }
        switch Self.removeTree(name, in: dir) {
        case .success(let n): batch.deleted += n
        case .failure(let e): batch.fail("cannot replace the directory", p, e.code); return false
        }
        let e = rename()
        if e != 0 { batch.fail("cannot rename into place", p, e); return false }
        return true
    }

    /// Owner (as root; the group alone otherwise, where allowed), then mode (a chown clears
    /// set-id bits), then mtime, on an open file. Nil or the errno that failed.
    private func applyOwnerModeTime(_ fd: Int32, _ st: stat, chown: Bool, chmod: Bool) -> Int32? {
        if chown && asRoot {
            if fchown(fd, st.st_uid, st.st_gid) != 0 { return errno }
        } else if chown {
            _ = fchown(fd, uid_t.max, st.st_gid)
        }
        if chmod && fchmod(fd, st.st_mode & 0o7777) != 0 { return errno }
        if clinux_fset_mtime(fd, Int64(st.st_mtim.tv_sec), st.st_mtim.tv_nsec) != 0 { return errno }
        return nil
    }

    /// Sets what differs of owner, mode (not for symlinks) and mtime on `name` in `dir`,
    /// without following a symlink; everything when `current` is nil (just made).
    private func setAttributes(of name: [UInt8], in dir: Int32, from st: stat, current: stat?,
                               _ p: SyncPath, _ batch: inout Batch) {
        let isLink = (st.st_mode & S_IFMT) == S_IFLNK
        let ownerDiffers = current.map { $0.st_uid != st.st_uid || $0.st_gid != st.st_gid } ?? true
        let modeDiffers = current.map { $0.st_mode & 0o7777 != st.st_mode & 0o7777 } ?? true
        let mtimeDiffers = current.map { $0.st_mtim.tv_sec != st.st_mtim.tv_sec || $0.st_mtim.tv_nsec != st.st_mtim.tv_nsec } ?? true
        withCPath(name) { n in
            if ownerDiffers {
                if asRoot {
                    if fchownat(dir, n, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0 { batch.fail("cannot set the owner of", p, errno) }
                } else {
                    _ = fchownat(dir, n, uid_t.max, st.st_gid, AT_SYMLINK_NOFOLLOW)
                }
            }
            // After a chown, which clears set-id bits.
            if !isLink && (modeDiffers || ownerDiffers) {
                if fchmodat(dir, n, st.st_mode & 0o7777, 0) != 0 { batch.fail("cannot set the mode of", p, errno) }
            }
            if mtimeDiffers {
                if clinux_set_mtime(dir, n, Int64(st.st_mtim.tv_sec), st.st_mtim.tv_nsec, AT_SYMLINK_NOFOLLOW) != 0 {
                    batch.fail("cannot set the mtime of", p, errno)
                }
            }
        }
    }

    /// The directories' attributes, deepest first (setting a parent's mtime before its
    /// children are done would be undone by them).
    private func setDirectoryAttributes(_ directories: Set<SyncPath>, _ sources: DirectoryCache, _ targets: DirectoryCache,
                                        _ batch: inout Batch) {
        for d in directories.sorted(by: { $0.components.count != $1.components.count ? $0.components.count > $1.components.count : $0 < $1 }) {
            if d.isRoot {
                var st = stat(), old = stat()
                guard fstat(sources.root, &st) == 0, fstat(targets.root, &old) == 0 else { continue }
                if asRoot, old.st_uid != st.st_uid || old.st_gid != st.st_gid { _ = fchown(targets.root, st.st_uid, st.st_gid) }
                if old.st_mode & 0o7777 != st.st_mode & 0o7777 { _ = fchmod(targets.root, st.st_mode & 0o7777) }
                if old.st_mtim.tv_sec != st.st_mtim.tv_sec || old.st_mtim.tv_nsec != st.st_mtim.tv_nsec {
                    _ = clinux_fset_mtime(targets.root, Int64(st.st_mtim.tv_sec), st.st_mtim.tv_nsec)
                }
                continue
            }
            let name = d.name
            let srcDir = sources.open(d.parent), dstDir = targets.open(d.parent, create: false)
            guard srcDir >= 0, dstDir >= 0,
                  let st = Self.lstatAt(srcDir, name), (st.st_mode & S_IFMT) == S_IFDIR,
                  let old = Self.lstatAt(dstDir, name), (old.st_mode & S_IFMT) == S_IFDIR
            else { continue }   // changed since: its events follow
            setAttributes(of: name, in: dstDir, from: st, current: old, d, &batch)
        }
    }

    enum CopyResult: Equatable { case done, abandoned, readError(Int32), writeError(Int32) }

    /// Copies `size` bytes (the size `src` had when it was looked at, as rsync sends) from
    /// `src` to `dst`, both at offset 0, or less if `src` ends sooner: with
    /// `copy_file_range`, or read/write where the kernel cannot (another filesystem type).
    static func copyContent(from src: Int32, to dst: Int32, size: Int64, copied: inout Int64, hasher: ContentHasher? = nil,
                            buffer: CopyBuffer, abandon: () -> Bool) -> CopyResult {
        let chunk: Int64 = 8 << 20
        // Hashed on the way: through a buffer, where the kernel's copy would skip it.
        var kernelCopy = hasher == nil
        while copied < size {
            if copied > 0, abandon() { return .abandoned }
            let want = Int(min(chunk, size - copied))
            if kernelCopy {
                let n = clinux_copy_file_range(src, dst, want)
                if n > 0 { copied += Int64(n); continue }
                if n == 0 { return .done }
                if errno == EINTR { continue }
                if [EXDEV, EINVAL, ENOSYS, EOPNOTSUPP].contains(errno) && copied == 0 { kernelCopy = false; continue }
                // EIO and the like: which side? The read/write loop below tells.
                if errno == ENOSPC || errno == EDQUOT || errno == EFBIG { return .writeError(errno) }
                kernelCopy = false
                continue
            }
            let base = buffer.pointer
            let n = read(src, base, min(want, CopyBuffer.size))
            if n == 0 { return .done }
            if n < 0 { if errno == EINTR { continue }; return .readError(errno) }
            hasher?.update(UnsafeRawBufferPointer(start: base, count: n))
            var off = 0
            while off < n {
                let w = write(dst, base + off, n - off)
                if w < 0 { if errno == EINTR { continue }; return .writeError(errno) }
                off += w
            }
            copied += Int64(n)
        }
        return .done
    }

    /// What `name` in `dir` is, without following a symlink; nil with errno when it cannot
    /// be looked at (gone, most often).
    static func lstatAt(_ dir: Int32, _ name: [UInt8]) -> stat? {
        var st = stat()
        return withCPath(name, { fstatat(dir, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 ? st : nil
    }

    /// The directory `name` in `dir`, opened without following a symlink; -1 with errno.
    static func openDirectory(_ name: [UInt8], in dir: Int32) -> Int32 {
        withCPath(name) { openat(dir, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    }

    /// True when the open directory `dir` was deleted.
    static func isDeleted(_ dir: Int32) -> Bool {
        var st = stat()
        return fstat(dir, &st) == 0 && st.st_nlink == 0
    }

    /// A symlink's target, or nil with errno.
    static func readLink(_ dir: Int32, _ name: [UInt8]) -> [UInt8]? {
        var size = 256
        while true {
            var buf = [UInt8](repeating: 0, count: size)
            let n = withCPath(name) { p in buf.withUnsafeMutableBytes { readlinkat(dir, p, $0.baseAddress!.assumingMemoryBound(to: CChar.self), size) } }
            if n < 0 { return nil }
            if n < size { return Array(buf.prefix(n)) }
            size *= 4
        }
    }
}

/// A read/write buffer allocated on first use and kept for a batch (an allocation of this
/// size is an mmap and a munmap each time).
final class CopyBuffer {
    static let size = 256 << 10
    private var storage: UnsafeMutableRawPointer? = nil
    var pointer: UnsafeMutableRawPointer {
        if let storage { return storage }
        let p = UnsafeMutableRawPointer.allocate(byteCount: Self.size, alignment: 4096)
        storage = p
        return p
    }
    deinit { storage?.deallocate() }
}

/// Open directories beneath a root, by relative path, never through a symlink; the last
/// few stay open (a sorted batch visits one directory after another).
private final class DirectoryCache {
    let root: Int32
    /// Ignore marks on the directories while they are open here (a backup's, see `OwnWrites`).
    private let quiet: OwnWrites?
    private var open: [SyncPath: Int32] = [:]
    private var order: [SyncPath] = []
    /// The last directory asked for (a sorted batch asks for the same one path after path):
    /// compared, not hashed.
    private var last: (dir: SyncPath, fd: Int32)? = nil
    /// The errno of the last failed `open`.
    private(set) var lastError: Int32 = 0
    /// The owner and group a file made in an open directory gets (the process's, or the
    /// directory's group where it is set-group-ID or the mount says so), learnt from the
    /// first file made there.
    private var newFileOwners: [Int32: (uid: uid_t, gid: gid_t)] = [:]
    /// Directories this cache made (empty then: what is in them is what its batch put there,
    /// each path once).
    private var made = Set<SyncPath>()
    /// A directory the batch made under a temporary name, open, with what the batch
    /// writes in it (see `LocalCopier.makeDirectory`); its paths are opened beneath it.
    struct Hidden {
        let path: SyncPath
        let temp: [UInt8]
        let fd: Int32
    }
    private(set) var hidden: Hidden? = nil
    private static let capacity = 8
    /// Mode of the directories `open(_:create:)` makes (0700 in a batch: their attributes
    /// are set from the source at its end).
    private let newDirectoryMode: mode_t

    init(root: Int32, newDirectoryMode: mode_t = 0o700, quiet: OwnWrites? = nil) {
        self.root = root
        self.newDirectoryMode = newDirectoryMode
        self.quiet = quiet
        quiet?.quiet(root)
    }

    /// Closes what is open (not the root) and lifts the ignore marks.
    func close() {
        if let h = unhide() { release(h.fd) }
        for fd in open.values { release(fd) }
        open.removeAll()
        order.removeAll()
        quiet?.resume(root)
    }

    deinit {
        for fd in open.values { release(fd) }
        if let hidden { release(hidden.fd) }
    }

    /// True when `dir` is the hidden directory or inside it.
    func isHidden(_ dir: SyncPath) -> Bool { hidden.map { dir.isInside($0.path) } ?? false }

    /// `path` was just made as `temp` (open as `fd`, which the cache now owns) in its
    /// parent; what is beneath `path` is opened there until `unhide()`.
    func hide(_ path: SyncPath, temp: [UInt8], fd: Int32) {
        precondition(hidden == nil)
        quiet?.quiet(fd)
        hidden = Hidden(path: path, temp: temp, fd: fd)
        made.insert(path)
    }

    /// Ends the hidden directory, before it is named: what was open beneath it is closed
    /// and nothing in it counts as made (a merge may bring other entries in). The caller
    /// names it, then `release`s its descriptor.
    func unhide() -> Hidden? {
        guard let h = hidden else { return nil }
        hidden = nil
        if last?.fd == h.fd { last = nil }
        for dir in order where dir.isInside(h.path) {
            if let fd = open.removeValue(forKey: dir) { release(fd) }
        }
        order.removeAll { open[$0] == nil }
        made = made.filter { !$0.isInside(h.path) }
        return h
    }
    /// True when `dir` was made by this cache's batch (`open(_:create:)` or `made(_:)`).
    func madeByThisBatch(_ dir: SyncPath) -> Bool { !made.isEmpty && made.contains(dir) }

    /// `dir` was just made by the batch.
    func made(_ dir: SyncPath) { made.insert(dir) }

    /// The owner `file`, just made in `dir`, was given; nil when unknown.
    func newFileOwner(_ dir: Int32, _ file: Int32) -> (uid: uid_t, gid: gid_t)? {
        if let known = newFileOwners[dir] { return known }
        var st = stat()
        guard fstat(file, &st) == 0 else { return nil }
        newFileOwners[dir] = (st.st_uid, st.st_gid)
        return (st.st_uid, st.st_gid)
    }

    func release(_ fd: Int32) {
        if last?.fd == fd { last = nil }
        newFileOwners[fd] = nil
        quiet?.resume(fd)
        Glibc.close(fd)
    }

    /// The directory's descriptor, or -1 (`lastError` says why). With `create`, missing
    /// directories are made (mode 0700 until their attributes are set), and whatever
    /// stands where one should be (a file, a symlink) is replaced.
    func open(_ dir: SyncPath, create: Bool = false) -> Int32 {
        if dir.isRoot { return root }
        if let last, last.dir == dir { return last.fd }
        if let fd = open[dir] {
            last = (dir, fd)
            return fd
        }
        // Beneath the hidden directory, or the root.
        var base = (fd: root, path: SyncPath.root)
        if let h = hidden, dir.isInside(h.path) {
            if dir == h.path {
                last = (dir, h.fd)
                return h.fd
            }
            base = (h.fd, h.path)
        }
        let relative = dir.rebased(from: base.path, to: .root)!
        var fd = withCPath(relative.bytes) { clinux_open_beneath_nofollow(base.fd, $0, O_RDONLY | O_DIRECTORY) }
        if fd < 0 {
            lastError = errno
            guard create, lastError == ENOENT || lastError == ENOTDIR || lastError == ELOOP else { return -1 }
            fd = make(relative, beneath: base)
            if fd < 0 { return -1 }
        }
        if order.count >= Self.capacity {
            let old = order.removeFirst()
            if let f = open.removeValue(forKey: old) { release(f) }
        }
        quiet?.quiet(fd)
        open[dir] = fd
        order.append(dir)
        last = (dir, fd)
        return fd
    }

    /// Walks `dir` from `base` (the root or the hidden directory), making what is missing
    /// and replacing what is not a directory.
    private func make(_ dir: SyncPath, beneath base: (fd: Int32, path: SyncPath)) -> Int32 {
        var current = base.fd
        var path = base.path
        for component in dir.components {
            let name = Array(component)
            path = path.appending(name)
            var next = LocalCopier.openDirectory(name, in: current)
            if next < 0 && (errno == ENOTDIR || errno == ELOOP) {
                // A file or a symlink where the source has a directory.
                if withCPath(name, { unlinkat(current, $0, 0) }) != 0 && errno != ENOENT { return fail(current, base.fd) }
                next = -1
                errno = ENOENT
            }
            if next < 0 && errno == ENOENT {
                if withCPath(name, { mkdirat(current, $0, newDirectoryMode) }) == 0 {
                    made.insert(path)
                } else if errno != EEXIST {
                    return fail(current, base.fd)
                }
                next = LocalCopier.openDirectory(name, in: current)
            }
            if next < 0 { return fail(current, base.fd) }
            if current != base.fd { Glibc.close(current) }
            current = next
        }
        return current
    }

    private func fail(_ current: Int32, _ base: Int32) -> Int32 {
        lastError = errno
        if current != base { Glibc.close(current) }
        return -1
    }
}

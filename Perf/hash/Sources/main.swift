// fansync-hashbench: hash throughput of the io_uring reader, the plain read loop and
// `xxhsum -H2`, warm cache, median of several runs; and the chunk-size measurement.
//
//   fansync-hashbench prepare DIR          make DIR/big (2 GiB) and DIR/small/ (100,000 files)
//   fansync-hashbench run DIR [RUNS]       readers vs xxhsum on both sets (default 5 runs)
//   fansync-hashbench chunks [MiB]         ContentHasher throughput per chunk size, in memory
//   fansync-hashbench buffers DIR          io_uring reader: buffer size and count on DIR/big
//   fansync-hashbench index FILE [N]       the SQLite index with N entries (default 1,000,000)
//   fansync-hashbench walk DIR [N...]      TreeWalker vs `find -printf` on N files in N/10
//                                          directories under DIR (a tmpfs; default 100,000 and
//                                          1,000,000), median of 3, peak RSS
//   fansync-hashbench walktree DIR N       only make (or find) the tree of N files under DIR
//   fansync-hashbench walkonce DIR THREADS uring|plain   one walk of DIR, timed (for cold
//                                          runs: remount DIR's filesystem before each)
//
// Names are passed to xxhsum as argv entries (posix_spawn), never through a shell.
import CLinux
import FanSync
import Glibc

func fail(_ message: String) -> Never {
    let text = Array("fansync-hashbench: \(message)\n".utf8)
    _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

func now() -> Double { monotonicNow() }

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func bytesOf(_ s: String) -> [UInt8] { Array(s.utf8) }

func writeFile(_ path: String, _ data: UnsafeRawBufferPointer) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if fd < 0 { fail("create \(path): \(String(cString: strerror(errno)))") }
    var off = 0
    while off < data.count {
        let n = write(fd, data.baseAddress! + off, data.count - off)
        if n <= 0 { fail("write \(path): \(String(cString: strerror(errno)))") }
        off += n
    }
    close(fd)
}

struct Rng {
    var x: UInt64
    mutating func next() -> UInt64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
}

func fill(_ buf: UnsafeMutableRawBufferPointer, seed: UInt64) {
    var r = Rng(x: seed | 1)
    let words = buf.bindMemory(to: UInt64.self)
    for i in 0..<words.count { words[i] = r.next() }
}

let smallCount = 100_000
let bigSize = 2 << 30

func smallPaths(_ dir: String) -> [[UInt8]] {
    (0..<smallCount).map { bytesOf("\(dir)/small/d\($0 % 100)/f\($0)") }
}

func prepare(_ dir: String) {
    mkdir(dir, 0o755)
    mkdir(dir + "/small", 0o755)
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 20, alignment: 4096)
    defer { buf.deallocate() }
    fill(buf, seed: 42)
    var st = stat()
    if stat(dir + "/big", &st) != 0 || Int(st.st_size) != bigSize {
        let fd = open(dir + "/big", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { fail("create big: \(String(cString: strerror(errno)))") }
        for i in 0..<(bigSize / buf.count) {
            buf.storeBytes(of: UInt64(i), toByteOffset: 0, as: UInt64.self)
            if write(fd, buf.baseAddress, buf.count) != buf.count { fail("write big: \(String(cString: strerror(errno)))") }
        }
        close(fd)
    }
    for d in 0..<100 { mkdir("\(dir)/small/d\(d)", 0o755) }
    // Sizes 0 ... 16 KiB, mean about 6 KiB (a source tree, configs, small JSON and logs).
    var r = Rng(x: 7)
    var total = 0
    for (i, p) in smallPaths(dir).enumerated() {
        let size = Int(r.next() % 3 == 0 ? r.next() % 1024 : r.next() % (16 << 10))
        writeFile(String(decoding: p, as: UTF8.self), UnsafeRawBufferPointer(rebasing: buf[(i * 64 % (32 << 20))..<(i * 64 % (32 << 20) + size)]))
        total += size
    }
    print("prepared \(dir)/big (\(bigSize >> 20) MiB) and \(smallCount) small files (\(total >> 20) MiB)")
}

/// Runs `body` `runs` times after one warm-up; returns the median seconds.
func measure(_ runs: Int, _ body: () -> Void) -> (median: Double, all: [Double]) {
    body()
    var times: [Double] = []
    for _ in 0..<runs {
        let t0 = now()
        body()
        times.append(now() - t0)
    }
    return (median(times), times)
}

func hashAll(_ hasher: FileHasher, _ paths: [[UInt8]], batch: Int = 4096) -> Hash128 {
    var acc = Hash128(high: 0, low: 0)
    var i = 0
    while i < paths.count {
        let slice = Array(paths[i..<min(i + batch, paths.count)])
        for r in hasher.hash(slice) {
            switch r {
            case .success(let e): acc = Hash128(high: acc.high ^ (e.content?.whole.high ?? 0), low: acc.low &+ (e.content?.whole.low ?? 0))
            case .failure(let e): fail("\(e)")
            }
        }
        i += batch
    }
    return acc
}

func xxhsumAll(_ paths: [[UInt8]]) -> [String] {
    var lines: [String] = []
    var i = 0
    while i < paths.count {
        let slice = Array(paths[i..<min(i + 4000, paths.count)])
        guard let r = try? Subprocess.run([bytesOf("xxhsum"), bytesOf("-H2")] + slice), r.status == 0 else { fail("xxhsum failed") }
        lines.append(contentsOf: r.outputText.split(separator: "\n").map { String($0.prefix(32)) })
        i += 4000
    }
    return lines
}

// Number formatting without Foundation.
func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func fixed(_ x: Double, _ digits: Int) -> String {
    let p = pow(10.0, Double(digits))
    let v = (x * p).rounded() / p
    var s = "\(v)"
    if let dot = s.firstIndex(of: ".") {
        let dec = s.distance(from: dot, to: s.endIndex) - 1
        if dec < digits { s += String(repeating: "0", count: digits - dec) }
    } else if digits > 0 { s += "." + String(repeating: "0", count: digits) }
    return s
}
func line(_ label: String, bytes: Int, files: Int, _ m: (median: Double, all: [Double])) {
    let runs = m.all.map { fixed($0, 3) }.joined(separator: " ")
    print("  \(pad(label, 34)) median \(fixed(m.median, 3)) s  \(fixed(Double(bytes) / m.median / 1e9, 2)) GB/s  \(Int(Double(files) / m.median)) files/s   runs: \(runs)")
}

func totalSize(_ paths: [[UInt8]]) -> Int {
    var total = 0
    for p in paths {
        var st = stat()
        if withUnsafeTemporaryAllocation(of: CChar.self, capacity: p.count + 1, { b in
            for (i, c) in p.enumerated() { b[i] = CChar(bitPattern: c) }
            b[p.count] = 0
            return stat(b.baseAddress!, &st)
        }) == 0 { total += Int(st.st_size) }
    }
    return total
}

/// Drops our own files' pages from the page cache (POSIX_FADV_DONTNEED): a cold read of
/// the content without touching anybody else's cache. Inodes and dentries stay cached.
func evict(_ paths: [[UInt8]]) {
    for p in paths {
        let fd = withUnsafeTemporaryAllocation(of: CChar.self, capacity: p.count + 1) { b -> Int32 in
            for (i, c) in p.enumerated() { b[i] = CChar(bitPattern: c) }
            b[p.count] = 0
            return open(b.baseAddress!, O_RDONLY | O_CLOEXEC)
        }
        if fd >= 0 {
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
            close(fd)
        }
    }
}

/// Like `measure`, evicting `paths` before every run (not timed).
func measureCold(_ runs: Int, _ paths: [[UInt8]], _ body: () -> Void) -> (median: Double, all: [Double]) {
    var times: [Double] = []
    for _ in 0..<runs {
        evict(paths)
        let t0 = now()
        body()
        times.append(now() - t0)
    }
    return (median(times), times)
}

func run(_ dir: String, runs: Int) {
    let uring: UringReader
    do { uring = try UringReader() } catch { fail("io_uring: \(error)") }
    let plain = PlainReader()
    let big = [bytesOf(dir + "/big")]
    let small = smallPaths(dir)
    let smallBytes = totalSize(small)
    print("io_uring reader: \(uring.backendName), \(uring.bufferCount) x \(uring.bufferSize >> 10) KiB buffers, \(uring.slotCount) files in flight; chunk \(uring.chunkSize >> 20) MiB")

    // The three must agree before their speed means anything.
    let a = try! uring.hash(big)[0].get().content!.whole, b = try! plain.hash(big)[0].get().content!.whole
    let c = xxhsumAll(big)[0]
    guard a == b, a.hex == c else { fail("hashes differ on big: \(a) \(b) \(c)") }
    let xs = xxhsumAll(Array(small.prefix(2000)))
    for (i, r) in uring.hash(Array(small.prefix(2000))).enumerated() where (try! r.get().content!.whole.hex) != xs[i] {
        fail("hash differs from xxhsum on \(String(decoding: small[i], as: UTF8.self))")
    }

    print("2 GiB file (\(bigSize >> 20) MiB), warm cache, \(runs) runs:")
    line("io_uring reader", bytes: bigSize, files: 1, measure(runs) { _ = hashAll(uring, big) })
    line("plain read loop (1 MiB reads)", bytes: bigSize, files: 1, measure(runs) { _ = hashAll(plain, big) })
    line("xxhsum -H2", bytes: bigSize, files: 1, measure(runs) { _ = xxhsumAll(big) })

    print("\(smallCount) small files (\(smallBytes >> 20) MiB), warm cache, \(runs) runs (batches of 4096 paths):")
    line("io_uring reader", bytes: smallBytes, files: smallCount, measure(runs) { _ = hashAll(uring, small) })
    line("plain read loop", bytes: smallBytes, files: smallCount, measure(runs) { _ = hashAll(plain, small) })
    line("xxhsum -H2 (25 spawns of 4000)", bytes: smallBytes, files: smallCount, measure(runs) { _ = xxhsumAll(small) })

    let cold = max(3, runs / 2)
    print("Cold content (our files' pages dropped with POSIX_FADV_DONTNEED before each run; metadata cached), \(cold) runs:")
    line("2 GiB: io_uring reader", bytes: bigSize, files: 1, measureCold(cold, big) { _ = hashAll(uring, big) })
    line("2 GiB: plain read loop", bytes: bigSize, files: 1, measureCold(cold, big) { _ = hashAll(plain, big) })
    line("2 GiB: xxhsum -H2", bytes: bigSize, files: 1, measureCold(cold, big) { _ = xxhsumAll(big) })
    line("small: io_uring reader", bytes: smallBytes, files: smallCount, measureCold(cold, small) { _ = hashAll(uring, small) })
    line("small: plain read loop", bytes: smallBytes, files: smallCount, measureCold(cold, small) { _ = hashAll(plain, small) })
    line("small: xxhsum -H2", bytes: smallBytes, files: smallCount, measureCold(cold, small) { _ = xxhsumAll(small) })
}

func chunks(_ mib: Int) {
    let size = mib << 20
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    defer { buf.deallocate() }
    fill(buf, seed: 3)
    print("ContentHasher on \(mib) MiB in memory, fed in 1 MiB pieces (whole-file + per-chunk XXH3-128):")
    for chunk in [64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20, Int.max >> 1] {
        let h = ContentHasher(chunkSize: chunk)
        let m = measure(5) {
            h.reset()
            var off = 0
            while off < size {
                h.update(UnsafeRawBufferPointer(rebasing: buf[off..<min(off + (1 << 20), size)]))
                off += 1 << 20
            }
            _ = h.finish()
        }
        let label = chunk == Int.max >> 1 ? "one chunk (whole only)" : "chunk \(chunk >> 10) KiB"
        let perTB = chunk == Int.max >> 1 ? 0 : (1 << 40) / chunk * 16
        line(label + ", \(perTB >> 20) MiB/TiB", bytes: size, files: 1, m)
    }
}

func buffers(_ dir: String) {
    let big = [bytesOf(dir + "/big")]
    print("io_uring reader on the 2 GiB file by buffer size x count (warm cache, 3 runs):")
    for (size, count) in [(128 << 10, 16), (256 << 10, 16), (512 << 10, 16), (1 << 20, 4), (1 << 20, 16), (1 << 20, 64), (4 << 20, 16)] {
        guard let r = try? UringReader(bufferSize: size, bufferCount: count, maxReadsPerFile: count) else { fail("io_uring") }
        line("\(size >> 10) KiB x \(count)", bytes: bigSize, files: 1, measure(3) { _ = hashAll(r, big) })
    }
    for size in [128 << 10, 1 << 20, 4 << 20] {
        let p = PlainReader(bufferSize: size)
        line("plain, \(size >> 10) KiB reads", bytes: bigSize, files: 1, measure(3) { _ = hashAll(p, big) })
    }
}

func tune(_ dir: String) {
    let big = [bytesOf(dir + "/big")]
    print("io_uring reader on the 2 GiB file: buffer size x count, reads inline or punted to io-wq (warm cache, 5 runs):")
    for round in 0..<2 {
        for (size, count, punt) in [(256 << 10, 16, false), (256 << 10, 16, true), (512 << 10, 16, true), (1 << 20, 16, false), (1 << 20, 16, true)] {
            guard let r = try? UringReader(bufferSize: size, bufferCount: count, maxReadsPerFile: count, asyncReads: punt) else { fail("io_uring") }
            line("[\(round)] \(size >> 10) KiB x \(count)\(punt ? " punted" : " inline")", bytes: bigSize, files: 1, measure(5) { _ = hashAll(r, big) })
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

func maxRSSMiB() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}

/// The index at scale: fill, reopen with the integrity check, stream, look up; peak RSS.
func indexBench(_ file: String, _ n: Int, inPathOrder: Bool) {
    func name(_ i: Int) -> SyncPath {
        if inPathOrder {
            // d00000/f000 … : the order a tree walk produces.
            return SyncPath("d\(String(i / 1000).leftPad(6))/file-\(String(i % 1000).leftPad(3)).bin")
        }
        return SyncPath("d\(i % 1000)/s\(i % 97)/file-\(i).bin")
    }
    unlink(file); unlink(file + "-wal"); unlink(file + "-shm")
    print("index of \(n) entries inserted in \(inPathOrder ? "path order (as a walk gives them)" : "scattered order") at \(file) (RSS before: \(fixed(maxRSSMiB(), 1)) MiB)")
    var t0 = now()
    do {
        let index = try Index(file: file)
        var batch: [IndexEntry] = []
        batch.reserveCapacity(10_000)
        for i in 0..<n {
            let h = Hash128(high: UInt64(i) &* 0x9E37_79B9_7F4A_7C15, low: UInt64(i))
            batch.append(IndexEntry(path: name(i), kind: .regular,
                                    size: UInt64(i), mtimeNs: 1_700_000_000_000_000_000 + Int64(i), ino: UInt64(i), dev: 2049,
                                    mode: 0o100644, wholeHash: h, chunkHashes: h.bytes, acked: true))
            if batch.count == 10_000 {
                try index.upsert(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
        try index.upsert(batch)
        try index.checkpoint()
        print("  upsert in batches of 10,000: \(fixed(now() - t0, 2)) s (\(Int(Double(n) / (now() - t0))) entries/s), RSS \(fixed(maxRSSMiB(), 1)) MiB")
    } catch { fail("\(error)") }
    var st = stat()
    stat(file, &st)
    print("  file size: \(Int(st.st_size) >> 20) MiB (\(Int(st.st_size) / n) bytes per entry)")
    for check in [Index.IntegrityCheck.full, .quick] {
        t0 = now()
        guard let index = try? Index(file: file, check: check) else { fail("reopen") }
        print("  open with \(check == .full ? "integrity_check" : "quick_check"): \(fixed(now() - t0, 2)) s, RSS \(fixed(maxRSSMiB(), 1)) MiB")
        _ = index
    }
    guard let index = try? Index(file: file, check: .none) else { fail("reopen") }
    t0 = now()
    var count = 0
    let walk = index.entries()
    for e in walk { count += Int(e.size & 1) &+ 1 - Int(e.size & 1) }
    if let e = walk.error { fail("\(e)") }
    print("  stream all in path order: \(fixed(now() - t0, 2)) s (\(Int(Double(count) / (now() - t0))) entries/s), RSS \(fixed(maxRSSMiB(), 1)) MiB")
    t0 = now()
    var r = Rng(x: 99)
    for _ in 0..<10_000 {
        let i = Int(r.next() % UInt64(n))
        guard (try? index.lookup(name(i))) != nil else { fail("lookup") }
        let h = Hash128(high: UInt64(i) &* 0x9E37_79B9_7F4A_7C15, low: UInt64(i))
        guard (try? index.paths(withHash: h))?.count == 1 else { fail("paths(withHash:)") }
    }
    print("  10,000 lookups by path + by hash: \(fixed(now() - t0, 2)) s; peak RSS \(fixed(maxRSSMiB(), 1)) MiB")
}

func smallOnly(_ dir: String) {
    let small = smallPaths(dir)
    for slots in [32, 64, 128] {
        guard let u = try? UringReader(slotCount: slots) else { fail("io_uring") }
        line("io_uring, \(slots) files in flight", bytes: 0, files: smallCount, measure(3) { _ = hashAll(u, small) })
    }
    line("plain", bytes: 0, files: smallCount, measure(3) { _ = hashAll(PlainReader(), small) })
}

// MARK: - Tree walk

/// DIR/walk-N: N files in N/10 directories of 10, grouped 100 directories to a group
/// (g0000/d000000/f0000000). Files are sparse (`ftruncate` to 0 ... 9,999 bytes): sizes to
/// stat without a page of tmpfs each. Reused when its marker file exists.
func makeWalkTree(_ dir: String, _ n: Int) -> (path: String, entries: Int) {
    let base = "\(dir)/walk-\(n)"
    let dirs = max(1, n / 10), groups = max(1, (dirs + 99) / 100)
    let entries = n + dirs + groups
    var st = stat()
    if stat(base + "/.complete", &st) == 0 { return (base, entries + 1) }
    let t0 = now()
    mkdir(base, 0o755)
    for g in 0..<groups { mkdir(base + "/g" + String(g).leftPad(4), 0o755) }
    for d in 0..<dirs { mkdir(base + "/g" + String(d / 100).leftPad(4) + "/d" + String(d).leftPad(6), 0o755) }
    for i in 0..<n {
        let d = i % dirs
        let path = base + "/g" + String(d / 100).leftPad(4) + "/d" + String(d).leftPad(6) + "/f" + String(i).leftPad(7)
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { fail("create \(path): \(String(cString: strerror(errno)))") }
        ftruncate(fd, off_t(i % 10_000))
        close(fd)
    }
    writeFile(base + "/.complete", UnsafeRawBufferPointer(start: nil, count: 0))
    print("  made \(base): \(n) files in \(dirs) directories (\(groups) groups) in \(fixed(now() - t0, 1)) s")
    return (base, entries + 1)
}

/// Runs a program with stdout on /dev/null (no shell); returns its exit status.
func spawnQuiet(_ argv: [String]) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for p in cArgs { free(p) } }
    var pid = pid_t()
    guard posix_spawnp(&pid, argv[0], &actions, nil, &cArgs, environ) == 0 else { fail("spawn \(argv[0])") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}

/// User + system CPU seconds of this process (every thread, io_uring's io-wq workers
/// included: they belong to the process) or of its waited-for children.
func cpuSeconds(_ who: __rusage_who = RUSAGE_SELF) -> Double {
    var u = rusage()
    getrusage(who.rawValue, &u)
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
}

/// Consumes a walk as the daemon's comparison would: every entry looked at, in order.
func walkOnce(_ root: String, threads: Int, backend: TreeWalker.Backend) -> (entries: Int, errors: Int, backends: Set<String>) {
    let errors = Monitor(0)
    let walker = TreeWalker(source: bytesOf(root), threads: threads, backend: backend,
                            onError: { _, _ in errors.withLock { $0 += 1 } })
    var count = 0
    var sizes: UInt64 = 0
    var previous: SyncPath?
    for entry in walker {
        if let previous, !(previous < entry.path) { fail("out of order: \(entry.path) after \(previous)") }
        previous = entry.path
        count += 1
        sizes &+= entry.stat.size
    }
    return (count, errors.withLock { $0 }, walker.backendsUsed)
}

func walkBench(_ dir: String, _ counts: [Int]) {
    var fs = statfs()
    if statfs(dir, &fs) != 0 { fail("statfs \(dir): \(String(cString: strerror(errno)))") }
    if fs.f_type != 0x0102_1994 { print("note: \(dir) is not a tmpfs (f_type \(fs.f_type)); figures include the disk") }
    for n in counts {
        let (root, expected) = makeWalkTree(dir, n)
        let rssBefore = maxRSSMiB()
        print("\(n) files in \(n / 10) directories (\(expected) entries) at \(root), median of 3 after a warm-up; peak RSS before walking \(fixed(rssBefore, 1)) MiB:")
        for backend in [TreeWalker.Backend.automatic, .plain] {
            for threads in [1, 2, 4] {
                var result = (entries: 0, errors: 0, backends: Set<String>())
                let cpu0 = cpuSeconds()
                let m = measure(3) { result = walkOnce(root, threads: threads, backend: backend) }
                let cpu = (cpuSeconds() - cpu0) / 4  // the warm-up and 3 runs
                if result.entries != expected || result.errors != 0 {
                    fail("walk gave \(result.entries) entries (expected \(expected)), \(result.errors) errors")
                }
                let label = "TreeWalker \(backend == .plain ? "plain statx" : result.backends.sorted().joined(separator: "+")), \(threads) thread\(threads == 1 ? "" : "s")"
                line(label, bytes: 0, files: expected, m)
                print("  \(pad("", 34)) CPU \(fixed(cpu, 2)) s per walk (all threads, io-wq included); peak RSS \(fixed(maxRSSMiB(), 1)) MiB (+\(fixed(maxRSSMiB() - rssBefore, 1)))")
            }
        }
        let children0 = cpuSeconds(RUSAGE_CHILDREN)
        let find = measure(3) {
            if spawnQuiet(["find", root, "-printf", "%s %T@ %i\n"]) != 0 { fail("find failed") }
        }
        line("find -printf '%s %T@ %i\\n'", bytes: 0, files: expected, find)
        print("  \(pad("", 34)) CPU \(fixed((cpuSeconds(RUSAGE_CHILDREN) - children0) / 4, 2)) s per walk")
    }
}

let args = CommandLine.arguments
guard args.count >= 2 else { fail("usage: fansync-hashbench prepare DIR | run DIR [RUNS] | chunks [MiB] | buffers DIR | index FILE [N] | walk DIR [N...] | walktree DIR N | walkonce DIR THREADS uring|plain") }
switch args[1] {
case "prepare" where args.count == 3: prepare(args[2])
case "run" where args.count >= 3: run(args[2], runs: args.count > 3 ? Int(args[3]) ?? 5 : 5)
case "chunks": chunks(args.count > 2 ? Int(args[2]) ?? 1024 : 1024)
case "buffers" where args.count == 3: buffers(args[2])
case "small" where args.count == 3: smallOnly(args[2])
case "tune" where args.count == 3: tune(args[2])
case "index" where args.count >= 3:
    let n = args.count > 3 ? Int(args[3]) ?? 1_000_000 : 1_000_000
    indexBench(args[2], n, inPathOrder: true)
    indexBench(args[2], n, inPathOrder: false)
case "walktree" where args.count == 4:
    let tree = makeWalkTree(args[2], Int(args[3]) ?? 100_000)
    print("\(tree.path): \(tree.entries) entries")
case "walkonce" where args.count == 5:
    let t0 = now(), cpu0 = cpuSeconds()
    let r = walkOnce(args[2], threads: Int(args[3]) ?? 2, backend: args[4] == "plain" ? .plain : .automatic)
    print("\(args[4]) \(args[3]) threads: \(r.entries) entries, \(r.errors) errors, \(fixed(now() - t0, 3)) s, CPU \(fixed(cpuSeconds() - cpu0, 2)) s, backends \(r.backends.sorted()), peak RSS \(fixed(maxRSSMiB(), 1)) MiB")
case "walk" where args.count >= 3:
    let counts = args.count > 3 ? args[3...].compactMap { Int($0) } : [100_000, 1_000_000]
    walkBench(args[2], counts)
default: fail("usage: fansync-hashbench prepare DIR | run DIR [RUNS] | chunks [MiB] | buffers DIR | index FILE [N] | walk DIR [N...] | walktree DIR N | walkonce DIR THREADS uring|plain")
}

extension RsyncOptions {
    /// The options as rsync arguments, lsyncd's way: `-a` (or the individual `-l -t -p -o -g`),
    /// `-H -A -X -c -S -W --inplace -z -v`, `--bwlimit=N`, then `extra` verbatim. Paths, file
    /// lists, excludes and `-e` are the transfer's business and are not included.
    public var flagArguments: [String] {
        var out: [String] = []
        var short = ""
        if archive {
            short += "a"
        } else {
            if links { short += "l" }
            if times { short += "t" }
            if perms { short += "p" }
            if owner { short += "o" }
            if group { short += "g" }
        }
        if hardLinks { short += "H" }
        if acls { short += "A" }
        if xattrs { short += "X" }
        if checksum { short += "c" }
        if sparse { short += "S" }
        if wholeFile { short += "W" }
        if compress { short += "z" }
        if verbose { short += "v" }
        if !short.isEmpty { out.append("-" + short) }
        if inplace { out.append("--inplace") }
        if let bwlimit { out.append("--bwlimit=\(bwlimit)") }
        return out + extra
    }
}

#ifndef CLINUX_H
#define CLINUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/eventfd.h>
#include <sys/poll.h>
#include <sys/vfs.h>
#include <linux/stat.h>
#include <fcntl.h>
#include <spawn.h>
#include <signal.h>

// Constants that Swift cannot import (function-like macros, _GNU_SOURCE-only).
extern const size_t clinux_fan_event_metadata_len;
extern const int clinux_o_path;
extern const int clinux_o_noatime;
extern const int clinux_max_handle_sz;
extern const int clinux_at_handle_fid;

// fanotify (sys/fanotify.h is importable; these keep call sites uniform and EINTR-free of varargs).
int clinux_fanotify_init(unsigned int flags, unsigned int event_f_flags);
int clinux_fanotify_mark(int fd, unsigned int flags, uint64_t mask, int dirfd, const char *path);

// File handles. A handle is carried as (type, bytes); these build struct file_handle in C.
// Returns the handle's byte count in *out_len and its type in *out_type; mount id in *out_mount_id.
int clinux_name_to_handle_at(int dirfd, const char *path, int flags,
                             unsigned char *out_bytes, unsigned int capacity,
                             unsigned int *out_len, int *out_type, int *out_mount_id);
int clinux_open_by_handle_at(int mount_fd, const unsigned char *bytes, unsigned int len,
                             int type, int flags);

// statx, for the device, inode and type of a path without following symlinks.
int clinux_statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *out);

// I/O priority: IOPRIO_CLASS_IDLE for the calling thread.
int clinux_set_idle_io_priority(void);
// CPU priority (nice) of the calling thread alone.
int clinux_set_thread_nice(int nice);
/// CPUs this process may run on (its affinity mask).
int clinux_usable_cpus(void);
/// Tasks runnable system-wide right now, the caller included (/proc/loadavg); -1 if unknown.
int clinux_runnable_tasks(void);


// Keeps only the named capabilities (comma-separated) in the effective, permitted and
// bounding sets; *dropped_bounding counts what left the bounding set. 0 or -1 with errno.
int clinux_restrict_capabilities(const char *keep_text, int *dropped_bounding);
// syslog without varargs (lsyncd's logident and logfacility).
void clinux_openlog(const char *ident, int facility);
void clinux_syslog(int priority, const char *message);
// copy_file_range(2) from the current offsets (len bytes at most); -1 with errno.
long clinux_copy_file_range(int fd_in, int fd_out, size_t len);
// utimensat(2) with the access time left as it is (UTIME_OMIT) and the given mtime.
int clinux_set_mtime(int dirfd, const char *path, int64_t sec, long nsec, int flags);
// futimens(2), the same way.
int clinux_fset_mtime(int fd, int64_t sec, long nsec);
// An unnamed file in `dirfd` (O_TMPFILE, write-only, close-on-exec); -1 with errno
// (EOPNOTSUPP, EISDIR or EINVAL where the filesystem or kernel cannot).
int clinux_open_unnamed(int dirfd, mode_t mode);
// Gives the open unnamed file `fd` the name `name` in `dirfd` (linkat with AT_EMPTY_PATH,
// which needs CAP_DAC_READ_SEARCH; without it, through /proc/self/fd); -1 with errno
// (EEXIST when the name is taken).
int clinux_link_unnamed(int fd, int dirfd, const char *name);
// renameat2(2) with RENAME_NOREPLACE: EEXIST when `newname` is taken; EINVAL where the
// filesystem cannot (the caller then checks and renames).
int clinux_rename_noreplace(int olddirfd, const char *oldname, int newdirfd, const char *newname);
// pipe2(fds, O_CLOEXEC).
int clinux_pipe_cloexec(int fds[2]);

// Starts `file` (searched on PATH) with `argv` and `envp`, stdin/stdout/stderr on fd0..fd2,
// in its own process group, signals reset, and SIGTERM when the starting thread dies.
// Returns the pid, or -1 with *error set (exec failures included).
pid_t clinux_spawn(const char *file, char *const argv[], char *const envp[], int fd0, int fd1, int fd2,
                   int *error);

// Rules engine: symlink-free opens beneath a directory.
#include "CLinuxRules.h"

// Tree walk: getdents64.
#include "CLinuxWalk.h"

#endif

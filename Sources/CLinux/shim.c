#define _GNU_SOURCE
#include "CLinux.h"
#include <sys/resource.h>
#include <sched.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/capability.h>

const size_t clinux_fan_event_metadata_len = FAN_EVENT_METADATA_LEN;
const int clinux_o_path = O_PATH;
const int clinux_o_noatime = O_NOATIME;
const int clinux_max_handle_sz = MAX_HANDLE_SZ;
#ifdef AT_HANDLE_FID
const int clinux_at_handle_fid = AT_HANDLE_FID;
#else
const int clinux_at_handle_fid = 0x200;
#endif

int clinux_fanotify_init(unsigned int flags, unsigned int event_f_flags) {
    return fanotify_init(flags, event_f_flags);
}

int clinux_fanotify_mark(int fd, unsigned int flags, uint64_t mask, int dirfd, const char *path) {
    return fanotify_mark(fd, flags, mask, dirfd, path);
}

int clinux_name_to_handle_at(int dirfd, const char *path, int flags,
                             unsigned char *out_bytes, unsigned int capacity,
                             unsigned int *out_len, int *out_type, int *out_mount_id) {
    struct file_handle *fh = malloc(sizeof(struct file_handle) + MAX_HANDLE_SZ);
    if (!fh) { errno = ENOMEM; return -1; }
    fh->handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    int r = name_to_handle_at(dirfd, path, fh, &mount_id, flags);
    if (r == 0) {
        if (fh->handle_bytes > capacity) { free(fh); errno = EOVERFLOW; return -1; }
        memcpy(out_bytes, fh->f_handle, fh->handle_bytes);
        *out_len = fh->handle_bytes;
        *out_type = fh->handle_type;
        *out_mount_id = mount_id;
    }
    int saved = errno;
    free(fh);
    errno = saved;
    return r;
}

int clinux_open_by_handle_at(int mount_fd, const unsigned char *bytes, unsigned int len,
                             int type, int flags) {
    if (len > MAX_HANDLE_SZ) { errno = EINVAL; return -1; }
    struct file_handle *fh = malloc(sizeof(struct file_handle) + len);
    if (!fh) { errno = ENOMEM; return -1; }
    fh->handle_bytes = len;
    fh->handle_type = type;
    memcpy(fh->f_handle, bytes, len);
    int r = open_by_handle_at(mount_fd, fh, flags);
    int saved = errno;
    free(fh);
    errno = saved;
    return r;
}

int clinux_statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *out) {
    return statx(dirfd, path, flags, mask, out);
}

#define CLINUX_IOPRIO_CLASS_SHIFT 13
#define CLINUX_IOPRIO_CLASS_IDLE 3
#define CLINUX_IOPRIO_WHO_PROCESS 1

int clinux_set_idle_io_priority(void) {
    int prio = (CLINUX_IOPRIO_CLASS_IDLE << CLINUX_IOPRIO_CLASS_SHIFT);
    return (int)syscall(SYS_ioprio_set, CLINUX_IOPRIO_WHO_PROCESS, 0, prio);
}

int clinux_set_thread_nice(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}

int clinux_usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return (int)sysconf(_SC_NPROCESSORS_ONLN);
    return CPU_COUNT(&set);
}

int clinux_runnable_tasks(void) {
    // /proc/loadavg: "0.52 0.58 0.59 3/245 12345": the fourth field is the number of
    // tasks runnable right now (on a CPU or waiting for one), the caller included.
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = buf;
    for (int field = 0; field < 3; field++) {
        p = strchr(p, ' ');
        if (!p) return -1;
        p++;
    }
    char *end;
    long r = strtol(p, &end, 10);
    return (end == p || *end != '/') ? -1 : (int)r;
}

int clinux_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

#include <sys/prctl.h>
#include <linux/capability.h>

int clinux_restrict_capabilities(const char *keep_text, int *dropped_bounding) {
    cap_value_t keep[64];
    int n = 0;
    char *copy = strdup(keep_text);
    if (!copy) { errno = ENOMEM; return -1; }
    for (char *tok = strtok(copy, ","); tok && n < 64; tok = strtok(NULL, ",")) {
        cap_value_t v;
        if (cap_from_name(tok, &v) != 0) { free(copy); errno = EINVAL; return -1; }
        keep[n++] = v;
    }
    free(copy);
    // The bounding set limits what any program we start (rsync, ssh) can ever get, even as
    // root: drop everything else from it first (this needs CAP_SETPCAP, dropped after).
    *dropped_bounding = 0;
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
        int wanted = 0;
        for (int i = 0; i < n; i++) if (keep[i] == cap) wanted = 1;
        if (wanted || prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) (*dropped_bounding)++;
    }
    cap_t current = cap_get_proc();
    if (!current) return -1;
    cap_t caps = cap_init();
    if (!caps) { cap_free(current); return -1; }
    // Keep only what we have and want: effective = permitted = wanted ∩ permitted.
    for (int i = 0; i < n; i++) {
        cap_flag_value_t has = CAP_CLEAR;
        cap_get_flag(current, keep[i], CAP_PERMITTED, &has);
        if (has == CAP_SET) {
            cap_set_flag(caps, CAP_PERMITTED, 1, &keep[i], CAP_SET);
            cap_set_flag(caps, CAP_EFFECTIVE, 1, &keep[i], CAP_SET);
        }
    }
    int r = cap_set_proc(caps);
    int saved = errno;
    cap_free(caps);
    cap_free(current);
    errno = saved;
    return r;
}

#include <syslog.h>

void clinux_openlog(const char *ident, int facility) {
    // openlog keeps the pointer: keep a copy for the life of the process.
    static char *kept = NULL;
    free(kept);
    kept = strdup(ident);
    openlog(kept, LOG_PID | LOG_NDELAY, facility);
}

void clinux_syslog(int priority, const char *message) {
    syslog(priority, "%s", message);
}

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <limits.h>

// The program `file` names: itself when it holds a '/', else the first executable of that
// name on PATH. Done before the fork, so that the child only makes system calls.
static int clinux_resolve(const char *file, char *out, size_t size) {
    if (strchr(file, '/')) {
        if (strlen(file) >= size) { errno = ENAMETOOLONG; return -1; }
        strcpy(out, file);
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
    int last = ENOENT;
    for (const char *p = path; ; ) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len + 1 + strlen(file) + 1 <= size) {
            if (len == 0) { out[0] = '.'; len = 1; } else memcpy(out, p, len);
            out[len] = '/';
            strcpy(out + len + 1, file);
            if (access(out, X_OK) == 0) return 0;
            if (errno != ENOENT && errno != ENOTDIR) last = errno;
        }
        if (!end) break;
        p = end + 1;
    }
    errno = last;
    return -1;
}

pid_t clinux_spawn(const char *file, char *const argv[], char *const envp[], int fd0, int fd1, int fd2,
                   int *error) {
    char path[PATH_MAX];
    if (clinux_resolve(file, path, sizeof path) != 0) { *error = errno; return -1; }
    pid_t parent = getpid();
    volatile int child_errno = 0;
    pid_t pid = vfork();
    if (pid == 0) {
        // Dies with the thread that started it: a daemon killed with SIGKILL leaves no
        // rsync behind writing into the backup (SIGTERM: rsync removes its temporary file).
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(127);
        setpgid(0, 0);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int s = 1; s < NSIG; s++) sigaction(s, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(fd0, 0) < 0 || dup2(fd1, 1) < 0 || dup2(fd2, 2) < 0) { child_errno = errno; _exit(127); }
        execve(path, argv, envp);
        child_errno = errno;
        _exit(127);
    }
    if (pid < 0) { *error = errno; return -1; }
    if (child_errno != 0) {
        // vfork: the child ran (and failed) before the parent resumed.
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *error = child_errno;
        return -1;
    }
    return pid;
}

long clinux_copy_file_range(int fd_in, int fd_out, size_t len) {
    return (long)copy_file_range(fd_in, NULL, fd_out, NULL, len, 0);
}

int clinux_set_mtime(int dirfd, const char *path, int64_t sec, long nsec, int flags) {
    struct timespec t[2] = { { .tv_sec = 0, .tv_nsec = UTIME_OMIT }, { .tv_sec = (time_t)sec, .tv_nsec = nsec } };
    return utimensat(dirfd, path, t, flags);
}

int clinux_open_unnamed(int dirfd, mode_t mode) {
    return openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
}

int clinux_link_unnamed(int fd, int dirfd, const char *name) {
    if (linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOENT && errno != EPERM) return -1;
    char proc[40];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW);
}

int clinux_rename_noreplace(int olddirfd, const char *oldname, int newdirfd, const char *newname) {
    return renameat2(olddirfd, oldname, newdirfd, newname, RENAME_NOREPLACE);
}

int clinux_fset_mtime(int fd, int64_t sec, long nsec) {
    struct timespec t[2] = { { .tv_sec = 0, .tv_nsec = UTIME_OMIT }, { .tv_sec = (time_t)sec, .tv_nsec = nsec } };
    return futimens(fd, t);
}

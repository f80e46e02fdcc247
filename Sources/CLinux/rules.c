#define _GNU_SOURCE
#include "CLinuxRules.h"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#ifdef SYS_openat2
#include <linux/openat2.h>
#endif

static int open_chain(int dirfd, const char *path, int flags) {
    size_t len = strlen(path);
    if (len == 0) { errno = ENOENT; return -1; }
    char *copy = malloc(len + 1);
    if (!copy) { errno = ENOMEM; return -1; }
    memcpy(copy, path, len + 1);
    int current = dirfd;
    int owned = 0;
    char *component = copy;
    for (;;) {
        while (*component == '/') component++;
        char *slash = strchr(component, '/');
        char *next = NULL;
        if (slash) {
            *slash = '\0';
            next = slash + 1;
            while (*next == '/') next++;
            if (*next == '\0') next = NULL;
        }
        if (strcmp(component, "..") == 0 || *component == '\0') {
            if (owned) close(current);
            free(copy);
            errno = EXDEV;
            return -1;
        }
        int fd;
        if (next) {
            fd = openat(current, component, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        } else {
            fd = openat(current, component, flags | O_NOFOLLOW | O_CLOEXEC);
        }
        int saved = errno;
        if (owned) close(current);
        if (fd < 0) {
            free(copy);
            errno = saved;
            return -1;
        }
        if (!next) {
            free(copy);
            return fd;
        }
        current = fd;
        owned = 1;
        component = next;
    }
}

int clinux_open_beneath_nofollow(int dirfd, const char *path, int flags) {
#ifdef SYS_openat2
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(unsigned int)(flags | O_NOFOLLOW | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    for (int attempt = 0; attempt < 4; attempt++) {
        long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (fd >= 0) return (int)fd;
        if (errno == EAGAIN || errno == EINTR) continue;
        if (errno == ENOSYS || errno == EPERM || errno == E2BIG) break;
        return -1;
    }
#endif
    return open_chain(dirfd, path, flags);
}

#define _GNU_SOURCE
#include "CLinuxWalk.h"
#include <unistd.h>
#include <sys/syscall.h>

long clinux_getdents64(int fd, void *buf, size_t len) {
    return syscall(SYS_getdents64, fd, buf, len);
}

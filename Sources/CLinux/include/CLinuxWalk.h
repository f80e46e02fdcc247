#ifndef CLINUX_WALK_H
#define CLINUX_WALK_H

#include <stddef.h>

// getdents64(2): fills `buf` with struct linux_dirent64 records
// { uint64 d_ino; int64 d_off; uint16 d_reclen; uint8 d_type; char d_name[] } (the name at
// byte 19, NUL-terminated; the next record at d_reclen). Returns the bytes filled, 0 at the
// end of the directory, or -1 with errno set. The tree walk reads directories with it
// directly: fdopendir would add an fcntl, an fstat and a 32 KiB allocation per directory.
long clinux_getdents64(int fd, void *buf, size_t len);

#endif

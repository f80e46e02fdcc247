#ifndef CLINUX_RULES_H
#define CLINUX_RULES_H

// Opens `path` (relative, no ".." components) beneath `dirfd` without following any
// symbolic link, intermediate or final: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS),
// or, where openat2 is unavailable, a chain of openat(O_NOFOLLOW) per component.
// `flags` are open(2) flags; O_NOFOLLOW and O_CLOEXEC are always added.
// Returns the descriptor, or -1 with errno set (ELOOP when a component is a symlink).
int clinux_open_beneath_nofollow(int dirfd, const char *path, int flags);

#endif

#ifndef CURING_H
#define CURING_H

// liburing (Debian 12: 2.3) and libxxhash (0.8.1), for the content hasher.
// liburing's prep/peek/seen helpers are static inline: these out-of-line wrappers keep
// the Swift side independent of how the header implements them.

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/stat.h>
#include <xxhash.h>

struct io_uring;

// A ring with `entries` submission slots. Returns NULL with errno set (ENOSYS when the
// kernel or a seccomp filter refuses io_uring).
struct io_uring *curing_ring_create(unsigned entries);
void curing_ring_destroy(struct io_uring *ring);

// A ring used by one thread only, for many short requests (the tree walk's statx):
// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (Linux 6.1+), so completions are
// run when that thread waits for them rather than interrupting it one by one. Falls back
// to default flags where the kernel refuses these; *deferred tells which. Destroy with
// curing_ring_destroy.
struct io_uring *curing_ring_create_deferred(unsigned entries, int *deferred);

// Registers `count` buffers of `size` bytes each (contiguous from `base`) for READ_FIXED.
// Returns 0 or -errno (ENOMEM / EPERM under a small RLIMIT_MEMLOCK: use plain reads then).
int curing_register_buffers(struct io_uring *ring, void *base, unsigned count, size_t size);

// Free submission slots.
unsigned curing_sq_space_left(struct io_uring *ring);

// Each prep returns 0, or -EBUSY when the submission queue is full (submit first).
int curing_prep_statx(struct io_uring *ring, uint64_t user_data, int dirfd, const char *path,
                      int flags, unsigned mask, struct statx *out);
int curing_prep_openat(struct io_uring *ring, uint64_t user_data, int dirfd, const char *path,
                       int flags, mode_t mode);
// `punt`: IOSQE_ASYNC, run the read (the copy out of the page cache) on an io-wq worker
// instead of inline in the submitting thread.
int curing_prep_read(struct io_uring *ring, uint64_t user_data, int fd, void *buf, unsigned len,
                     uint64_t offset, int buf_index, uint16_t ioprio, int punt);
int curing_prep_close(struct io_uring *ring, uint64_t user_data, int fd);

// Submits what was prepared and waits for at least `wait_nr` completions.
// Returns the number submitted or -errno.
int curing_submit_and_wait(struct io_uring *ring, unsigned wait_nr);

// Copies up to `max` completions into the arrays and marks them seen. Returns the count.
unsigned curing_reap(struct io_uring *ring, uint64_t *user_data, int32_t *res, unsigned max);

// Constants Swift does not see without _GNU_SOURCE.
extern const int curing_o_noatime;
extern const int curing_at_empty_path;
extern const int curing_at_symlink_nofollow;
extern const int curing_at_statx_sync_as_stat;
extern const uint16_t curing_ioprio_idle;

// XXH3-128 streaming state (opaque to Swift; allocated in C, 64-byte aligned).
XXH3_state_t *curing_xxh3_create(void);
void curing_xxh3_free(XXH3_state_t *state);
void curing_xxh3_reset(XXH3_state_t *state);
void curing_xxh3_update(XXH3_state_t *state, const void *data, size_t len);
// The digest in canonical (big-endian) byte order: the bytes xxhsum -H2 prints as hex.
void curing_xxh3_digest(const XXH3_state_t *state, unsigned char out[16]);
// One-shot XXH3-128, canonical bytes.
void curing_xxh3_oneshot(const void *data, size_t len, unsigned char out[16]);

#endif

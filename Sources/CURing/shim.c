#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <liburing.h>
#include "CURing.h"

#define CURING_IOPRIO_CLASS_SHIFT 13
#define CURING_IOPRIO_CLASS_IDLE 3

const int curing_o_noatime = O_NOATIME;
const int curing_at_empty_path = AT_EMPTY_PATH;
const int curing_at_symlink_nofollow = AT_SYMLINK_NOFOLLOW;
const int curing_at_statx_sync_as_stat = AT_STATX_SYNC_AS_STAT;
const uint16_t curing_ioprio_idle = (uint16_t)(CURING_IOPRIO_CLASS_IDLE << CURING_IOPRIO_CLASS_SHIFT);

struct io_uring *curing_ring_create(unsigned entries) {
    struct io_uring *ring = calloc(1, sizeof(*ring));
    if (!ring) { errno = ENOMEM; return NULL; }
    int rc = io_uring_queue_init(entries, ring, 0);
    if (rc < 0) { free(ring); errno = -rc; return NULL; }
    return ring;
}

void curing_ring_destroy(struct io_uring *ring) {
    if (!ring) return;
    io_uring_queue_exit(ring);
    free(ring);
}

int curing_register_buffers(struct io_uring *ring, void *base, unsigned count, size_t size) {
    struct iovec *iov = calloc(count, sizeof(*iov));
    if (!iov) return -ENOMEM;
    for (unsigned i = 0; i < count; i++) {
        iov[i].iov_base = (char *)base + (size_t)i * size;
        iov[i].iov_len = size;
    }
    int rc = io_uring_register_buffers(ring, iov, count);
    free(iov);
    return rc;
}

unsigned curing_sq_space_left(struct io_uring *ring) { return io_uring_sq_space_left(ring); }

int curing_prep_statx(struct io_uring *ring, uint64_t user_data, int dirfd, const char *path,
                      int flags, unsigned mask, struct statx *out) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_statx(sqe, dirfd, path, flags, mask, out);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int curing_prep_openat(struct io_uring *ring, uint64_t user_data, int dirfd, const char *path,
                       int flags, mode_t mode) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_openat(sqe, dirfd, path, flags, mode);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int curing_prep_read(struct io_uring *ring, uint64_t user_data, int fd, void *buf, unsigned len,
                     uint64_t offset, int buf_index, uint16_t ioprio, int punt) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    if (buf_index >= 0) io_uring_prep_read_fixed(sqe, fd, buf, len, offset, buf_index);
    else io_uring_prep_read(sqe, fd, buf, len, offset);
    sqe->ioprio = ioprio;
    if (punt) sqe->flags |= IOSQE_ASYNC;
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int curing_prep_close(struct io_uring *ring, uint64_t user_data, int fd) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int curing_submit_and_wait(struct io_uring *ring, unsigned wait_nr) {
    int rc;
    do { rc = io_uring_submit_and_wait(ring, wait_nr); } while (rc == -EINTR);
    return rc;
}

unsigned curing_reap(struct io_uring *ring, uint64_t *user_data, int32_t *res, unsigned max) {
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
        if (n == max) break;
        user_data[n] = io_uring_cqe_get_data64(cqe);
        res[n] = cqe->res;
        n++;
    }
    io_uring_cq_advance(ring, n);
    return n;
}

XXH3_state_t *curing_xxh3_create(void) { return XXH3_createState(); }
void curing_xxh3_free(XXH3_state_t *state) { XXH3_freeState(state); }
void curing_xxh3_reset(XXH3_state_t *state) { XXH3_128bits_reset(state); }
void curing_xxh3_update(XXH3_state_t *state, const void *data, size_t len) {
    XXH3_128bits_update(state, data, len);
}
void curing_xxh3_digest(const XXH3_state_t *state, unsigned char out[16]) {
    XXH128_hash_t h = XXH3_128bits_digest(state);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, 16);
}
void curing_xxh3_oneshot(const void *data, size_t len, unsigned char out[16]) {
    XXH128_hash_t h = XXH3_128bits(data, len);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, 16);
}

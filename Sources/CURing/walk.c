#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <liburing.h>
#include "CURing.h"

struct io_uring *curing_ring_create_deferred(unsigned entries, int *deferred) {
    struct io_uring *ring = calloc(1, sizeof(*ring));
    if (!ring) { errno = ENOMEM; return NULL; }
    int rc = io_uring_queue_init(entries, ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    *deferred = rc == 0;
    if (rc == -EINVAL) rc = io_uring_queue_init(entries, ring, 0);
    if (rc < 0) { free(ring); errno = -rc; return NULL; }
    return ring;
}

/* Private: lock handles as text (handle_codec.c). Pure: no clock, no client; the
 * driver (handle.c) reads the clocks and owns what attach makes. */
#ifndef PEEKLOCK_HANDLE_INT_H
#define PEEKLOCK_HANDLE_INT_H

#include <stdint.h>
#include "peeklock.h"

/* The handle of m's held lock, whose expiry is expiry_wall_ms (Unix ms, this
 * host's clock); *out freed with free(). PL_ESTATE when m holds no lock. A
 * secret: it carries the lock token. */
int pl_handle_encode(char **out, const pl_message *m, int64_t expiry_wall_ms);
/* Parses a handle for a lock under endpoint into a new message (state held, no
 * owner, no monotonic expiry yet) and its expiry (Unix ms, the encoder's clock).
 * PL_EINVAL for anything else; the messages never quote the handle. */
int pl_handle_decode(pl_message **out, const char *endpoint, const char *handle, int64_t *expiry_wall_ms);

#endif

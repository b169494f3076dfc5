/* Private: renewer internals exposed for tests and benchmarks. Not installed. */
#ifndef PEEKLOCK_RENEWER_INT_H
#define PEEKLOCK_RENEWER_INT_H

#include <stddef.h>
#include <stdint.h>
#include "peeklock.h"

/* Bytes of renewer state attributable to one held lock (record + heap slot +
 * hash slot at their maximum load), excluding malloc's own overhead. */
size_t pl_renewer_bytes_per_lock(void);

/* Largest number of RENEWED and RENEW_FAILED events kept queued; beyond it they are
 * dropped (and counted) while LOST and CAP_REACHED events are always kept. */
#define PL_RENEWER_MAX_QUEUED_RENEWED 4096

/* Connections (easy handles) the renewer uses now; with max_connections 0 it
 * starts at 4 and grows under load up to 32. */
int pl_renewer_connections(pl_renewer *r);

/* Count of RENEWED and RENEW_FAILED events dropped because nobody drained the queue. */
uint64_t pl_renewer_dropped_events(pl_renewer *r);

#endif

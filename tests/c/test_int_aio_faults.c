/* Integration: the fault matrix (tests/faults/matrix.json) through the asynchronous
 * engine. test_int_faults.c is compiled again with every blocking operation it calls
 * routed through a pl_aio of the same client (one engine per client, so a warmed
 * connection is reused as in the blocking case): each attempt is reported to the same
 * outcome module and every cell must give the same result. */
#include "aio_support.h"

#define AIO_MAX_CLIENTS 8
static struct {
    pl_client *c;
    pl_aio *a;
} engines[AIO_MAX_CLIENTS];

static pl_aio *engine_of(pl_client *c)
{
    int free_slot = -1;
    for (int i = 0; i < AIO_MAX_CLIENTS; i++) {
        if (engines[i].c == c) return engines[i].a;
        if (!engines[i].c && free_slot < 0) free_slot = i;
    }
    REQUIRE(free_slot >= 0);
    engines[free_slot].c = c;
    REQUIRE(pl_aio_new(&engines[free_slot].a, c) == PL_OK);
    return engines[free_slot].a;
}

static void engine_drop(pl_client *c)
{
    for (int i = 0; i < AIO_MAX_CLIENTS; i++)
        if (engines[i].c == c) {
            pl_aio_free(engines[i].a);
            engines[i].c = NULL;
            engines[i].a = NULL;
        }
    pl_client_free(c);
}

static int aio_send_w(pl_client *c, const char *e, const pl_outgoing *o)
{
    pl_aio *a = engine_of(c);
    uint64_t id = 0;
    return aio_finish(a, pl_aio_send(a, &id, e, o), &id, NULL);
}
static int aio_batch_w(pl_client *c, const char *e, const pl_batch *b)
{
    pl_aio *a = engine_of(c);
    uint64_t id = 0;
    return aio_finish(a, pl_aio_send_batch(a, &id, e, b), &id, NULL);
}
static int aio_peek_w(pl_message **out, pl_client *c, const char *e, int t)
{
    pl_aio *a = engine_of(c);
    uint64_t id = 0;
    return aio_finish(a, pl_aio_peek_lock(a, &id, e, t), &id, out);
}
static int aio_rd_w(pl_message **out, pl_client *c, const char *e, int t)
{
    pl_aio *a = engine_of(c);
    uint64_t id = 0;
    return aio_finish(a, pl_aio_receive_and_delete(a, &id, e, t), &id, out);
}
static int aio_renew_w(pl_client *c, pl_message *m)
{
    pl_aio *a = engine_of(c);
    uint64_t id = 0;
    return aio_finish(a, pl_aio_renew_lock(a, &id, m), &id, NULL);
}
static int aio_unlock_w(pl_client *c, pl_message *m)
{
    pl_aio *a = engine_of(c);
    uint64_t id = 0;
    return aio_finish(a, pl_aio_unlock(a, &id, m), &id, NULL);
}
static int aio_complete_w(pl_client *c, pl_message *m)
{
    pl_aio *a = engine_of(c);
    uint64_t id = 0;
    return aio_finish(a, pl_aio_complete(a, &id, m), &id, NULL);
}

#define pl_send               aio_send_w
#define pl_send_batch         aio_batch_w
#define pl_peek_lock          aio_peek_w
#define pl_receive_and_delete aio_rd_w
#define pl_renew_lock         aio_renew_w
#define pl_unlock             aio_unlock_w
#define pl_complete           aio_complete_w
#define pl_client_free        engine_drop
#define main                  faults_main
#include "test_int_faults.c"
#undef main
#undef pl_client_free

int main(void)
{
    int rc = faults_main();
    for (int i = 0; i < AIO_MAX_CLIENTS; i++)
        if (engines[i].c) engine_drop(engines[i].c);
    return rc;
}

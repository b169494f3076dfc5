/* A small peeklock worker to copy: receive with peek-lock, keep the lock alive
 * in the background while the handler runs, complete on success, unlock
 * (abandon) on failure so the message is redelivered.
 *
 *   cc worker.c $(pkg-config --cflags --libs peeklock) -o worker
 *   PEEKLOCK_CONNECTION_STRING='Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...' \
 *     ./worker QUEUE [MAX_MESSAGES] [SEND_FIRST]
 *
 * MAX_MESSAGES: stop after that many (default: run until interrupted).
 * SEND_FIRST: send that many demo messages first (handy with the emulator). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <peeklock.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* The application's work. Return 0 on success. */
static int handle(const pl_message *m)
{
    size_t len;
    const char *body = pl_message_body(m, &len);
    printf("message %s (seq %lld, delivery %d): %.*s\n", pl_message_id(m) ? pl_message_id(m) : "-",
           (long long)pl_message_sequence_number(m), pl_message_delivery_count(m), (int)len, body);
    return 0;
}

static int fail(const char *what)
{
    const pl_error *e = pl_error_last();
    fprintf(stderr, "%s: %s (%s, HTTP %d)\n", what, e->message, pl_strerror(e->code), e->http_status);
    return 1;
}

int main(int argc, char **argv)
{
    const char *conn = getenv("PEEKLOCK_CONNECTION_STRING");
    if (argc < 2 || !conn) {
        fprintf(stderr, "usage: PEEKLOCK_CONNECTION_STRING=... %s QUEUE [MAX_MESSAGES] [SEND_FIRST]\n",
                argv[0]);
        return 2;
    }
    const char *queue = argv[1];
    long max = argc > 2 ? atol(argv[2]) : -1;
    long send_first = argc > 3 ? atol(argv[3]) : 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    pl_client *client = NULL;
    if (pl_client_new_from_connection_string(&client, conn) != PL_OK) return fail("client");

    for (long i = 0; i < send_first; i++) {
        char body[64];
        snprintf(body, sizeof body, "hello %ld", i);
        pl_outgoing *out = NULL;
        if (pl_outgoing_new(&out, body, strlen(body)) != PL_OK ||
            pl_outgoing_set_content_type(out, "text/plain") != PL_OK ||
            pl_send(client, queue, out) != PL_OK) {
            pl_outgoing_free(out);
            pl_client_free(client);
            return fail("send");
        }
        pl_outgoing_free(out);
    }

    /* One renewer thread keeps every held lock alive while handlers run. */
    pl_renewer *renewer = NULL;
    if (pl_renewer_new(&renewer, client, NULL) != PL_OK) {
        pl_client_free(client);
        return fail("renewer");
    }

    long done = 0;
    int status = 0;
    while (!stop && (max < 0 || done < max)) {
        pl_message *m = NULL;
        int rc = pl_peek_lock(&m, client, queue, PL_DEFAULT_RECEIVE_TIMEOUT_S); /* long poll */
        if (rc == PL_EMPTY) continue;
        if (rc != PL_OK) {
            if (pl_error_last()->retryable) continue; /* the client already backed off */
            status = fail("peek-lock");
            break;
        }
        /* Renewed for up to 5 minutes while the handler runs, then completed on
         * success or abandoned on failure, unless the handler settled it itself. */
        if (pl_renewer_hold(renewer, m, PL_DEFAULT_MAX_RENEW_MS) != PL_OK) {
            status = fail("hold");
            pl_message_free(m);
            break;
        }
        int ok = handle(m) == 0, outcome = 0;
        rc = pl_renewer_finish(renewer, m, ok, &outcome);
        if (outcome == PL_FINISH_LOST || outcome == PL_FINISH_UNKNOWN) {
            /* this call's settle failed (rc), or it happened before: the core's words for it */
            if (rc == PL_OK) pl_finish_error(m, outcome);
            fprintf(stderr, "settle: %s (the message may be delivered again)\n", pl_error_last()->message);
        } else if (rc != PL_OK)
            fail(ok ? "complete" : "unlock");
        /* Drain renewer events (a lost lock means another worker may get it). */
        pl_event *ev = NULL;
        while (pl_renewer_next_event(&ev, renewer) == PL_OK) {
            if (pl_event_type(ev) == PL_EVENT_LOST) fprintf(stderr, "lock lost: %s\n", pl_event_reason(ev));
            pl_event_free(ev);
        }
        pl_message_free(m);
        done++;
    }
    pl_renewer_free(renewer); /* closes it (without unlocking) */
    pl_client_free(client);
    return status;
}

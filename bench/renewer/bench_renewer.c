/*
 * Renewer benchmark driver: holds N peek-locked messages for a while and keeps
 * their locks alive, either with the peeklock renewer (one thread, one curl
 * multi) or with a thread-per-lock renewer written the way Python users do it
 * today (azure-servicebus AutoLockRenewer: per lock, wake every 0.5 s and renew
 * whenever less than 10 s of lock time remains, with a blocking renew call).
 *
 *   bench_renewer MODE N LOCK_S RUN_S     (MODE: peeklock | thread)
 *
 * Connection string in PEEKLOCK_CONNECTION_STRING (bench/renewer/run.py starts
 * the emulator). Prints one line of JSON with the figures; asserts nothing.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "peeklock.h"
#include "renewer_int.h"
#include "schedule_int.h"

static pl_client *client;
static char queue[64];
static int n_locks;
static pl_message **msgs;

static void die(const char *what)
{
    fprintf(stderr, "bench_renewer: %s: %s\n", what, pl_error_last()->message);
    exit(2);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static long proc_status(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') v = atol(line + kl + 1);
    if (f) fclose(f);
    return v;
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static long admin(const char *method, const char *path, const char *json)
{
    CURL *h = curl_easy_init();
    char url[512];
    snprintf(url, sizeof(url), "%s%s", pl_client_endpoint(client), path);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    FILE *devnull = fopen("/dev/null", "w");
    curl_easy_setopt(h, CURLOPT_WRITEDATA, devnull);
    if (json) curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    long st = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    fclose(devnull);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return st;
}

/* ---- setup: N messages, all peek-locked -------------------------------------- */

static atomic_int next_lock;

static void *locker(void *arg)
{
    (void)arg;
    for (;;) {
        int i = atomic_fetch_add(&next_lock, 1);
        if (i >= n_locks) return NULL;
        pl_message *m = NULL;
        if (pl_peek_lock(&m, client, queue, 10) != PL_OK || !m) die("peek_lock");
        msgs[i] = m;
    }
}

static void setup(int lock_s)
{
    char path[128], body[128];
    snprintf(path, sizeof(path), "/$admin/entities/%s", queue);
    snprintf(body, sizeof(body), "{\"kind\":\"queue\",\"lock_duration\":%d}", lock_s);
    long st = admin("PUT", path, body);
    if (st != 201 && st != 200) die("create queue");
    for (int i = 0; i < n_locks; i += 100) {
        pl_batch *b = NULL;
        pl_batch_new(&b);
        for (int j = i; j < i + 100 && j < n_locks; j++) {
            pl_outgoing *o = NULL;
            char text[32];
            snprintf(text, sizeof(text), "m%d", j);
            pl_outgoing_new(&o, text, strlen(text));
            pl_batch_add(b, o);
            pl_outgoing_free(o);
        }
        if (pl_send_batch(client, queue, b) != PL_OK) die("send_batch");
        pl_batch_free(b);
    }
    msgs = calloc((size_t)n_locks, sizeof(*msgs));
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, locker, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
}

/* ---- baseline: a thread per lock ---------------------------------------------- */

static atomic_int stop_threads;
static atomic_long base_renewals, base_failures, base_lost;
static pthread_mutex_t base_mu = PTHREAD_MUTEX_INITIALIZER;
static pl_hist base_lateness;

static void *per_lock(void *arg)
{
    pl_message *m = arg;
    const int64_t renew_period = 10000, sleep_ms = 500; /* the SDK's defaults */
    while (!atomic_load(&stop_threads)) {
        int64_t now = pl_now_mono_ms();
        int64_t expiry = pl_message_lock_expiry_mono_ms(m);
        if (expiry - now < renew_period) {
            /* due when the remaining time first fell under the period, or (for
             * locks shorter than the period) as soon as the last renewal ended */
            int64_t due = expiry - renew_period;
            int64_t floor_due = expiry - pl_message_lock_duration_ms(m);
            if (due < floor_due) due = floor_due;
            double late = (double)(now - due);
            int rc = pl_renew_lock(client, m);
            pthread_mutex_lock(&base_mu);
            pl_hist_record(&base_lateness, late > 0 ? late : 0);
            pthread_mutex_unlock(&base_mu);
            if (rc == PL_OK) {
                atomic_fetch_add(&base_renewals, 1);
            } else {
                atomic_fetch_add(&base_failures, 1);
                if (rc == PL_ELOCKLOST || pl_message_lock_state(m) == PL_LOCK_LOST) {
                    atomic_fetch_add(&base_lost, 1);
                    return NULL;
                }
            }
        }
        struct timespec ts = {0, sleep_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: bench_renewer peeklock|thread N LOCK_S RUN_S\n");
        return 2;
    }
    const char *mode = argv[1];
    n_locks = atoi(argv[2]);
    int lock_s = atoi(argv[3]);
    double run_s = atof(argv[4]);
    const char *cs = getenv("PEEKLOCK_CONNECTION_STRING");
    if (!cs || n_locks <= 0 || lock_s <= 0 || run_s <= 0) {
        fprintf(stderr, "bench_renewer: bad arguments or PEEKLOCK_CONNECTION_STRING unset\n");
        return 2;
    }
    int baseline = strcmp(mode, "thread") == 0;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pl_client_options co = PL_CLIENT_OPTIONS_INIT;
    co.connection_string = cs;
    co.pool_size = baseline ? 64 : 8;
    co.max_retries = baseline ? 3 : 0;
    if (pl_client_new(&client, &co) != PL_OK) die("client");
    snprintf(queue, sizeof(queue), "bench-%s-%d-%d", mode, n_locks, lock_s);

    double t_setup = pl_now_mono_ms();
    setup(lock_s);
    t_setup = (pl_now_mono_ms() - t_setup) / 1000.0;

    long threads_before = proc_status("Threads");
    long rss_before = proc_status("VmRSS");
    size_t heap_before = heap_in_use();
    pl_renewer *r = NULL;
    pthread_t *tids = NULL;
    long threads_used = 0;
    if (!baseline) {
        pl_renewer_options ro = PL_RENEWER_OPTIONS_INIT;
        if (getenv("BENCH_JITTER")) ro.jitter = atof(getenv("BENCH_JITTER"));
        if (getenv("BENCH_CONNECTIONS")) ro.max_connections = atoi(getenv("BENCH_CONNECTIONS"));
        if (pl_renewer_new(&r, client, &ro) != PL_OK) die("renewer");
        for (int i = 0; i < n_locks; i++)
            if (pl_renewer_add(r, msgs[i], (long)(run_s * 4000) + 600000) != PL_OK) die("renewer_add");
    } else {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 * 1024);
        tids = calloc((size_t)n_locks, sizeof(*tids));
        pl_hist_reset(&base_lateness);
        for (int i = 0; i < n_locks; i++)
            if (pthread_create(&tids[i], &at, per_lock, msgs[i]) != 0) {
                fprintf(stderr, "bench_renewer: cannot create thread %d\n", i);
                return 2;
            }
        pthread_attr_destroy(&at);
    }
    size_t heap_after = heap_in_use();
    long rss_after = proc_status("VmRSS");
    threads_used = proc_status("Threads") - threads_before;

    /* run: the main thread drains events (as a binding would) */
    double cpu0 = cpu_seconds();
    int64_t t0 = pl_now_mono_ms(), end = t0 + (int64_t)(run_s * 1000);
    long events = 0;
    while (pl_now_mono_ms() < end) {
        if (r) {
            pl_event *ev = NULL;
            if (pl_renewer_wait_event(&ev, r, (long)(end - pl_now_mono_ms())) == PL_OK) {
                events++;
                pl_event_free(ev);
            }
        } else {
            struct timespec ts = {0, 100000000L};
            nanosleep(&ts, NULL);
        }
    }
    double cpu = cpu_seconds() - cpu0;
    double elapsed = (pl_now_mono_ms() - t0) / 1000.0;

    long renewals, failures, lost = 0;
    double late_p99, late_max;
    uint64_t state_bytes = 0;
    long connections = 64; /* baseline: the client's pool size */
    if (r) {
        pl_renewer_stats st;
        pl_renewer_stats_get(r, &st);
        renewals = (long)st.renewals;
        failures = (long)st.failures;
        late_p99 = st.lateness_p99_ms;
        late_max = st.lateness_p99_ms;
        state_bytes = st.state_bytes;
        threads_used = (long)st.threads;
        threads_used = (long)st.threads;
        connections = pl_renewer_connections(r);
        pl_client_stats cst;
        pl_client_stats_get(client, &cst);
        fprintf(stderr, "peeklock: rtt p99 %.2f ms, requests %llu, on reused connections %llu\n",
                st.rtt_p99_ms, (unsigned long long)cst.requests, (unsigned long long)cst.reused_connections);
    } else {
        atomic_store(&stop_threads, 1);
        for (int i = 0; i < n_locks; i++) pthread_join(tids[i], NULL);
        renewals = atomic_load(&base_renewals);
        failures = atomic_load(&base_failures);
        late_p99 = pl_hist_quantile(&base_lateness, 0.99);
        late_max = base_lateness.max_ms;
    }
    /* a lock is lost if our side says so or its estimate ran out */
    int64_t now = pl_now_mono_ms();
    long min_remaining = -1;
    for (int i = 0; i < n_locks; i++) {
        int64_t rem = pl_message_lock_expiry_mono_ms(msgs[i]) - now;
        if (pl_message_lock_state(msgs[i]) != PL_LOCK_HELD || rem <= 0) lost++;
        if (min_remaining < 0 || rem < min_remaining) min_remaining = (long)rem;
    }
    int64_t tc = pl_now_mono_ms();
    if (r) {
        pl_renewer_close(r, 0);
        pl_renewer_free(r);
    }
    double close_ms = (double)(pl_now_mono_ms() - tc);
    (void)close_ms;
    (void)late_max;

    char path[128];
    snprintf(path, sizeof(path), "/$admin/entities/%s", queue);
    admin("DELETE", path, NULL);
    printf("{\"mode\":\"%s\",\"n\":%d,\"lock_s\":%d,\"run_s\":%.1f,\"setup_s\":%.1f,"
           "\"lost\":%ld,\"renewals\":%ld,\"failures\":%ld,\"lateness_p99_ms\":%.2f,"
           "\"cpu_s\":%.3f,\"cpu_us_per_renewal\":%.1f,\"heap_bytes_per_lock\":%.1f,"
           "\"rss_kb_per_lock\":%.2f,\"state_bytes_per_lock\":%.1f,\"threads\":%ld,"
           "\"events\":%ld,\"min_remaining_ms\":%ld,\"connections\":%ld}\n",
           mode, n_locks, lock_s, elapsed, t_setup, lost, renewals, failures, late_p99, cpu,
           renewals ? cpu * 1e6 / (double)renewals : 0.0, (double)(heap_after - heap_before) / n_locks,
           (double)(rss_after - rss_before) / n_locks, (double)state_bytes / n_locks, threads_used, events,
           min_remaining, connections);
    for (int i = 0; i < n_locks; i++) pl_message_free(msgs[i]);
    free(msgs);
    free(tids);
    pl_client_free(client);
    curl_global_cleanup();
    return 0;
}

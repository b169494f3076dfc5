/* peeklock vs raw libcurl: the same HTTP requests, in one run, against a null
 * responder (nginx with canned replies) and against the emulator. Prints wall
 * time, client CPU per operation, signing + parsing cost, connection reuse,
 * and ratios; and the socket floor under raw libcurl (the same send as bytes
 * on a kept-alive socket, no HTTP library). Figures only: nothing here asserts
 * a target. The peek-lock + complete pair also runs a third way, raw libcurl that parses BrokerProperties
 * with cJSON and looks up four fields, as a client reading them must: the floor
 * the mandated JSON library sets.
 *
 *   bench_c --null http://127.0.0.1:PORT [-n N] [--emulator [-m M]]
 * With --emulator the connection string comes from PEEKLOCK_CONNECTION_STRING
 * (tests/c/with_emulator.py), queue "bq". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/perf_event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "peeklock.h"
#include "wire_int.h"

#define QUEUE   "bq"
#define PAYLOAD "{\"order\":12345,\"item\":\"benchmark payload\",\"qty\":3,\"note\":\"............\"}"

typedef struct sample {
    double wall_s, cpu_s;
    long ops, reused, requests;
    double instr; /* user-space instructions (load-independent), -1 if unavailable */
} sample;

/* User-space instruction counter of this thread (perf_event_open), or -1. */
static int instr_fd = -2;

static double instr_now(void)
{
    if (instr_fd == -2) {
        struct perf_event_attr pe;
        memset(&pe, 0, sizeof pe);
        pe.type = PERF_TYPE_HARDWARE;
        pe.size = sizeof pe;
        pe.config = PERF_COUNT_HW_INSTRUCTIONS;
        pe.exclude_kernel = 1;
        pe.exclude_hv = 1;
        instr_fd = (int)syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0);
    }
    if (instr_fd < 0) return -1;
    long long v = 0;
    if (read(instr_fd, &v, sizeof v) != (ssize_t)sizeof v) return -1;
    return (double)v;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this process, user + system, from the scheduler's own runtime
 * accounting (nanosecond resolution; getrusage is tick-sampled). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A loop's sample: sample_start reads the clocks and the connection counters,
 * sample_stop turns them into the loop's figures. */
static sample sample_start(long requests, long reused)
{
    sample s = {0};
    s.wall_s = now_s();
    s.cpu_s = cpu_s();
    s.instr = instr_now();
    s.requests = requests;
    s.reused = reused;
    return s;
}

static void sample_stop(sample *s, long ops, long requests, long reused)
{
    s->wall_s = now_s() - s->wall_s;
    s->cpu_s = cpu_s() - s->cpu_s;
    s->instr = s->instr < 0 ? -1 : instr_now() - s->instr;
    s->ops = ops;
    s->requests = requests - s->requests;
    s->reused = reused - s->reused;
}

static void die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, pl_error_last()->message);
    exit(1);
}

/* ---- the raw libcurl baseline: one easy handle, same requests -------------- */

typedef struct raw {
    CURL *e;
    char *auth_hdr; /* "Authorization: ..." (token made once, like a cache) */
    char base[256];
    char location[1024];
    char broker[2048]; /* the BrokerProperties header of the last reply */
    int json;          /* parse it with cJSON (raw_json_peek_complete_loop) */
    long reused, requests;
} raw;

/* Copies header line b (len bytes) into dst if it is "name: value", value trimmed. */
static void raw_keep(const char *b, size_t len, const char *name, char *dst, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl + 1 || b[nl] != ':' || strncasecmp(b, name, nl) != 0) return;
    const char *v = b + nl + 1;
    while (v < b + len && *v == ' ') v++;
    size_t l = len - (size_t)(v - b);
    while (l && (v[l - 1] == '\r' || v[l - 1] == '\n')) l--;
    if (l < cap) {
        memcpy(dst, v, l);
        dst[l] = 0;
    }
}

static size_t raw_header(char *b, size_t s, size_t n, void *ud)
{
    raw *r = ud;
    size_t len = s * n;
    raw_keep(b, len, "Location", r->location, sizeof r->location);
    if (r->json) raw_keep(b, len, "BrokerProperties", r->broker, sizeof r->broker);
    return len;
}

static size_t raw_body(char *b, size_t s, size_t n, void *ud)
{
    (void)b;
    (void)ud;
    return s * n;
}

static long raw_do(raw *r, const char *method, const char *url, const char *body, int with_ct)
{
    struct curl_slist *h = curl_slist_append(NULL, r->auth_hdr);
    h = curl_slist_append(h, "Expect:");
    h = curl_slist_append(h, with_ct ? "Content-Type: application/json" : "Content-Type:");
    curl_easy_setopt(r->e, CURLOPT_URL, url);
    curl_easy_setopt(r->e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(r->e, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(r->e, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
    curl_easy_setopt(r->e, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") ? method : NULL);
    r->location[0] = 0;
    r->broker[0] = 0;
    long status = 0, connects = -1;
    if (curl_easy_perform(r->e) == CURLE_OK) curl_easy_getinfo(r->e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->e, CURLINFO_NUM_CONNECTS, &connects);
    r->requests++;
    if (connects == 0) r->reused++;
    curl_slist_free_all(h);
    return status;
}

static void raw_init(raw *r, const char *endpoint, const char *key_name, const char *key)
{
    memset(r, 0, sizeof *r);
    snprintf(r->base, sizeof r->base, "%s/%s", endpoint, QUEUE);
    char scope[300], *tok = NULL;
    snprintf(scope, sizeof scope, "%s/%s", endpoint, QUEUE);
    if (pl_sas_token(&tok, scope, key_name, key, (int64_t)time(NULL) + 3600) != PL_OK) die("sas");
    size_t n = strlen(tok) + 32;
    r->auth_hdr = malloc(n);
    snprintf(r->auth_hdr, n, "Authorization: %s", tok);
    pl_free(tok);
    r->e = curl_easy_init();
    curl_easy_setopt(r->e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->e, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(r->e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(r->e, CURLOPT_HEADERFUNCTION, raw_header);
    curl_easy_setopt(r->e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(r->e, CURLOPT_WRITEFUNCTION, raw_body);
}

static void raw_free(raw *r)
{
    curl_easy_cleanup(r->e);
    free(r->auth_hdr);
}

static sample raw_send_loop(raw *r, long n)
{
    char url[300];
    snprintf(url, sizeof url, "%s/messages", r->base);
    sample s = sample_start(r->requests, r->reused);
    for (long i = 0; i < n; i++)
        if (raw_do(r, "POST", url, PAYLOAD, 1) != 201) {
            fprintf(stderr, "raw send failed\n");
            exit(1);
        }
    sample_stop(&s, n, r->requests, r->reused);
    return s;
}

/* ---- the socket floor: the same send as bytes on a kept-alive socket -------- */

/* No HTTP library: what any client pays at least per request (the kernel's
 * socket work and a write and a read), the floor under libcurl's own cost.
 * http endpoints only; replies are read to their Content-Length. */
typedef struct sock {
    int fd;
    char req[4096];
    size_t req_len;
    long requests;
} sock;

static void sock_init(sock *k, const raw *r)
{
    char host[256] = "", port[16] = "80";
    if (sscanf(r->base, "http://%255[^:/]:%15[0-9]", host, port) < 1) die("socket floor: an http endpoint");
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0) die("socket floor: getaddrinfo");
    k->fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (k->fd < 0 || connect(k->fd, ai->ai_addr, ai->ai_addrlen) != 0) die("socket floor: connect");
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const char *path = strchr(r->base + 7, '/');
    int n = snprintf(k->req, sizeof k->req,
                     "POST %s/messages HTTP/1.1\r\nHost: %s:%s\r\nAccept: */*\r\n%s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     path, host, port, r->auth_hdr, strlen(PAYLOAD), PAYLOAD);
    if (n < 0 || (size_t)n >= sizeof k->req) die("socket floor: request too long");
    k->req_len = (size_t)n;
    k->requests = 0;
}

/* One exchange; 0 when a 201 came whole. */
static int sock_do(sock *k)
{
    if (write(k->fd, k->req, k->req_len) != (ssize_t)k->req_len) return -1;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t got = read(k->fd, buf + have, sizeof buf - 1 - have);
        if (got <= 0) return -1;
        have += (size_t)got;
        buf[have] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) continue;
        size_t body = 0;
        for (const char *h = buf; h && h < end; h = strstr(h + 1, "\r\n"))
            if (!strncasecmp(h, "\r\nContent-Length:", 17)) body = strtoul(h + 17, NULL, 10);
        if (have >= (size_t)(end + 4 - buf) + body) break;
    }
    k->requests++;
    return strncmp(buf, "HTTP/1.1 201", 12) ? -1 : 0;
}

static sample sock_send_loop(sock *k, long n)
{
    sample s = sample_start(k->requests, k->requests);
    for (long i = 0; i < n; i++)
        if (sock_do(k) != 0) die("socket floor: send");
    sample_stop(&s, n, k->requests, k->requests);
    return s;
}

static sample raw_pair_loop(raw *r, long n, int json)
{
    char url[300];
    r->json = json;
    snprintf(url, sizeof url, "%s/messages/head?timeout=0", r->base);
    sample s = sample_start(r->requests, r->reused);
    for (long i = 0; i < n; i++) {
        if (raw_do(r, "POST", url, NULL, 0) != 201 || !r->location[0]) {
            fprintf(stderr, "raw peek-lock failed (i=%ld of %ld)\n", i, n);
            exit(1);
        }
        if (json) { /* parse, look up four fields a worker reads, free: no copies, no date parsing */
            cJSON *bp = cJSON_Parse(r->broker);
            const cJSON *tok = cJSON_GetObjectItemCaseSensitive(bp, "LockToken");
            const cJSON *seq = cJSON_GetObjectItemCaseSensitive(bp, "SequenceNumber");
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(bp, "MessageId");
            const cJSON *count = cJSON_GetObjectItemCaseSensitive(bp, "DeliveryCount");
            if (!cJSON_IsString(tok) || !cJSON_IsNumber(seq) || !cJSON_IsString(id) ||
                !cJSON_IsNumber(count)) {
                fprintf(stderr, "raw peek-lock: BrokerProperties lacks a field\n");
                exit(1);
            }
            cJSON_Delete(bp);
        }
        char loc[1024];
        snprintf(loc, sizeof loc, "%s", r->location);
        if (raw_do(r, "DELETE", loc, NULL, 0) != 200) {
            fprintf(stderr, "raw complete failed\n");
            exit(1);
        }
    }
    r->json = 0;
    sample_stop(&s, n, r->requests, r->reused);
    return s;
}

/* The two raw pair loops, kept apart for callgrind's --toggle-collect. */
__attribute__((noinline)) static sample raw_peek_complete_loop(raw *r, long n)
{
    return raw_pair_loop(r, n, 0);
}

__attribute__((noinline)) static sample raw_json_peek_complete_loop(raw *r, long n)
{
    return raw_pair_loop(r, n, 1);
}

/* ---- peeklock ----------------------------------------------------------------- */

static sample pl_send_loop(pl_client *c, long n)
{
    pl_outgoing *o = NULL;
    if (pl_outgoing_new(&o, PAYLOAD, strlen(PAYLOAD)) || pl_outgoing_set_content_type(o, "application/json"))
        die("outgoing");
    pl_client_stats t;
    pl_client_stats_get(c, &t);
    sample s = sample_start((long)t.requests, (long)t.reused_connections);
    for (long i = 0; i < n; i++)
        if (pl_send(c, QUEUE, o) != PL_OK) die("pl_send");
    pl_client_stats_get(c, &t);
    sample_stop(&s, n, (long)t.requests, (long)t.reused_connections);
    pl_outgoing_free(o);
    return s;
}

static sample pl_peek_complete_loop(pl_client *c, long n)
{
    pl_client_stats t;
    pl_client_stats_get(c, &t);
    sample s = sample_start((long)t.requests, (long)t.reused_connections);
    for (long i = 0; i < n; i++) {
        pl_message *m = NULL;
        if (pl_peek_lock(&m, c, QUEUE, 0) != PL_OK) die("pl_peek_lock");
        if (pl_complete(c, m) != PL_OK) die("pl_complete");
        pl_message_free(m);
    }
    pl_client_stats_get(c, &t);
    sample_stop(&s, n, (long)t.requests, (long)t.reused_connections);
    return s;
}

/* ---- pure-core costs: signing, building, parsing -------------------------------- */

#define BROKER_JSON                                                                                          \
    "{\"DeliveryCount\":1,\"EnqueuedSequenceNumber\":0,\"EnqueuedTimeUtc\":\"Sat, 25 Oct 2014 00:56:48 "     \
    "GMT\","                                                                                                 \
    "\"LockToken\":\"acccce0e-7596-4e0c-b216-2d18638ac0dd\",\"LockedUntilUtc\":\"Sat, 25 Oct 2014 00:57:48 " \
    "GMT\","                                                                                                 \
    "\"MessageId\":\"aa68f8aebd8448e194d85fec93e80d55\",\"SequenceNumber\":1,\"State\":\"Active\","          \
    "\"TimeToLive\":922337203685.47754}"

/* The pure core's costs; *json_us is the part of a peek-lock spent in cJSON
 * alone (parse + free of its BrokerProperties), for the breakdown. */
static void core_costs(double *sign_us, double *build_parse_us, double *json_us)
{
    const long n = 4000;
    char *tok = NULL;
    double w = now_s();
    for (long i = 0; i < n; i++) {
        pl_sas_token(&tok, "https://ns.servicebus.windows.net/bq", "RootManageSharedAccessKey",
                     "SGVsbG9Xb3JsZEtleVZhbHVlMTIzNDU2Nzg5MGFiY2Q=", 1700000000 + i);
        pl_free(tok);
    }
    *sign_us = (now_s() - w) / (double)n * 1e6;

    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    o.endpoint = "https://ns.servicebus.windows.net";
    o.key_name = "RootManageSharedAccessKey";
    o.key = "SGVsbG9Xb3JsZEtleVZhbHVlMTIzNDU2Nzg5MGFiY2Q=";
    pl_client *c = NULL;
    if (pl_client_new(&c, &o)) die("client");
    pl_response *resp = NULL;
    pl_response_new(&resp, 201);
    pl_response_add_header(resp, "Transfer-Encoding", "chunked");
    pl_response_add_header(resp, "Content-Type", "application/json");
    pl_response_add_header(
        resp, "Location",
        "https://ns.servicebus.windows.net/bq/messages/1/acccce0e-7596-4e0c-b216-2d18638ac0dd");
    pl_response_add_header(resp, "Server", "Microsoft-HTTPAPI/2.0");
    pl_response_add_header(resp, "BrokerProperties", BROKER_JSON);
    pl_response_add_header(resp, "Date", "Sat, 25 Oct 2014 00:56:48 GMT");
    pl_response_add_header(resp, "priority", "\"high\"");
    pl_response_set_body(resp, PAYLOAD, strlen(PAYLOAD));
    pl_response *ok = NULL;
    pl_response_new(&ok, 200);
    w = now_s();
    for (long i = 0; i < n; i++) {
        pl_request *req = NULL, *set = NULL;
        pl_message *m = NULL;
        if (pl_request_receive(&req, c, QUEUE, 0, 1)) die("build");
        if (pl_response_result(&m, c, req, NULL, resp, 0) != PL_OK) die("parse");
        if (pl_request_settle(&set, c, m, PL_SETTLE_COMPLETE)) die("build settle");
        if (pl_response_result(NULL, c, set, m, ok, 0) != PL_OK) die("parse settle");
        pl_message_free(m);
        pl_request_free(req);
        pl_request_free(set);
    }
    *build_parse_us = (now_s() - w) / (double)n * 1e6;
    w = now_s();
    for (long i = 0; i < n; i++) {
        const char *end = NULL;
        cJSON *root = cJSON_ParseWithLengthOpts(BROKER_JSON, sizeof BROKER_JSON - 1, &end, 0);
        if (!root) die("cJSON");
        cJSON_Delete(root);
    }
    *json_us = (now_s() - w) / (double)n * 1e6;
    pl_response_free(resp);
    pl_response_free(ok);
    pl_client_free(c);
}

static double per_op_us(double v, long ops)
{
    return v / (double)ops * 1e6;
}

#define MAX_ROUNDS 101

/* Per-round figures of one side (peeklock or raw) of one loop. */
typedef struct series {
    double wall[MAX_ROUNDS], cpu[MAX_ROUNDS], instr[MAX_ROUNDS]; /* per op, us (instr: count, -1 if none) */
    int n;
    long reused, requests, ops;
} series;

static void add(series *t, sample s)
{
    t->wall[t->n] = per_op_us(s.wall_s, s.ops);
    t->cpu[t->n] = per_op_us(s.cpu_s, s.ops);
    t->instr[t->n] = s.instr < 0 ? -1 : s.instr / (double)s.ops;
    t->n++;
    t->reused += s.reused;
    t->requests += s.requests;
    t->ops += s.ops;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double t[MAX_ROUNDS];
    memcpy(t, v, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* Median of d (sorted in place) and its interquartile range. */
static double median_iqr(double *d, int n, double *q1, double *q3)
{
    qsort(d, (size_t)n, sizeof(double), cmp_double);
    *q1 = d[n / 4];
    *q3 = d[(3 * n) / 4 < n ? (3 * n) / 4 : n - 1];
    return median(d, n);
}

/* Median of the per-round differences p[i] - r[i] (the two sides of a round ran
 * back to back, so load from elsewhere hits both alike), and its spread as the
 * interquartile range. */
static double median_diff(const double *p, const double *r, int n, double *q1, double *q3)
{
    double d[MAX_ROUNDS];
    for (int i = 0; i < n; i++) d[i] = p[i] - r[i];
    return median_iqr(d, n, q1, q3);
}

/* Median of the per-round ratios p[i] / r[i], paired alike: a slow spell that
 * lasts a round moves both sides of it. */
static double median_ratio(const double *p, const double *r, int n, double *q1, double *q3)
{
    double q[MAX_ROUNDS];
    for (int i = 0; i < n; i++) q[i] = p[i] / r[i];
    return median_iqr(q, n, q1, q3);
}

/* One line: series p against series base (named base_name), per request. */
static void report(const char *target, const char *what, int per_op_requests, const series *p,
                   const char *base_name, const series *r)
{
    double q1, q3, w1, w3, k = per_op_requests;
    double pw = median(p->wall, p->n), rw = median(r->wall, r->n);
    double wr = median_ratio(p->wall, r->wall, p->n, &w1, &w3);
    double dc = median_diff(p->cpu, r->cpu, p->n, &q1, &q3);
    printf("%-9s %-21s %6ld ops x2 (%d rounds, medians) | wall %7.1f us/op vs %s %7.1f (ratio %.3f, "
           "IQR %.3f..%.3f) | "
           "client CPU %6.1f vs %s %6.1f us/op, extra per request %+.2f us (IQR %+.2f..%+.2f) | "
           "reuse %.2f%% vs %s %.2f%%\n",
           target, what, p->ops, p->n, pw, base_name, rw, wr, w1, w3, median(p->cpu, p->n), base_name,
           median(r->cpu, r->n), dc / k, q1 / k, q3 / k,
           p->requests ? 100.0 * (double)p->reused / (double)p->requests : 0, base_name,
           r->requests ? 100.0 * (double)r->reused / (double)r->requests : 0);
    if (p->instr[0] >= 0 && r->instr[0] >= 0) {
        double di = median_diff(p->instr, r->instr, p->n, &q1, &q3);
        printf("%-9s %-21s user-space instructions per request %+.0f over %s (load-independent)\n", target,
               what, di / k, base_name);
    }
}

static void run_target(const char *target, pl_client *c, const char *endpoint, const char *kn,
                       const char *key, long n, int rounds)
{
    raw r;
    raw_init(&r, endpoint, kn, key);
    sock so;
    sock_init(&so, &r);
    /* warm-up: open the connections */
    pl_send_loop(c, 5);
    raw_send_loop(&r, 10);
    sock_send_loop(&so, 10);
    pl_peek_complete_loop(c, 5);
    raw_peek_complete_loop(&r, 5);
    raw_json_peek_complete_loop(&r, 5);
    long k = n / rounds;
    raw_send_loop(&r, k * rounds); /* unmeasured: messages for the third pair loop below */
    /* Many short rounds; in each, the sides run back to back, and the median over
     * rounds is reported. Sends alternate which side goes first; the three pair loops
     * cycle through all six orders (so with a multiple of 6 rounds each loop runs in
     * each place, and after each other loop, equally often). */
    static series ps, rs, ks, pp, rp, rj;
    memset(&ks, 0, sizeof ks);
    memset(&ps, 0, sizeof ps);
    memset(&rs, 0, sizeof rs);
    memset(&pp, 0, sizeof pp);
    memset(&rp, 0, sizeof rp);
    memset(&rj, 0, sizeof rj);
    for (int i = 0; i < rounds; i++) {
        if (i % 2) {
            add(&rs, raw_send_loop(&r, k));
            add(&ks, sock_send_loop(&so, k));
            add(&ps, pl_send_loop(c, k));
        } else {
            add(&ps, pl_send_loop(c, k));
            add(&ks, sock_send_loop(&so, k));
            add(&rs, raw_send_loop(&r, k));
        }
    }
    /* The pair three ways: peeklock (0), raw (1), and raw that also parses BrokerProperties
     * with cJSON (2): the floor the mandated JSON library sets. */
    static const int orders[6][3] = {{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}, {1, 0, 2}};
    for (int i = 0; i < rounds; i++) {
        for (int j = 0; j < 3; j++) {
            switch (orders[i % 6][j]) {
            case 0: add(&pp, pl_peek_complete_loop(c, k)); break;
            case 1: add(&rp, raw_peek_complete_loop(&r, k)); break;
            default: add(&rj, raw_json_peek_complete_loop(&r, k)); break;
            }
        }
    }
    report(target, "send", 1, &ps, "raw", &rs);
    report(target, "raw libcurl send", 1, &rs, "socket", &ks);
    report(target, "peek-lock + complete", 2, &pp, "raw", &rp);
    report(target, "raw+cJSON pair", 2, &rj, "raw", &rp);
    report(target, "peek-lock + complete", 2, &pp, "floor", &rj);
    raw_free(&r);
    close(so.fd);
}

int main(int argc, char **argv)
{
    const char *null_url = NULL;
    int emulator = 0;
    long n = 8400, m = 1260;
    int rounds = 24;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--null") && i + 1 < argc)
            null_url = argv[++i];
        else if (!strcmp(argv[i], "--emulator"))
            emulator = 1;
        else if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = atol(argv[++i]);
        else if (!strcmp(argv[i], "-m") && i + 1 < argc)
            m = atol(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--null")) {
            fprintf(stderr, "bench: --null needs a URL\n");
            return 2;
        } else {
            fprintf(stderr, "usage: bench_c [--null URL] [-n N] [--emulator] [-m M] [-r ROUNDS]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "bench: -r must be 1..%d\n", MAX_ROUNDS);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    double sign_us, bp_us, json_us;
    core_costs(&sign_us, &bp_us, &json_us);
    for (int i = 1; i < 5; i++) { /* best of five: the machine may be busy */
        double a, b, j;
        core_costs(&a, &b, &j);
        if (a < sign_us) sign_us = a;
        if (b < bp_us) bp_us = b;
        if (j < json_us) json_us = j;
    }
    printf("peeklock %s C benchmark (libcurl %s)\n", pl_version(),
           curl_version_info(CURLVERSION_NOW)->version);
    printf("pure core (best of 5): SAS signing, uncached (once per scope per token lifetime) %.2f us; "
           "build request + parse reply with the cached token %.2f us per operation "
           "(peek-lock + complete pair %.2f us)\n",
           sign_us, bp_us / 2, bp_us);
    printf("  of which cJSON alone (parse + free of a peek-lock's BrokerProperties, once per pair): %.2f us, "
           "%.2f us per request of the pair\n",
           json_us, json_us / 2);
    if (null_url) {
        pl_client_options o = PL_CLIENT_OPTIONS_INIT;
        o.endpoint = null_url;
        o.key_name = "RootManageSharedAccessKey";
        o.key = "null-responder-key";
        o.pool_size = 1;
        pl_client *c = NULL;
        if (pl_client_new(&c, &o)) die("client");
        run_target("null", c, pl_client_endpoint(c), o.key_name, o.key, n, rounds);
        pl_client_free(c);
    }
    if (emulator) {
        const char *cs = getenv("PEEKLOCK_CONNECTION_STRING");
        if (!cs) {
            fprintf(stderr, "bench: --emulator needs PEEKLOCK_CONNECTION_STRING\n");
            return 2;
        }
        pl_connstr *p = NULL;
        if (pl_connstr_parse(&p, cs)) die("connection string");
        pl_client *c = NULL;
        pl_client_options o = PL_CLIENT_OPTIONS_INIT;
        o.connection_string = cs;
        o.pool_size = 1;
        if (pl_client_new(&c, &o)) die("client");
        run_target("emulator", c, pl_client_endpoint(c), pl_connstr_key_name(p), pl_connstr_key(p), m,
                   rounds);
        pl_client_free(c);
        pl_connstr_free(p);
    }
    curl_global_cleanup();
    return 0;
}

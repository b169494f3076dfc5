/* One keep-alive client running the peek-lock + complete loop, over raw libcurl.
 *
 *   loadgen BASE_URL QUEUE AUTHORIZATION SECONDS [baseline]
 *
 * BASE_URL is http://host:port, AUTHORIZATION the whole header value (a SAS token computed
 * once by the caller, valid for the run). Each cycle is a POST QUEUE/messages/head?timeout=5
 * (peek-lock) and a DELETE of the Location it answers (complete). With "baseline" the DELETE
 * goes to a fixed settle path whatever the first answer was (a server with no broker behind it).
 *
 * Prints one line of JSON: ops, errors, elapsed seconds, latency percentiles (ms) and the
 * program's own CPU time per operation (us), so the benchmark can tell server cost from client
 * cost. Built by bench_emulator.py with `cc -O2 ... -lcurl`; it is a benchmark tool only.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

struct lat {
    double *v;
    size_t n, cap;
};

static void lat_add(struct lat *l, double x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 65536;
        l->v = realloc(l->v, l->cap * sizeof(double));
        if (!l->v) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(2);
        }
    }
    l->v[l->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const struct lat *l, double p)
{
    if (!l->n) return 0.0;
    long k = (long)(p / 100.0 * (double)l->n + 0.5) - 1;
    if (k < 0) k = 0;
    if ((size_t)k >= l->n) k = (long)l->n - 1;
    return l->v[k];
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* The Location header of the last answer (the settle URL of a locked message). */
struct hdr {
    char location[2048];
};

static size_t on_header(char *buf, size_t size, size_t n, void *user)
{
    struct hdr *h = user;
    size_t len = size * n;
    if (len > 9 && strncasecmp(buf, "location:", 9) == 0) {
        size_t i = 9;
        while (i < len && (buf[i] == ' ' || buf[i] == '\t')) i++;
        size_t j = len;
        while (j > i && (buf[j - 1] == '\r' || buf[j - 1] == '\n' || buf[j - 1] == ' ')) j--;
        if (j - i < sizeof h->location) {
            memcpy(h->location, buf + i, j - i);
            h->location[j - i] = 0;
        }
    }
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *user)
{
    (void)buf;
    (void)user;
    return size * n; /* bodies are not needed, only counted as received */
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s BASE_URL QUEUE AUTHORIZATION SECONDS [baseline]\n", argv[0]);
        return 2;
    }
    const char *base = argv[1], *queue = argv[2], *auth = argv[3];
    double seconds = atof(argv[4]);
    int baseline = argc > 5 && strcmp(argv[5], "baseline") == 0;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 2;
    CURL *c = curl_easy_init();
    if (!c) return 2;

    char peek_url[2048], fixed_url[2048];
    snprintf(peek_url, sizeof peek_url, "%s/%s/messages/head?timeout=5", base, queue);
    snprintf(fixed_url, sizeof fixed_url, "%s/%s/messages/1/00000000-0000-0000-0000-000000000000", base,
             queue);
    char *auth_line = malloc(strlen(auth) + 32);
    if (!auth_line) return 2;
    sprintf(auth_line, "Authorization: %s", auth);
    struct curl_slist *hl = NULL;
    hl = curl_slist_append(hl, auth_line);
    hl = curl_slist_append(hl, "Expect:");
    hl = curl_slist_append(hl, "Accept:");

    struct hdr h;
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);

    struct lat lat = {0};
    long ops = 0, errors = 0, conns = 0;
    double cpu0 = cpu_s(), t0 = now_s(), deadline = t0 + seconds;
    while (now_s() < deadline) {
        long status = 0, nc = 0;
        h.location[0] = 0;
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(c, CURLOPT_URL, peek_url);
        double a = now_s();
        CURLcode rc = curl_easy_perform(c);
        double b = now_s();
        ops++;
        lat_add(&lat, b - a);
        if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &nc);
        conns += nc;
        if (!baseline && (rc != CURLE_OK || status != 201 || !h.location[0])) {
            errors++;
            continue;
        }
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
        curl_easy_setopt(c, CURLOPT_URL, baseline ? fixed_url : h.location);
        rc = curl_easy_perform(c);
        double e = now_s();
        ops++;
        lat_add(&lat, e - b);
        status = 0;
        if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &nc);
        conns += nc;
        if (rc != CURLE_OK || status != 200) errors++;
    }
    double elapsed = now_s() - t0, cpu = cpu_s() - cpu0;
    qsort(lat.v, lat.n, sizeof(double), cmp_double);
    printf("{\"ops\": %ld, \"errors\": %ld, \"connections\": %ld, \"elapsed\": %.6f, "
           "\"p50_ms\": %.4f, \"p99_ms\": %.4f, \"p999_ms\": %.4f, \"max_ms\": %.4f, "
           "\"gen_cpu_us\": %.2f}\n",
           ops, errors, conns, elapsed, pct(&lat, 50) * 1e3, pct(&lat, 99) * 1e3, pct(&lat, 99.9) * 1e3,
           lat.n ? lat.v[lat.n - 1] * 1e3 : 0.0, ops ? cpu / (double)ops * 1e6 : 0.0);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    curl_global_cleanup();
    free(lat.v);
    free(auth_line);
    return 0;
}

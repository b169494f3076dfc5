/* Emulator helpers of support.h: admin calls over plain libcurl. */
#include "support.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "error_int.h"

const char *pl_test_connection_string(void)
{
    const char *s = getenv("PEEKLOCK_CONNECTION_STRING");
    if (!s) {
        fprintf(stderr, "PEEKLOCK_CONNECTION_STRING is not set: run under tests/c/with_emulator.py\n");
        exit(2);
    }
    return s;
}

const char *pl_test_base_url(void)
{
    static char base[256];
    if (!base[0]) {
        pl_connstr *cs = NULL;
        if (pl_connstr_parse(&cs, pl_test_connection_string()) != PL_OK) {
            fprintf(stderr, "bad connection string: %s\n", pl_error_last()->message);
            exit(2);
        }
        snprintf(base, sizeof base, "%s", pl_connstr_endpoint(cs));
        pl_connstr_free(cs);
    }
    return base;
}

static size_t collect(char *p, size_t s, size_t n, void *ud)
{
    pl_buf_append(ud, p, s * n);
    return s * n;
}

int pl_test_admin(const char *method, const char *path, const char *json, char **body_out)
{
    CURL *e = curl_easy_init();
    if (!e) return -1;
    char url[1024];
    snprintf(url, sizeof url, "%s%s", pl_test_base_url(), path);
    pl_buf b = PL_BUF_INIT;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (json) { curl_easy_setopt(e, CURLOPT_POSTFIELDS, json); }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    long status = -1;
    if (curl_easy_perform(e) == CURLE_OK) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    char *body = pl_buf_detach(&b);
    if (body_out)
        *body_out = body;
    else
        free(body);
    return (int)status;
}

int pl_test_entity(const char *path, const char *kind, int lock_duration_s, int max_delivery)
{
    char p[512], j[256];
    snprintf(p, sizeof p, "/$admin/entities/%s", path);
    snprintf(j, sizeof j, "{\"kind\":\"%s\",\"lock_duration\":%d,\"max_delivery_count\":%d}", kind,
             lock_duration_s, max_delivery);
    return pl_test_admin("PUT", p, j, NULL);
}

int pl_test_advance(double seconds)
{
    char j[64];
    snprintf(j, sizeof j, "{\"seconds\":%g}", seconds);
    return pl_test_admin("POST", "/$admin/clock/advance", j, NULL);
}

int pl_test_fault(const char *json)
{
    return pl_test_admin("POST", "/$admin/faults", json, NULL);
}
int pl_test_clear_faults(void)
{
    return pl_test_admin("DELETE", "/$admin/faults", NULL, NULL);
}

static cJSON *state_entity(cJSON *root, const char *entity)
{
    cJSON *ents = cJSON_GetObjectItem(root, "entities");
    if (!ents) return NULL;
    if (cJSON_IsObject(ents)) {
        cJSON *e = cJSON_GetObjectItem(ents, entity);
        if (e) return e;
    }
    cJSON *it;
    cJSON_ArrayForEach(it, ents)
    {
        cJSON *p = cJSON_GetObjectItem(it, "path");
        if (!p) p = cJSON_GetObjectItem(it, "name");
        if ((it->string && pl_strcaseeq(it->string, entity)) ||
            (cJSON_IsString(p) && pl_strcaseeq(p->valuestring, entity)))
            return it;
    }
    return NULL;
}

/* The entity's part of /$admin/state (NULL if the state or the entity is
 * missing); *root is what to cJSON_Delete afterwards. */
static cJSON *fetch_entity_state(const char *entity, cJSON **root)
{
    char *body = NULL;
    *root = NULL;
    if (pl_test_admin("GET", "/$admin/state", NULL, &body) != 200) {
        free(body);
        return NULL;
    }
    *root = cJSON_Parse(body);
    free(body);
    return *root ? state_entity(*root, entity) : NULL;
}

int pl_test_completed_count(const char *entity, const char *message_id)
{
    cJSON *root, *e = fetch_entity_state(entity, &root);
    int n = -1;
    if (e) {
        cJSON *c = cJSON_GetObjectItem(e, "completed");
        cJSON *v = c ? cJSON_GetObjectItem(c, message_id) : NULL;
        n = cJSON_IsNumber(v) ? v->valueint : 0;
    }
    cJSON_Delete(root);
    return n;
}

int pl_test_message_count(const char *entity)
{
    cJSON *root, *e = fetch_entity_state(entity, &root);
    int n = -1;
    if (e) {
        cJSON *m = cJSON_GetObjectItem(e, "messages");
        n = cJSON_IsArray(m) ? cJSON_GetArraySize(m) : -1;
    }
    cJSON_Delete(root);
    return n;
}

void pl_test_send_id(pl_client *c, const char *entity, const char *id)
{
    pl_outgoing *o = NULL;
    REQUIRE(pl_outgoing_new(&o, "m", 1) == PL_OK);
    REQUIRE(pl_outgoing_set_broker(o, "MessageId", id) == PL_OK);
    REQUIRE(pl_send(c, entity, o) == PL_OK);
    pl_outgoing_free(o);
}

/* CA bundle discovery for libcurl builds that run on other distributions than their own. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ca_int.h"

static const char *const pl_ca_layouts[] = {
    "/etc/ssl/certs/ca-certificates.crt",                /* Debian, Ubuntu, Arch, Gentoo */
    "/etc/pki/tls/certs/ca-bundle.crt",                  /* Fedora, RHEL, CentOS */
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* RHEL 7 and later */
    "/etc/ssl/ca-bundle.pem",                            /* openSUSE, SLES */
    "/etc/ssl/cert.pem",                                 /* Alpine, Void, the BSDs */
    "/etc/pki/tls/cacert.pem",                           /* OpenELEC */
};

static pthread_once_t pl_ca_once = PTHREAD_ONCE_INIT;
static const char *pl_ca_found;

static int readable(const char *path)
{
    return path && *path && access(path, R_OK) == 0;
}

static void pl_ca_find(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (v->age >= CURLVERSION_SEVENTH && (readable(v->cainfo) || readable(v->capath)))
        return; /* libcurl's own default is there: keep it */
    const char *env = getenv("SSL_CERT_FILE");
    if (readable(env)) {
        pl_ca_found = env;
        return;
    }
    for (size_t i = 0; i < sizeof pl_ca_layouts / sizeof pl_ca_layouts[0]; i++) {
        if (readable(pl_ca_layouts[i])) {
            pl_ca_found = pl_ca_layouts[i];
            return;
        }
    }
}

const char *pl_ca_default(void)
{
    pthread_once(&pl_ca_once, pl_ca_find);
    return pl_ca_found;
}

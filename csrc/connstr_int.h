/* Private: parsed connection string. */
#ifndef PEEKLOCK_CONNSTR_INT_H
#define PEEKLOCK_CONNSTR_INT_H
#include "peeklock.h"

struct pl_connstr {
    char *endpoint; /* "https://host[:port]" or "http://..." (dev emulator) */
    char *host;     /* host without port */
    char *key_name, *key, *sas_token, *entity_path;
    char *issuer, *secret; /* legacy ACS form (parsed; ACS itself is retired) */
    char *plaintext_host;  /* AllowPlaintextHost=: the one non-loopback host an http://
                              endpoint may send credentials to in clear */
    int dev;
};

/* Normalises an endpoint URL ("sb://", "https://", "http://") into
 * "scheme://host[:port]": http:// when dev, else https://. `what` names the
 * argument in errors. */
int pl_endpoint_normalize(char **out, char **host_out, const char *ep, int dev, const char *what);
#endif

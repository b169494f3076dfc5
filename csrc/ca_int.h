/* Where the CA bundle is, when the client was given none (pl_client_options.ca_file). */
#ifndef PEEKLOCK_CA_INT_H
#define PEEKLOCK_CA_INT_H

/* The CA file to verify servers with when none was configured: NULL when libcurl's own
 * built-in default exists on this system (a system libcurl: the distribution's layout),
 * else $SSL_CERT_FILE, else the first readable bundle of the common layouts (Debian,
 * RHEL/Fedora, SUSE, Alpine ...): a libcurl linked into a portable package was built on one
 * distribution and runs on others. Computed once per process; never freed. */
const char *pl_ca_default(void);

#endif

/* Found first on the include path of the pure core (peeklock_pure, see
 * csrc/CMakeLists.txt) and of what links it alone: the pure core does no I/O. */
#error "libcurl in the pure core: only drivers (client.c, aio.c, renewer.c) may include <curl/curl.h>"

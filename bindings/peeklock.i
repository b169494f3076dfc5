/*
 * peeklock.i — the ONE SWIG interface over csrc/include/peeklock.h, shared by
 * every language binding (Python: bindings/python.i, Lua: bindings/lua.i).
 *
 * This file is language-neutral. A language file declares %module, defines the
 * typemap hooks below, then does  %include "peeklock.i".
 *
 * Typemap hooks each language file provides (all patterns come straight from
 * the header, so they need no %apply):
 *
 *   int PL_STATUS            return of every fallible call (applied below):
 *                            < 0 -> raise / return nil, err (pl_error_last());
 *                            PL_OK / PL_EMPTY -> nothing (or the out value).
 *   T **out                  for T in pl_client, pl_message, pl_renewer,
 *                            pl_outgoing, pl_batch, pl_connstr, pl_event,
 *                            pl_request, pl_response: an output argument turned
 *                            into a return value that owns the object (its
 *                            destructor below frees it); NULL -> nil/None.
 *   char **out               an owned string, returned and freed with pl_free.
 *                            (The header returns owned strings only this way; a
 *                            future char * return that the caller frees must be
 *                            declared %newobject here, with a pl_free newfree.)
 *   char **out2              a second owned string after char **out
 *                            (pl_entity_destination), returned with it: Python a
 *                            (first, second) tuple, Lua two more values; NULL ->
 *                            None/nil.
 *   (const void *body, size_t len)   a byte string in.
 *   size_t *len (with a const void * return)   the return becomes a byte string.
 *   pl_client_stats *out, pl_renewer_stats *out, pl_run_tallies *out   a table/dict out.
 *   int *outcome             pl_renewer_finish's PL_FINISH_*, returned.
 *
 * Ownership: every opaque type gets a destructor that calls its pl_*_free; the
 * explicit pl_*_free functions are therefore not wrapped (no double free).
 * Parents stay alive in C: a pl_message and a pl_renewer hold a reference to
 * their pl_client, and pl_client_free defers the real free until they are
 * gone, so a binding may drop a client object before its messages.
 *
 * Blocking: only these calls can block (network, long polls, thread joins):
 * pl_send, pl_send_batch, pl_peek_lock, pl_receive_and_delete, pl_renew_lock,
 * pl_unlock, pl_complete, pl_renewer_finish, pl_renewer_close,
 * pl_renewer_wait_event and the pl_renewer destructor. Language files release their interpreter lock around
 * exactly those (Python: %thread in python.i); nothing else releases it.
 */

%{
#include "peeklock.h"
%}

%include <stdint.i>

/* ---- opaque types: no constructors, a destructor each ------------------- */

%nodefaultctor pl_client;   %nodefaultdtor pl_client;
%nodefaultctor pl_message;  %nodefaultdtor pl_message;
%nodefaultctor pl_renewer;  %nodefaultdtor pl_renewer;
%nodefaultctor pl_outgoing; %nodefaultdtor pl_outgoing;
%nodefaultctor pl_batch;    %nodefaultdtor pl_batch;
%nodefaultctor pl_connstr;  %nodefaultdtor pl_connstr;
%nodefaultctor pl_event;    %nodefaultdtor pl_event;
%nodefaultctor pl_request;  %nodefaultdtor pl_request;
%nodefaultctor pl_response; %nodefaultdtor pl_response;
%nodefaultctor pl_aio;      %nodefaultdtor pl_aio;
%nodefaultctor pl_aio_done; %nodefaultdtor pl_aio_done;
%nodefaultctor pl_run;      %nodefaultdtor pl_run;

struct pl_client {};
struct pl_message {};
struct pl_renewer {};
struct pl_outgoing {};
struct pl_batch {};
struct pl_connstr {};
struct pl_event {};
struct pl_request {};
struct pl_response {};
struct pl_aio {};
struct pl_aio_done {};
struct pl_run {};

%extend pl_client   { ~pl_client()   { pl_client_free($self); } }
%extend pl_message  { ~pl_message()  { pl_message_free($self); } }
%extend pl_renewer  { ~pl_renewer()  { pl_renewer_free($self); } }
%extend pl_outgoing { ~pl_outgoing() { pl_outgoing_free($self); } }
%extend pl_batch    { ~pl_batch()    { pl_batch_free($self); } }
%extend pl_connstr  { ~pl_connstr()  { pl_connstr_free($self); } }
%extend pl_event    { ~pl_event()    { pl_event_free($self); } }
%extend pl_request  { ~pl_request()  { pl_request_free($self); } }
%extend pl_response { ~pl_response() { pl_response_free($self); } }
%extend pl_aio      { ~pl_aio()      { pl_aio_free($self); } }
%extend pl_aio_done { ~pl_aio_done() { pl_aio_done_free($self); } }
%extend pl_run      { ~pl_run()      { pl_run_free($self); } }

%ignore pl_client_free;
%ignore pl_message_free;
%ignore pl_renewer_free;
%ignore pl_outgoing_free;
%ignore pl_batch_free;
%ignore pl_connstr_free;
%ignore pl_event_free;
%ignore pl_request_free;
%ignore pl_response_free;
%ignore pl_aio_free;
%ignore pl_aio_done_free;
%ignore pl_run_free;
%ignore pl_aio_stats;
%ignore pl_free;

/* Callbacks and option structs carrying them cannot cross into a scripting
 * language safely (the renewer thread may call them). Each language builds its
 * clients and renewers in C of its own: it fills the options struct after
 * pl_client_options_init / pl_renewer_options_init from the host's values and
 * sets its own log hook (Python: bindings/python/glue.c; Lua: from a table),
 * and uses pl_client_set_bearer_token for a token provider. A processor's run
 * (pl_run_new) is built the same way from its options struct. */
%ignore pl_token_cb;
%ignore pl_log_fn;
%ignore pl_log_record;
%ignore pl_client_options;
%ignore pl_client_options_init;
%ignore pl_client_new;
%ignore pl_renewer_options;
%ignore pl_renewer_options_init;
%ignore pl_renewer_new;
%ignore pl_run_options;
%ignore pl_run_options_init;
%ignore pl_run_new;
%ignore pl_error;
%ignore pl_error_last;
/* The raw stats structs are returned as tables/dicts by the stats hooks. */
%ignore pl_client_stats;
%ignore pl_renewer_stats;
%ignore pl_run_tallies;

/* ---- fallible calls: int PL_STATUS ------------------------------------- */

%apply int PL_STATUS {
  int pl_sas_token, int pl_sas_token_raw, int pl_connstr_parse,
  int pl_client_new_from_connection_string, int pl_client_set_bearer_token,
  int pl_client_stats_get,
  int pl_outgoing_new, int pl_outgoing_set_content_type, int pl_outgoing_set_broker,
  int pl_outgoing_set_time_to_live, int pl_outgoing_set_scheduled_enqueue_time,
  int pl_outgoing_set_force_persistence, int pl_outgoing_set_resend, int pl_outgoing_add_string, int pl_outgoing_add_int,
  int pl_outgoing_add_double, int pl_outgoing_add_bool, int pl_outgoing_add_datetime,
  int pl_batch_new, int pl_batch_add,
  int pl_send, int pl_send_batch, int pl_peek_lock, int pl_receive_and_delete,
  int pl_renew_lock, int pl_unlock, int pl_complete,
  int pl_message_lock_handle, int pl_client_attach, int pl_check_entity, int pl_entity_destination,
  int pl_check_timeout,
  int pl_check_process_option,
  int pl_renewer_add, int pl_renewer_remove, int pl_renewer_close,
  int pl_renewer_hold, int pl_renewer_finish, int pl_finish_error,
  int pl_renewer_next_event, int pl_renewer_wait_event, int pl_renewer_stats_get, int pl_run_tallies_get,
  int pl_request_send, int pl_request_send_batch, int pl_request_receive, int pl_request_settle,
  int pl_response_new, int pl_response_add_header, int pl_response_set_body,
  int pl_response_result, int pl_http_status_error,
  int pl_aio_new, int pl_aio_send, int pl_aio_send_batch, int pl_aio_peek_lock,
  int pl_aio_receive_and_delete, int pl_aio_renew_lock, int pl_aio_unlock, int pl_aio_complete,
  int pl_aio_unlock_detached, int pl_aio_cancel, int pl_aio_close, int pl_aio_finish,
  int pl_aio_idle
};
/* (pl_redact is left out on purpose: a binding calls it while making an error, so
 * a binding that offers it writes its own wrapper, which fails by returning no string
 * and never raises another error: Python's is in glue.c; Lua leaves it out.) */
%ignore pl_redact;

/* The asynchronous engine (pl_aio_*) is bound by languages that define
 * PL_BIND_AIO and provide its hooks (uint64_t *id out, pl_aio / pl_aio_done
 * **out, a drain helper); others leave it out. Its destructor joins a thread:
 * such a language releases its interpreter lock around it. */
#ifndef PL_BIND_AIO
%rename("$ignore", regextarget=1) "^pl_aio_";
%ignore pl_aio;
%ignore pl_aio_done;
#endif

/* ---- helpers every binding shares --------------------------------------- */

%inline %{
/* Address of an object, so a binding can match a renewer event's (borrowed)
 * message with the object it already holds. */
static uintptr_t pl_message_address(const pl_message *m) { return (uintptr_t)m; }
%}

/* ---- the header itself --------------------------------------------------- */

%include "peeklock.h"

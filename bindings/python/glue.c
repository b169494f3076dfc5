/*
 * glue.c — the part of peeklock._core that SWIG does not generate: the bridge from
 * pl_error_last() to the exception classes, the log hook, the client and renewer
 * built from their options structs, the C getters and methods of peeklock.Message
 * and peeklock.Client (python/peeklock/client.py), and the asynchronous engine's
 * submit and completions (peeklock.aio). Its functions join the SWIG-generated
 * ones in the module at import (pl_py_glue_init, called from bindings/python.i);
 * handles are SWIG's objects, read and made through pl_py_handle_ptr /
 * pl_py_handle_new (python.i).
 */
#include "glue.h"

#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <structmember.h>

#include "peeklock.h"
#include "pl_fields.h"

/* ---- errors ------------------------------------------------------------- */

/* Python callable (code, http_status, retryable, message) -> exception instance,
 * registered by peeklock.errors at import. */
static PyObject *pl_py_error_factory = NULL;

void pl_py_raise(int code)
{
    const pl_error *e = pl_error_last();
    int status = 0, retryable = 0;
    const char *text = NULL;
    if (e && e->code == code) {
        status = e->http_status;
        retryable = e->retryable;
        if (e->message && e->message[0]) text = e->message;
    }
    if (!text) text = pl_strerror(code);
    PyObject *msg = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    if (!msg) return;
    if (pl_py_error_factory) {
        PyObject *exc = PyObject_CallFunction(pl_py_error_factory, "iiiO", code, status, retryable, msg);
        Py_DECREF(msg);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return;
    }
    PyErr_SetObject(PyExc_RuntimeError, msg);
    Py_DECREF(msg);
}

/* Stores f, a callable, in *slot for good. */
static PyObject *pl_py_register(PyObject **slot, PyObject *f, const char *what)
{
    if (!PyCallable_Check(f)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable", what);
        return NULL;
    }
    Py_INCREF(f);
    Py_XSETREF(*slot, f);
    Py_RETURN_NONE;
}

/* None for a status >= 0; NULL with the exception of a PL_E* code. */
static PyObject *pl_py_result(int rc)
{
    if (rc < 0) {
        pl_py_raise(rc);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* An OutcomeUnknownError made when the factory is registered, for when out of
 * memory leaves no other way to say an outcome is unknown (pl_py_aio_lost). */
static PyObject *pl_py_unknown_spare = NULL;

#define PL_PY_UNKNOWN_TEXT                                                                                   \
    "out of memory: the outcome of the %s could not be told; it may or may not have been carried out"

/* pl_py_set_error_factory(factory) */
static PyObject *pl_py_set_error_factory(PyObject *module, PyObject *factory)
{
    PyObject *r = pl_py_register(&pl_py_error_factory, factory, "factory");
    (void)module;
    if (r) {
        PyObject *text = PyUnicode_FromFormat(PL_PY_UNKNOWN_TEXT, "operation");
        PyObject *spare = text ? PyObject_CallFunction(factory, "iiiN", PL_EUNKNOWN, 0, 0, text) : NULL;
        if (!spare) {
            Py_DECREF(r);
            return NULL;
        }
        Py_XSETREF(pl_py_unknown_spare, spare);
    }
    return r;
}

/* pl_py_set_orphan_warner(warner): warner(entity) says an orphaned lock (peek_lock's
 * fast path). */
static PyObject *pl_py_orphan_warner = NULL;
static PyObject *pl_py_set_orphan_warner(PyObject *module, PyObject *warner)
{
    (void)module;
    return pl_py_register(&pl_py_orphan_warner, warner, "warner");
}

/* pl_py_error_last(): the last error on this thread, as (code, http_status,
 * retryable, message). */
static PyObject *pl_py_error_last(PyObject *module, PyObject *unused)
{
    const pl_error *e = pl_error_last();
    (void)module;
    (void)unused;
    return Py_BuildValue("(iiis)", e->code, e->http_status, e->retryable, e->message ? e->message : "");
}

/* pl_redact(text): text through the core's list of secret forms, or None when it
 * cannot be (not a str, not encodable as UTF-8, a NUL inside, out of memory):
 * never an exception, as its caller is making one. */
static PyObject *pl_py_redact(PyObject *module, PyObject *text)
{
    Py_ssize_t n = 0;
    const char *s = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
    char *red = NULL;
    PyObject *r = NULL;
    (void)module;
    if (s && strlen(s) == (size_t)n && pl_redact(&red, s) == PL_OK)
        r = PyUnicode_DecodeUTF8(red, (Py_ssize_t)strlen(red), "replace");
    pl_free(red);
    if (r) return r;
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* ---- the log hook ------------------------------------------------------- */

/* Python callable (kind, operation, entity, code, http_status, attempt, delay_ms,
 * message), registered by peeklock.client at import: the log hook of every client
 * (pl_client_options.log_fn, set by pl_py_client_new), told each retry and each
 * failed call. The hook runs on the thread that made the call, which released the
 * GIL around the request: it takes the GIL back for the handler, then releases it
 * again. Only failures call it: a call that succeeds at once costs nothing more.
 * Never called while the interpreter finalizes. */
static PyObject *pl_py_log_handler = NULL;

static void pl_py_log(void *userdata, const pl_log_record *r)
{
    PyGILState_STATE g;
    (void)userdata;
#if PY_VERSION_HEX >= 0x030D0000
    if (!Py_IsInitialized() || Py_IsFinalizing()) return;
#else
    if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
#endif
    g = PyGILState_Ensure();
    if (pl_py_log_handler) {
        PyObject *handler = pl_py_log_handler, *res;
        Py_INCREF(handler);
        res = PyObject_CallFunction(
            handler, "isNiiilN", r->kind, r->operation,
            PyUnicode_DecodeUTF8(r->entity, (Py_ssize_t)strlen(r->entity), "replace"), r->code,
            r->http_status, r->attempt, r->delay_ms,
            PyUnicode_DecodeUTF8(r->message, (Py_ssize_t)strlen(r->message), "replace"));
        if (!res) PyErr_WriteUnraisable(handler); /* a handler's failure stays out of the call */
        Py_XDECREF(res);
        Py_DECREF(handler);
    }
    PyGILState_Release(g);
}

/* pl_py_set_log_handler(handler) */
static PyObject *pl_py_set_log_handler(PyObject *module, PyObject *handler)
{
    (void)module;
    return pl_py_register(&pl_py_log_handler, handler, "handler");
}

/* ---- client and renewer from their options ------------------------------ */

/* A field of an options struct, set from the keyword argument of its name. */
typedef struct pl_py_field {
    const char *name;
    size_t offset;
    char type; /* 's' str or None (NULL), 'i' int, 'l' long, 'd' double */
} pl_py_field;

/* A row of a field table, from a line of pl_fields.h: PL_PY_FIELD(struct type, field, kind). */
#define PL_PY_TYPE_STR          's'
#define PL_PY_TYPE_INT          'i'
#define PL_PY_TYPE_LONG         'l'
#define PL_PY_TYPE_DBL          'd'
#define PL_PY_FIELD(T, f, kind) {#f, PL_FIELD_OFFSET(T, f, kind), PL_PY_TYPE_##kind},

static const pl_py_field pl_py_client_fields[] = {PL_CLIENT_OPTIONS_FIELDS(PL_PY_FIELD)};
static const pl_py_field pl_py_renewer_fields[] = {PL_RENEWER_OPTIONS_FIELDS(PL_PY_FIELD)};
static const pl_py_field pl_py_run_fields[] = {PL_RUN_OPTIONS_FIELDS(PL_PY_FIELD)};
#undef PL_PY_FIELD
#undef PL_PY_TYPE_STR
#undef PL_PY_TYPE_INT
#undef PL_PY_TYPE_LONG
#undef PL_PY_TYPE_DBL

#define PL_PY_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Sets the fields of opts named by the call's keywords (values: the values of
 * kwnames, in order). A string field points into its str object, which lives as
 * long as the call: the core copies what it keeps. -1 with a TypeError for a
 * keyword that names no field or a value of the wrong type. */
static int pl_py_fill(void *opts, const pl_py_field *fields, size_t nfields, const char *fn,
                      PyObject *const *values, PyObject *kwnames)
{
    Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (i = 0; i < nkw; i++) {
        PyObject *v = values[i];
        const char *key = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, i));
        char *slot;
        size_t j;
        if (!key) return -1;
        for (j = 0; j < nfields && strcmp(fields[j].name, key) != 0; j++) {}
        if (j == nfields) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%s'", fn, key);
            return -1;
        }
        slot = (char *)opts + fields[j].offset;
        if (fields[j].type == 's') {
            const char *s = NULL;
            Py_ssize_t len = 0;
            if (v != Py_None) {
                if (!PyUnicode_Check(v)) {
                    PyErr_Format(PyExc_TypeError, "%s() argument '%s' must be str or None, not %.100s", fn,
                                 key, Py_TYPE(v)->tp_name);
                    return -1;
                }
                if (!(s = PyUnicode_AsUTF8AndSize(v, &len))) return -1;
                if (strlen(s) != (size_t)len) {
                    PyErr_Format(PyExc_ValueError, "%s() argument '%s': embedded null character", fn, key);
                    return -1;
                }
            }
            memcpy(slot, &s, sizeof s);
        } else if (!PyLong_Check(v) && (fields[j].type != 'd' || !PyFloat_Check(v))) {
            PyErr_Format(PyExc_TypeError, "%s() argument '%s' must be %s, not %.100s", fn, key,
                         fields[j].type == 'd' ? "a number" : "int", Py_TYPE(v)->tp_name);
            return -1;
        } else if (fields[j].type == 'd') {
            double d = PyFloat_AsDouble(v);
            if (d == -1.0 && PyErr_Occurred()) return -1;
            memcpy(slot, &d, sizeof d);
        } else {
            long n = PyLong_AsLong(v);
            if (n == -1 && PyErr_Occurred()) return -1;
            if (fields[j].type == 'i') {
                int k = (int)n;
                if (n < INT_MIN || n > INT_MAX) {
                    PyErr_Format(PyExc_OverflowError, "%s() argument '%s' is out of range", fn, key);
                    return -1;
                }
                memcpy(slot, &k, sizeof k);
            } else {
                memcpy(slot, &n, sizeof n);
            }
        }
    }
    return 0;
}

/* pl_client_new(**options): a pl_client built from a pl_client_options that
 * pl_client_options_init filled and the keywords (named as its fields) changed,
 * with this module's log hook. */
static PyObject *pl_py_client_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    pl_client_options o;
    pl_client *c = NULL;
    PyObject *h;
    int rc;
    (void)module;
    if (nargs) {
        PyErr_SetString(PyExc_TypeError, "pl_client_new() takes keyword arguments only");
        return NULL;
    }
    if ((rc = pl_client_options_init(&o, PL_CLIENT_OPTIONS_VERSION)) < 0) goto fail;
    o.log_fn = pl_py_log;
    if (pl_py_fill(&o, pl_py_client_fields, PL_PY_COUNT(pl_py_client_fields), "pl_client_new", args,
                   kwnames) < 0)
        return NULL;
    if ((rc = pl_client_new(&c, &o)) < 0) goto fail;
    if (!(h = pl_py_handle_new(c, PL_PY_CLIENT))) pl_client_free(c);
    return h;
fail:
    pl_py_raise(rc);
    return NULL;
}

/* pl_renewer_new(client, **options): the same for a renewer of client (a pl_client). */
static PyObject *pl_py_renewer_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    pl_renewer_options o;
    pl_renewer *r = NULL;
    pl_client *c;
    PyObject *h;
    int rc;
    (void)module;
    if (nargs != 1 || !(c = pl_py_handle_ptr(args[0], PL_PY_CLIENT))) {
        PyErr_SetString(PyExc_TypeError, "pl_renewer_new() takes a pl_client, then keyword arguments");
        return NULL;
    }
    if ((rc = pl_renewer_options_init(&o, PL_RENEWER_OPTIONS_VERSION)) < 0) goto fail;
    if (pl_py_fill(&o, pl_py_renewer_fields, PL_PY_COUNT(pl_py_renewer_fields), "pl_renewer_new", args + 1,
                   kwnames) < 0)
        return NULL;
    if ((rc = pl_renewer_new(&r, c, &o)) < 0) goto fail;
    if (!(h = pl_py_handle_new(r, PL_PY_RENEWER))) pl_renewer_free(r);
    return h;
fail:
    pl_py_raise(rc);
    return NULL;
}

/* pl_run_new(now_ms, **options): the same for a processor's run started at now_ms. */
static PyObject *pl_py_run_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    pl_run_options o;
    pl_run *run = NULL;
    long long now;
    PyObject *h;
    int rc;
    (void)module;
    if (nargs != 1 || !PyLong_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "pl_run_new() takes now_ms (an int), then keyword arguments");
        return NULL;
    }
    if ((now = PyLong_AsLongLong(args[0])) == -1 && PyErr_Occurred()) return NULL;
    if ((rc = pl_run_options_init(&o, PL_RUN_OPTIONS_VERSION)) < 0) goto fail;
    if (pl_py_fill(&o, pl_py_run_fields, PL_PY_COUNT(pl_py_run_fields), "pl_run_new", args + 1, kwnames) < 0)
        return NULL;
    if ((rc = pl_run_new(&run, &o, now)) < 0) goto fail;
    if (!(h = pl_py_handle_new(run, PL_PY_RUN))) pl_run_free(run);
    return h;
fail:
    pl_py_raise(rc);
    return NULL;
}

/* ---- stats and tallies out: dicts ---------------------------------------- */

/* Sets d[key] to a new reference v (NULL: an error is set); -1 with an error set. */
static int pl_py_put(PyObject *d, const char *key, PyObject *v)
{
    int rc = v ? PyDict_SetItemString(d, key, v) : -1;
    Py_XDECREF(v);
    return rc;
}

/* A tuple of the n counters of a histogram. */
static PyObject *pl_py_u64s(const uint64_t *a, size_t n)
{
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    size_t i;
    for (i = 0; t && i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong((unsigned long long)a[i]);
        if (!v)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, (Py_ssize_t)i, v);
    }
    return t;
}

#define PL_PY_OUT_U64(v)  PyLong_FromUnsignedLongLong((unsigned long long)(v))
#define PL_PY_OUT_DBL(v)  PyFloat_FromDouble(v)
#define PL_PY_OUT_U64S(v) pl_py_u64s(v, sizeof(v) / sizeof((v)[0]))
#define PL_PY_PUT(kind, f)                                                                                   \
    if (d && pl_py_put(d, #f, PL_PY_OUT_##kind(s->f)) < 0) Py_CLEAR(d);
/* A function of glue.h: the dict of a struct's fields, by pl_fields.h's list. */
#define PL_PY_STATS_DICT(fn, T, LIST)                                                                        \
    PyObject *fn(const T *s)                                                                                 \
    {                                                                                                        \
        PyObject *d = PyDict_New();                                                                          \
        LIST(PL_PY_PUT)                                                                                      \
        return d;                                                                                            \
    }
PL_PY_STATS_DICT(pl_py_client_stats, pl_client_stats, PL_CLIENT_STATS_FIELDS)
PL_PY_STATS_DICT(pl_py_renewer_stats, pl_renewer_stats, PL_RENEWER_STATS_FIELDS)
PL_PY_STATS_DICT(pl_py_run_tallies, pl_run_tallies, PL_RUN_TALLIES_FIELDS)
PL_PY_STATS_DICT(pl_py_aio_stats, pl_aio_stats, PL_AIO_STATS_FIELDS)
#undef PL_PY_STATS_DICT
#undef PL_PY_PUT
#undef PL_PY_OUT_U64
#undef PL_PY_OUT_DBL
#undef PL_PY_OUT_U64S

/* ---- peeklock.Message: its slots ---------------------------------------- */

/* The slots of a peeklock.Message (client.py), read and set at their offsets:
 * pl_py_bind records them, with the class, at import. A Message made here gets
 * every slot Message.__init__ sets. */
enum {
    PL_SLOT_H,
    PL_SLOT_CLIENT,
    PL_SLOT_BODY,
    PL_SLOT_PROPS,
    PL_SLOT_MAX_RENEW,
    PL_SLOT_IN_RENEWER,
    PL_SLOTS
};
static const char *const pl_py_slot_names[PL_SLOTS] = {"_h",     "_client",   "_body",
                                                       "_props", "max_renew", "_in_renewer"};
static Py_ssize_t pl_py_slot_offset[PL_SLOTS];
static PyTypeObject *pl_py_message_type = NULL;
/* _validate._ENTITY_OK: entity names that passed the checks (exact str keys). */
static PyObject *pl_py_entity_ok = NULL;

#define PL_PY_SLOT(o, i) (*(PyObject **)((char *)(o) + pl_py_slot_offset[i]))

/* Stores value (a new reference) in slot i of a Message. */
static void pl_py_slot_set(PyObject *message, int i, PyObject *value)
{
    PyObject *old = PL_PY_SLOT(message, i);
    PL_PY_SLOT(message, i) = value;
    Py_XDECREF(old);
}

static int pl_py_is_message(PyObject *o)
{
    return pl_py_message_type && PyObject_TypeCheck(o, pl_py_message_type);
}

/* pl_py_bind(message_class, entity_ok): records the Message class (its slots'
 * offsets) and the entity cache; called once, at import. */
static PyObject *pl_py_bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *cls, *entity_ok;
    int i;
    (void)module;
    if (nargs != 2 || !PyType_Check(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "expected the Message class and a dict");
        return NULL;
    }
    cls = args[0];
    entity_ok = args[1];
    for (i = 0; i < PL_SLOTS; i++) {
        PyObject *d = PyDict_GetItemString(((PyTypeObject *)cls)->tp_dict, pl_py_slot_names[i]);
        if (!d || Py_TYPE(d) != &PyMemberDescr_Type ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "Message has no slot %s", pl_py_slot_names[i]);
            return NULL;
        }
        pl_py_slot_offset[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    Py_INCREF(cls);
    Py_XSETREF(pl_py_message_type, (PyTypeObject *)cls);
    Py_INCREF(entity_ok);
    Py_XSETREF(pl_py_entity_ok, entity_ok);
    Py_RETURN_NONE;
}

/* The pl_message of a peeklock.Message (its "_h" slot). NULL with a TypeError set
 * when message is not one. */
static pl_message *pl_py_message_of(PyObject *message)
{
    pl_message *m =
        pl_py_is_message(message) ? pl_py_handle_ptr(PL_PY_SLOT(message, PL_SLOT_H), PL_PY_MESSAGE) : NULL;
    if (!m) PyErr_Format(PyExc_TypeError, "expected a peeklock.Message, not %s", Py_TYPE(message)->tp_name);
    return m;
}

/* A new peeklock.Message owning m (freed here if that fails), as
 * Message(handle, client, max_renew) makes it; steals max_renew. */
static PyObject *pl_py_message_new(pl_message *m, PyObject *client, PyObject *max_renew)
{
    PyObject *h = pl_py_handle_new(m, PL_PY_MESSAGE), *msg = NULL;
    if (h)
        msg = pl_py_message_type->tp_alloc(pl_py_message_type, 0);
    else
        pl_message_free(m);
    if (!msg) {
        Py_XDECREF(h);
        Py_DECREF(max_renew);
        return NULL;
    }
    Py_INCREF(client);
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    Py_INCREF(Py_False);
    pl_py_slot_set(msg, PL_SLOT_H, h);
    pl_py_slot_set(msg, PL_SLOT_CLIENT, client);
    pl_py_slot_set(msg, PL_SLOT_BODY, Py_None);
    pl_py_slot_set(msg, PL_SLOT_PROPS, Py_None);
    pl_py_slot_set(msg, PL_SLOT_MAX_RENEW, max_renew);
    pl_py_slot_set(msg, PL_SLOT_IN_RENEWER, Py_False);
    return msg;
}

/* Getters of the Message properties read about once per message: each takes the
 * Message and reads its pl_message, so a read is one C call instead of a Python
 * frame plus a call. The body is made once and kept in the "_body" slot. */
static PyObject *pl_py_message_body_of(PyObject *module, PyObject *message)
{
    pl_message *m = pl_py_message_of(message);
    PyObject *body;
    const void *b;
    size_t len = 0;
    (void)module;
    if (!m) return NULL;
    body = PL_PY_SLOT(message, PL_SLOT_BODY);
    if (body && body != Py_None) { /* the bytes made before */
        Py_INCREF(body);
        return body;
    }
    b = pl_message_body(m, &len);
    body = PyBytes_FromStringAndSize(b ? (const char *)b : "", b ? (Py_ssize_t)len : 0);
    if (body) {
        Py_INCREF(body);
        pl_py_slot_set(message, PL_SLOT_BODY, body);
    }
    return body;
}

static PyObject *pl_py_message_id_of(PyObject *module, PyObject *message)
{
    pl_message *m = pl_py_message_of(message);
    const char *id = m ? pl_message_id(m) : NULL;
    (void)module;
    if (!m) return NULL;
    if (!id) Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(id, (Py_ssize_t)strlen(id), "surrogateescape");
}

static PyObject *pl_py_message_sequence_number_of(PyObject *module, PyObject *message)
{
    pl_message *m = pl_py_message_of(message);
    (void)module;
    return m ? PyLong_FromLongLong((long long)pl_message_sequence_number(m)) : NULL;
}

/* ---- Client.send, Client.peek_lock, Message.complete: one C call -------- */

/* Each takes its common case: an entity checked before, an open client without a
 * token provider, plain arguments (see each), and runs the request with the GIL
 * released; errors of the C layer raise as the SWIG wrappers raise them. Any
 * other call returns PL_PY_GENERAL, before any request, and goes on as it came to
 * the Python method the C method was made from (the body of send, peek_lock or
 * complete in client.py), which checks, refreshes the token and raises as always. */
static char pl_py_general_marker;
#define PL_PY_GENERAL ((PyObject *)&pl_py_general_marker)

typedef PyObject *(*pl_py_fast_fn)(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames);

/* The "_plain_h" object of a peeklock.Client (a new reference) and its pl_client:
 * the client's handle while it is open and has no token provider (nothing to
 * refresh). Otherwise NULL, no error set: the call takes the general path. */
static PyObject *pl_py_str_plain_h;

static PyObject *pl_py_plain_client(PyObject *client, pl_client **c)
{
    PyObject *h = PyObject_GetAttr(client, pl_py_str_plain_h);
    *c = h ? pl_py_handle_ptr(h, PL_PY_CLIENT) : NULL;
    if (!*c) {
        PyErr_Clear();
        Py_CLEAR(h);
    }
    return h;
}

/* Parameter names of the C methods, interned at import. */
enum { PL_ARG_ENTITY, PL_ARG_BODY, PL_ARG_PROPERTIES, PL_ARG_TIMEOUT, PL_ARG_MAX_RENEW, PL_ARGS };
static const char *const pl_py_arg_names[PL_ARGS] = {"entity", "body", "properties", "timeout", "max_renew"};
static PyObject *pl_py_arg_str[PL_ARGS];

/* Fast-call arguments into out[0..nnames) by position (at most npos) or by name
 * (names: PL_ARG_*). 0 when the call has more positional arguments, a name not in
 * names or one given twice: the general path then takes the call (and rejects it). */
static int pl_py_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const int *names,
                      Py_ssize_t npos, Py_ssize_t nnames, PyObject **out)
{
    Py_ssize_t i, j, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > npos) return 0;
    for (i = 0; i < nargs; i++) out[i] = args[i];
    for (i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        for (j = 0; j < nnames && k != pl_py_arg_str[names[j]]; j++) {}
        if (j == nnames) /* a name not interned */
            for (j = 0; j < nnames && PyUnicode_Compare(k, pl_py_arg_str[names[j]]) != 0; j++) {}
        if (j == nnames || out[j]) return 0;
        out[j] = args[nargs + i];
    }
    return 1;
}

/* An entity name that passed the checks of client.py before. */
static int pl_py_entity_known(PyObject *entity)
{
    return entity && PyUnicode_CheckExact(entity) && pl_py_entity_ok &&
           PyDict_Contains(pl_py_entity_ok, entity) == 1;
}

/* The UTF-8 of an exact str, or NULL when the C layer could not take it whole (a
 * subclass, an embedded NUL, a lone surrogate); no Python error is left. */
static const char *pl_py_whole_utf8(PyObject *s)
{
    Py_ssize_t n = 0;
    const char *u = PyUnicode_CheckExact(s) ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
    if (!u) {
        PyErr_Clear();
        return NULL;
    }
    return strlen(u) == (size_t)n ? u : NULL;
}

/* Client.send's common case in one call instead of one per property: a bytes body
 * and a dict (or None) of properties named by str with values exactly str, int,
 * float or bool. Builds the outgoing message, sends it with the GIL released,
 * frees it. Anything else (another body or mapping type, a subclass, a datetime,
 * an int beyond 64 bits, a string with a NUL) takes the general path before any
 * request, which accepts or rejects it as before. Errors of the C layer are raised
 * as the general path raises them, property by property in the same order. */
static PyObject *pl_py_send(pl_client *client, const char *entity, PyObject *body, PyObject *properties)
{
    pl_outgoing *m = NULL;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    int rc;
    if (properties != Py_None && !PyDict_CheckExact(properties)) return PL_PY_GENERAL;
    rc = pl_outgoing_new(&m, PyBytes_AS_STRING(body), (size_t)PyBytes_GET_SIZE(body));
    while (rc >= 0 && properties != Py_None && PyDict_Next(properties, &pos, &k, &v)) {
        const char *name = pl_py_whole_utf8(k), *text;
        int overflow = 0;
        long long i;
        if (!name) goto general;
        if (PyUnicode_CheckExact(v)) {
            if (!(text = pl_py_whole_utf8(v))) goto general;
            rc = pl_outgoing_add_string(m, name, text);
        } else if (PyBool_Check(v)) {
            rc = pl_outgoing_add_bool(m, name, v == Py_True);
        } else if (PyLong_CheckExact(v)) {
            i = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow || (i == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                goto general;
            }
            rc = pl_outgoing_add_int(m, name, (int64_t)i);
        } else if (PyFloat_CheckExact(v)) {
            rc = pl_outgoing_add_double(m, name, PyFloat_AS_DOUBLE(v));
        } else {
            goto general;
        }
    }
    if (rc >= 0) {
        PyThreadState *ts = PyEval_SaveThread(); /* the GIL released around the request */
        rc = pl_send(client, entity, m);
        PyEval_RestoreThread(ts);
    }
    pl_outgoing_free(m);
    return pl_py_result(rc);
general:
    pl_outgoing_free(m);
    return PL_PY_GENERAL;
}

static PyObject *pl_py_client_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const int names[] = {PL_ARG_ENTITY, PL_ARG_BODY, PL_ARG_PROPERTIES};
    PyObject *a[3] = {NULL, NULL, NULL}, *h, *res;
    pl_client *c = NULL;
    const char *entity;
    if (!pl_py_args(args, nargs, kwnames, names, 2, 3, a) || !pl_py_entity_known(a[0]) || !a[1] ||
        !PyBytes_CheckExact(a[1]) || !(h = pl_py_plain_client(self, &c)))
        return PL_PY_GENERAL;
    if (!(entity = PyUnicode_AsUTF8(a[0]))) { /* out of memory */
        Py_DECREF(h);
        return NULL;
    }
    res = pl_py_send(c, entity, a[1], a[2] ? a[2] : Py_None);
    Py_DECREF(h);
    return res;
}

/* A peek-lock whose answer was lost may leave a message locked by nobody: said at
 * WARNING through the callable (entity) -> None that peeklock.client registers with
 * pl_py_set_orphan_warner (rare: only then is Python called). */
static void pl_py_warn_orphaned(PyObject *entity)
{
    PyObject *r;
    if (!pl_client_last_orphaned() || !pl_py_orphan_warner) return;
    r = PyObject_CallFunctionObjArgs(pl_py_orphan_warner, entity, NULL);
    Py_XDECREF(r);
    if (!r) PyErr_Clear();
}

/* timeout: an int the core's pl_check_timeout takes; max_renew: None, or a float or int the core's
 * pl_max_renew_ms takes. */
static PyObject *pl_py_client_peek_lock(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames)
{
    static const int names[] = {PL_ARG_ENTITY, PL_ARG_TIMEOUT, PL_ARG_MAX_RENEW};
    PyObject *a[3] = {NULL, NULL, NULL}, *h, *mr;
    pl_client *c = NULL;
    pl_message *m = NULL;
    PyThreadState *ts;
    const char *entity;
    long t = PL_DEFAULT_RECEIVE_TIMEOUT_S;
    int rc;
    if (!pl_py_message_type || !pl_py_args(args, nargs, kwnames, names, 2, 3, a) || !pl_py_entity_known(a[0]))
        return PL_PY_GENERAL;
    if (!(entity = PyUnicode_AsUTF8(a[0]))) return NULL; /* with the GIL: it may allocate */
    if (a[1] && (!PyLong_CheckExact(a[1]) || (t = PyLong_AsLong(a[1])) < INT_MIN || t > INT_MAX ||
                 pl_check_timeout((int)t) != PL_OK)) { /* the core's range: the general path raises */
        PyErr_Clear();
        return PL_PY_GENERAL;
    }
    mr = a[2];
    if (!mr || mr == Py_None) {
        mr = Py_None;
        Py_INCREF(mr);
    } else if (PyFloat_CheckExact(mr) || PyLong_CheckExact(mr)) {
        double d = PyFloat_AsDouble(mr);                  /* -1.0 with an error for an int beyond a double */
        if (PyErr_Occurred() || pl_max_renew_ms(d) < 0) { /* the core's rule: the general path raises */
            PyErr_Clear();
            return PL_PY_GENERAL;
        }
        if (!(mr = PyFloat_FromDouble(d))) return NULL;
    } else {
        return PL_PY_GENERAL;
    }
    if (!(h = pl_py_plain_client(self, &c))) {
        Py_DECREF(mr);
        return PL_PY_GENERAL;
    }
    ts = PyEval_SaveThread();
    rc = pl_peek_lock(&m, c, entity, (int)t);
    PyEval_RestoreThread(ts);
    Py_DECREF(h);
    pl_py_warn_orphaned(a[0]);
    if (rc < 0 || !m) {
        Py_DECREF(mr);
        if (rc < 0) {
            pl_py_raise(rc);
            return NULL;
        }
        Py_RETURN_NONE; /* nothing arrived in time */
    }
    return pl_py_message_new(m, self, mr);
}

/* No arguments, the message not handed to the renewer. */
static PyObject *pl_py_message_complete(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames)
{
    PyObject *client, *mh, *h;
    pl_client *c = NULL;
    pl_message *m;
    PyThreadState *ts;
    int rc;
    (void)args;
    if (nargs || kwnames || !pl_py_is_message(self)) return PL_PY_GENERAL;
    client = PL_PY_SLOT(self, PL_SLOT_CLIENT);
    mh = PL_PY_SLOT(self, PL_SLOT_H);
    if (PL_PY_SLOT(self, PL_SLOT_IN_RENEWER) != Py_False || !client || !mh ||
        !(m = pl_py_handle_ptr(mh, PL_PY_MESSAGE)))
        return PL_PY_GENERAL;
    /* m lives as long as its handle object, not as the Message: another thread may
     * set or delete _h (or _client) while the GIL is released, or while _plain_h is
     * read. Both are held until pl_complete returns. */
    Py_INCREF(mh);
    Py_INCREF(client);
    h = pl_py_plain_client(client, &c);
    Py_DECREF(client);
    if (!h) {
        Py_DECREF(mh);
        return PL_PY_GENERAL;
    }
    ts = PyEval_SaveThread();
    rc = pl_complete(c, m);
    PyEval_RestoreThread(ts);
    Py_DECREF(h);
    Py_DECREF(mh);
    return pl_py_result(rc);
}

static const struct {
    const char *name;
    pl_py_fast_fn fast;
} pl_py_fast_methods[] = {
    {"send", pl_py_client_send},
    {"peek_lock", pl_py_client_peek_lock},
    {"complete", pl_py_message_complete},
};

/* ---- the C method type -------------------------------------------------- */

/* A method of a class in client.py, made in the class body by the decorator
 * pl_py_method: a call runs the fast path of the function's name and, when that
 * returns PL_PY_GENERAL, the decorated function with the same arguments. It
 * binds as a function does (a method descriptor: obj.name(...) makes no bound
 * object) and takes general's name, docstring and signature (__wrapped__), so
 * help() and inspect show the method as written. */
typedef struct pl_py_method_object {
    PyObject ob_base;
    vectorcallfunc vectorcall;
    pl_py_fast_fn fast;
    PyObject *general;
    PyObject *name;
    PyObject *qualname;  /* "Class.name" once the class is made, else name */
    PyTypeObject *owner; /* the class (set by __set_name__) */
} pl_py_method_object;

static PyObject *pl_py_method_call(PyObject *callable, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames)
{
    pl_py_method_object *m = (pl_py_method_object *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *res;
    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError, "unbound method %U() needs an argument", m->qualname);
        return NULL;
    }
    if (m->owner && !PyObject_TypeCheck(args[0], m->owner)) {
        PyErr_Format(PyExc_TypeError, "descriptor '%U' for '%s' objects doesn't apply to a '%s' object",
                     m->name, m->owner->tp_name, Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    res = m->fast(args[0], args + 1, nargs - 1, kwnames);
    if (res != PL_PY_GENERAL) return res;
    return PyObject_Vectorcall(m->general, args, nargsf, kwnames);
}

static PyObject *pl_py_method_get(PyObject *self, PyObject *obj, PyObject *type)
{
    (void)type;
    if (!obj || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

static int pl_py_method_traverse(PyObject *self, visitproc visit, void *arg)
{
    pl_py_method_object *m = (pl_py_method_object *)self;
    Py_VISIT(m->general);
    Py_VISIT(m->owner);
    return 0;
}

static int pl_py_method_clear(PyObject *self)
{
    pl_py_method_object *m = (pl_py_method_object *)self;
    Py_CLEAR(m->general);
    Py_CLEAR(m->owner);
    return 0;
}

static void pl_py_method_dealloc(PyObject *self)
{
    pl_py_method_object *m = (pl_py_method_object *)self;
    PyObject_GC_UnTrack(self);
    pl_py_method_clear(self);
    Py_XDECREF(m->name);
    Py_XDECREF(m->qualname);
    PyObject_GC_Del(self);
}

static PyObject *pl_py_method_repr(PyObject *self)
{
    pl_py_method_object *m = (pl_py_method_object *)self;
    return PyUnicode_FromFormat("<C method %U>", m->qualname);
}

static PyObject *pl_py_method_set_name(PyObject *self, PyObject *args)
{
    pl_py_method_object *m = (pl_py_method_object *)self;
    PyObject *owner, *name, *qualname;
    if (!PyArg_ParseTuple(args, "O!U:__set_name__", &PyType_Type, &owner, &name)) return NULL;
    qualname = PyUnicode_FromFormat("%s.%U", ((PyTypeObject *)owner)->tp_name, name);
    if (!qualname) return NULL;
    Py_XSETREF(m->qualname, qualname);
    Py_INCREF(owner);
    Py_XSETREF(m->owner, (PyTypeObject *)owner);
    Py_RETURN_NONE;
}

static PyObject *pl_py_method_general_attr(PyObject *self, void *attr)
{
    return PyObject_GetAttrString(((pl_py_method_object *)self)->general, (const char *)attr);
}

static PyObject *pl_py_method_name(PyObject *self, void *which)
{
    pl_py_method_object *m = (pl_py_method_object *)self;
    PyObject *v = which ? m->qualname : m->name;
    Py_INCREF(v);
    return v;
}

static PyObject *pl_py_method_wrapped(PyObject *self, void *unused)
{
    PyObject *g = ((pl_py_method_object *)self)->general;
    (void)unused;
    Py_INCREF(g);
    return g;
}

static PyMethodDef pl_py_method_methods[] = {
    {"__set_name__", pl_py_method_set_name, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pl_py_method_getset[] = {
    {"__doc__", pl_py_method_general_attr, NULL, NULL, "__doc__"},
    {"__module__", pl_py_method_general_attr, NULL, NULL, "__module__"},
    {"__name__", pl_py_method_name, NULL, NULL, NULL},
    {"__qualname__", pl_py_method_name, NULL, NULL, "qualname"},
    {"__wrapped__", pl_py_method_wrapped, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* (PyVarObject_HEAD_INIT ends in its own comma, which clang-format does not see) */
/* clang-format off */
static PyTypeObject pl_py_method_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "peeklock._core.method",
    .tp_basicsize = sizeof(pl_py_method_object),
    .tp_dealloc = pl_py_method_dealloc,
    .tp_vectorcall_offset = offsetof(pl_py_method_object, vectorcall),
    .tp_repr = pl_py_method_repr,
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
                | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_traverse = pl_py_method_traverse,
    .tp_clear = pl_py_method_clear,
    .tp_methods = pl_py_method_methods,
    .tp_getset = pl_py_method_getset,
    .tp_descr_get = pl_py_method_get,
};
/* clang-format on */

/* pl_py_method(general), a decorator: the C method named as general (a function of
 * client.py: "send" or "peek_lock" of Client, "complete" of Message), with general
 * as its general path. */
static PyObject *pl_py_method(PyObject *module, PyObject *general)
{
    pl_py_method_object *m;
    PyObject *name;
    const char *text;
    size_t i;
    (void)module;
    if (!PyCallable_Check(general)) {
        PyErr_SetString(PyExc_TypeError, "expected a function");
        return NULL;
    }
    if (!(name = PyObject_GetAttrString(general, "__name__"))) return NULL;
    if (!(text = PyUnicode_AsUTF8(name))) goto fail;
    for (i = 0; i < PL_PY_COUNT(pl_py_fast_methods) && strcmp(pl_py_fast_methods[i].name, text) != 0; i++) {}
    if (i == PL_PY_COUNT(pl_py_fast_methods)) {
        PyErr_Format(PyExc_ValueError, "no C method %s", text);
        goto fail;
    }
    if (!(m = PyObject_GC_New(pl_py_method_object, &pl_py_method_type))) goto fail;
    m->vectorcall = pl_py_method_call;
    m->fast = pl_py_fast_methods[i].fast;
    Py_INCREF(general);
    m->general = general;
    m->name = name;
    Py_INCREF(name);
    m->qualname = name;
    m->owner = NULL;
    PyObject_GC_Track((PyObject *)m);
    return (PyObject *)m;
fail:
    Py_DECREF(name);
    return NULL;
}

/* ---- the asynchronous engine (peeklock.aio) ------------------------------ */

/* Per operation, the loop thread makes one call to start it and is called once
 * when it ends: pl_py_aio_submit starts it and registers the future its
 * completion resolves; pl_py_aio_resolve, the loop's reader, takes the
 * completions and resolves those futures here, in C.
 *
 * Out of memory: every future is resolved and its waiters woken exactly once
 * (pl_py_fut_call), but for one whose set_exception and then cancel both fail
 * (out of memory three times in one completion): that one stays pending, its
 * error goes to the loop's exception handler, and a message it was to get is
 * unlocked. No operation is unaccounted, and MemoryError means the operation did
 * not happen. pl_py_aio_submit makes what its answer needs before the operation
 * is handed to C, so a failure there
 * raises MemoryError with nothing submitted; what can still fail after (the
 * future's registration; the id's int, in python.i's id typemap) cancels the
 * operation and raises what its caller may assume (pl_py_aio_lost): MemoryError
 * for a peek-lock (a lock it gets anyway reaches no future and is unlocked),
 * OutcomeUnknownError for a send, a settle or a receive-and-delete (one on the
 * wire runs to its end; a settle's message then holds its real outcome, as the
 * engine's fence leaves it). The reader finds each completion's future without
 * allocating when it must (a walk of futs), resolves it with the error when
 * its result cannot be made or set (OutcomeUnknownError when the operation
 * acted: pl_py_aio_undelivered), and unlocks a peek-locked message that
 * reaches no future in C when Python cannot take it. Only a receive-and-delete
 * message that cannot be made into a Python object is lost (it is deleted
 * already; its future says OutcomeUnknownError). tests/python/test_aio_oom.py
 * runs these paths with a failing allocator (tests/python/failalloc.c). */
static PyObject *pl_py_str_done, *pl_py_str_set_result, *pl_py_str_set_exception, *pl_py_str_cancel,
    *pl_py_str_get_loop, *pl_py_str_callbacks, *pl_py_str_call_soon, *pl_py_str_remove_done_callback,
    *pl_py_str_add_done_callback, *pl_py_str_context, *pl_py_kw_context;

/* The exception being raised, taken aside (cleared) while other Python code
 * runs, then put back (pl_py_exc_put) or dropped (pl_py_exc_drop). */
typedef struct pl_py_exc {
    PyObject *type, *value, *tb;
} pl_py_exc;

static void pl_py_exc_take(pl_py_exc *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    e->type = e->tb = NULL;
    e->value = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&e->type, &e->value, &e->tb);
    PyErr_NormalizeException(&e->type, &e->value, &e->tb);
#endif
}

static void pl_py_exc_put(pl_py_exc *e)
{
    PyErr_Clear();
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(e->value);
#else
    PyErr_Restore(e->type, e->value, e->tb);
#endif
}

static void pl_py_exc_drop(pl_py_exc *e)
{
    Py_XDECREF(e->type);
    Py_XDECREF(e->value);
    Py_XDECREF(e->tb);
}

/* Schedules the done-callback item ((callback, context), as fut._callbacks
 * lists it) of fut, now resolved, on loop as asyncio would; calls it at once
 * when even that fails (or loop is NULL). */
static void pl_py_fut_wake(PyObject *fut, PyObject *loop, PyObject *item)
{
    PyObject *cb = PyTuple_GET_ITEM(item, 0), *ctx = PyTuple_GET_ITEM(item, 1), *r = NULL;
    if (loop) {
        PyObject *args[4] = {loop, cb, fut, ctx}; /* loop.call_soon(cb, fut, context=ctx) */
        r = PyObject_VectorcallMethod(pl_py_str_call_soon, args, 3, pl_py_kw_context);
    }
    if (!r && PyContext_CheckExact(ctx) && PyContext_Enter(ctx) == 0) {
        PyErr_Clear();
        r = PyObject_CallOneArg(cb, fut); /* now, as the loop would have */
        PyContext_Exit(ctx);
    }
    if (!r) PyErr_WriteUnraisable(cb);
    Py_XDECREF(r);
}

#define PL_PY_IS_CALLBACK(item) (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2)

/* Calls fut.method(arg) (set_result, set_exception, or cancel with arg NULL) so
 * that its waiters wake exactly once whatever happens. asyncio's Future
 * schedules its done-callbacks (the waiting task's wake-up) one by one after it
 * took the result, and when one call_soon fails (out of memory) drops them all,
 * those already scheduled and those not: a task would sleep for ever, or be
 * woken twice. So they are read first: one alone is scheduled here only when
 * asyncio could not (it failed before it, or with it); two or more are taken off
 * the future first (remove_done_callback, last first: a removal that fails
 * removes nothing) and each scheduled here once it is resolved (called at once
 * when even that fails). A new reference, or NULL with an error and fut not
 * resolved (its callbacks still on it). */
static PyObject *pl_py_fut_call(PyObject *fut, PyObject *method, PyObject *arg)
{
    PyObject *cbs = PyObject_GetAttr(fut, pl_py_str_callbacks), *r = NULL, *done, *loop, *list, **items;
    char few[16], *ours = few; /* ours[i]: items[i] is scheduled here */
    Py_ssize_t i, j, n;
    int taken;
    pl_py_exc e;
    if (!cbs) return NULL; /* nothing done */
    n = PyList_Check(cbs) ? PyList_GET_SIZE(cbs) : 0;
    taken = n >= 2;
    /* (the pure-Python Future's is its own list, which resolving empties: held
     * here, a copy of two or more, the one item itself) */
    list = cbs;
    if (taken) {
        list = PyList_GetSlice(cbs, 0, n);
        Py_DECREF(cbs);
        if (!list) return NULL;
    }
    items = n ? &PyList_GET_ITEM(list, 0) : NULL;
    if (n == 1) {
        Py_INCREF(items[0]);
        cbs = items[0];
        Py_DECREF(list);
        list = NULL;
        items = &cbs;
    } else {
        cbs = list; /* (what end: releases) */
    }
    if (n > (Py_ssize_t)sizeof few && !(ours = PyMem_Malloc((size_t)n))) {
        PyErr_NoMemory();
        goto end;
    }
    for (i = 0; i < n; i++) ours[i] = !taken && PL_PY_IS_CALLBACK(items[i]);
    for (i = n - 1; taken && i >= 0; i--) {
        PyObject *item = items[i], *removed;
        if (!PL_PY_IS_CALLBACK(item)) continue;
        removed = PyObject_CallMethodOneArg(fut, pl_py_str_remove_done_callback, PyTuple_GET_ITEM(item, 0));
        if (!removed) {
            PyErr_Clear(); /* (then it stays on fut, for asyncio to schedule) */
            continue;
        }
        Py_DECREF(removed);
        for (j = 0; j < n; j++) /* (it and any other entry of the same callback) */
            if (PL_PY_IS_CALLBACK(items[j]) && PyTuple_GET_ITEM(items[j], 0) == PyTuple_GET_ITEM(item, 0))
                ours[j] = 1;
    }
    r = arg ? PyObject_CallMethodOneArg(fut, method, arg) : PyObject_CallMethodNoArgs(fut, method);
    if (!r) {
        pl_py_exc_take(&e);
        done = PyObject_CallMethodNoArgs(fut, pl_py_str_done);
        if (done != Py_True) { /* not resolved: the callbacks taken go back */
            Py_XDECREF(done);
            for (i = 0; taken && i < n; i++) {
                PyObject *args[3], *back;
                if (!ours[i]) continue;
                args[0] = fut;
                args[1] = PyTuple_GET_ITEM(items[i], 0);
                args[2] = PyTuple_GET_ITEM(items[i], 1); /* fut.add_done_callback(cb, context=ctx) */
                back = PyObject_VectorcallMethod(pl_py_str_add_done_callback, args, 2, pl_py_kw_context);
                if (!back) PyErr_WriteUnraisable(fut);
                Py_XDECREF(back);
            }
            pl_py_exc_put(&e);
            goto end;
        }
        Py_DECREF(done);
        pl_py_exc_drop(&e);
        Py_INCREF(Py_None);
        r = Py_None;
    } else if (!taken) {
        goto end; /* (asyncio scheduled the one there was) */
    }
    loop = PyObject_CallMethodNoArgs(fut, pl_py_str_get_loop);
    if (!loop) PyErr_Clear();
    for (i = 0; i < n; i++)
        if (ours[i]) pl_py_fut_wake(fut, loop, items[i]);
    Py_XDECREF(loop);
end:
    if (ours != few) PyMem_Free(ours);
    Py_DECREF(cbs);
    return r;
}

/* Resolves fut with the exception being raised (cleared): set_exception, or
 * when even that fails, cancel, so its waiter wakes whatever happens (the
 * waiting coroutine, peeklock.aio's run, raises for a future cancelled under a
 * task that is not what pl_py_aio_lost would). Returns 0, or -1 with the
 * exception still set when fut is NULL or could take neither. */
static int pl_py_aio_fail(PyObject *fut)
{
    pl_py_exc e;
    PyObject *r;
    if (!fut) return -1;
    pl_py_exc_take(&e);
    r = e.value ? pl_py_fut_call(fut, pl_py_str_set_exception, e.value) : NULL;
    if (!r) {
        PyErr_Clear();
        r = pl_py_fut_call(fut, pl_py_str_cancel, NULL);
        if (r == Py_False) Py_CLEAR(r); /* (not cancelled: not resolved) */
    }
    if (!r) {
        pl_py_exc_put(&e);
        return -1;
    }
    Py_DECREF(r);
    pl_py_exc_drop(&e);
    return 0;
}

/* The error being raised for operation op (a pl_aio_* name without its prefix),
 * whose caller cannot be told its outcome, replaced with OutcomeUnknownError
 * unless op acts on nothing (a peek-lock: a lock it got reaches no future and is
 * unlocked; an idle wait). Out of memory says so; another error is named in the
 * text and is the new error's __cause__. */
static void pl_py_aio_unknown(const char *op)
{
    pl_py_exc e;
    PyObject *exc = NULL, *msg;
    int oom;
    if (strcmp(op, "peek_lock") == 0 || strcmp(op, "idle") == 0) return;
    oom = PyErr_ExceptionMatches(PyExc_MemoryError);
    pl_py_exc_take(&e);
    if (strcmp(op, "finish") == 0) op = "settle";
    if (oom || !e.value)
        msg = PyUnicode_FromFormat(PL_PY_UNKNOWN_TEXT, op);
    else
        msg = PyUnicode_FromFormat("the outcome of the %s could not be told (%s: %S); it may or may not "
                                   "have been carried out",
                                   op, Py_TYPE(e.value)->tp_name, e.value);
    if (msg && pl_py_error_factory)
        exc = PyObject_CallFunction(pl_py_error_factory, "iiiO", PL_EUNKNOWN, 0, 0, msg);
    Py_XDECREF(msg);
    if (exc && !oom && e.value) {
        Py_INCREF(e.value);
        PyException_SetCause(exc, e.value);
    }
    if (!exc && pl_py_unknown_spare) { /* still out of memory: the one made beforehand */
        exc = pl_py_unknown_spare;
        Py_INCREF(exc);
        /* (shared: nothing of its last raise is kept alive, nor shown again) */
        PyException_SetTraceback(exc, Py_None);
        PyException_SetContext(exc, NULL);
        PyException_SetCause(exc, NULL);
    }
    if (!exc) { /* (no factory: peeklock.client not imported) */
        pl_py_exc_put(&e);
        return;
    }
    PyErr_Clear();
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    pl_py_exc_drop(&e);
}

void pl_py_aio_lost(struct pl_aio *a, uint64_t id, const char *submit_fn)
{
    if (a && id) pl_aio_cancel(a, id); /* (PL_ESTATE on the wire: it runs to its end) */
    pl_py_aio_unknown(strncmp(submit_fn, "pl_aio_", 7) == 0 ? submit_fn + 7 : submit_fn);
}

/* The name of the pl_aio_* function f (a built-in function), or "". */
static const char *pl_py_fn_name(PyObject *f)
{
    return PyCFunction_Check(f) ? ((PyCFunctionObject *)f)->m_ml->ml_name : "";
}

/* pl_py_aio_lost(a, id, submit): raises, for operation id of a (started by the
 * submit function submit) that its caller could not be made to wait for, out of
 * memory, what pl_py_aio_lost raises in C (peeklock.aio's run with an id). */
static PyObject *pl_py_aio_lost_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long id;
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "expected a pl_aio, an id and a submit function");
        return NULL;
    }
    id = PyLong_AsUnsignedLongLong(args[1]);
    if (id == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    PyErr_NoMemory();
    pl_py_aio_lost(pl_py_handle_ptr(args[0], PL_PY_AIO), (uint64_t)id, pl_py_fn_name(args[2]));
    return NULL;
}

/* pl_py_aio_submit(futs, new_future, loop, submit, a, *args): a future from
 * new_future() (asyncio.Future: on the running loop), a RuntimeError if that is
 * not loop (the client's); then submit(a, *args) (a pl_aio_* submit function,
 * which returns the operation's id) and the future kept in futs (a dict) under
 * that id. Returns (id, future). */
static PyObject *pl_py_aio_submit(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *id, *fut, *its_loop, *r;
    (void)module;
    if (nargs < 5 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "expected futs, new_future, loop, submit, a, *args");
        return NULL;
    }
    if (!(fut = PyObject_CallNoArgs(args[1]))) return NULL;
    if (!(its_loop = PyObject_CallMethodNoArgs(fut, pl_py_str_get_loop))) goto fail;
    Py_DECREF(its_loop); /* (compared by identity only: the future holds it) */
    if (its_loop != args[2]) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a peeklock.aio.Client serves the event loop it was first used on");
        goto fail;
    }
    if (!(r = PyTuple_New(2))) goto fail; /* made first: nothing submitted yet */
    if (!(id = PyObject_Vectorcall(args[3], args + 4, (size_t)(nargs - 4), NULL))) {
        Py_DECREF(r); /* refused, or submitted and cancelled at once (python.i) */
        goto fail;
    }
    if (PyDict_SetItem(args[0], id, fut) < 0) {
        /* under way but no completion can find the future: cancelled, and the
         * caller told what it may assume (pl_py_aio_lost) */
        pl_py_exc e;
        pl_py_exc_take(&e);
        unsigned long long v = PyLong_AsUnsignedLongLong(id); /* (an int the typemap made) */
        pl_py_exc_put(&e);
        pl_py_aio_lost(pl_py_handle_ptr(args[4], PL_PY_AIO), (uint64_t)v, pl_py_fn_name(args[3]));
        Py_DECREF(id);
        Py_DECREF(r);
        goto fail;
    }
    PyTuple_SET_ITEM(r, 0, id);
    PyTuple_SET_ITEM(r, 1, fut);
    return r;
fail:
    Py_DECREF(fut);
    return NULL;
}

/* One completion's future, resolved: set_result(the message handle, or None)
 * when the operation succeeded at its first attempt with no lock orphaned (the
 * common case), else set_result((code, http_status, retryable, text, handle,
 * orphaned, attempts)) for the waiting coroutine to log and raise. Returns 1 if
 * the future took the handle, 0 if there was none to take it (or it was done:
 * cancelled), -1 on error (fut not resolved). */
static int pl_py_aio_settle(PyObject *fut, pl_aio_done *d, PyObject *h)
{
    PyObject *done, *res, *r;
    int code = pl_aio_done_code(d), attempts = pl_aio_done_attempts(d);
    unsigned orphaned = pl_aio_done_orphaned(d);
    if (!fut) return 0;
    if (!(done = PyObject_CallMethodNoArgs(fut, pl_py_str_done))) return -1;
    int is_done = done == Py_True;
    Py_DECREF(done);
    if (is_done) return 0;
    if (code >= 0 && attempts <= 1 && !orphaned) {
        Py_INCREF(h);
        res = h;
    } else {
        const char *text = pl_aio_done_message(d);
        Py_INCREF(h);
        res = Py_BuildValue("(iiiNNIi)", code, pl_aio_done_http_status(d), pl_aio_done_retryable(d),
                            PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace"), h, orphaned,
                            attempts);
        if (!res) return -1;
    }
    r = pl_py_fut_call(fut, pl_py_str_set_result, res);
    Py_DECREF(res);
    Py_XDECREF(r);
    return r ? 1 : -1;
}

/* The future futs holds for id, popped (a new reference), or NULL: none (no
 * error set). Out of memory for id's int, found by a walk (allocates nothing). */
static PyObject *pl_py_aio_pop(PyObject *futs, uint64_t id)
{
    PyObject *key = PyLong_FromUnsignedLongLong((unsigned long long)id), *k, *fut = NULL;
    Py_ssize_t pos = 0;
    if (key) {
        if ((fut = PyDict_GetItemWithError(futs, key)) != NULL) {
            Py_INCREF(fut);
            if (PyDict_DelItem(futs, key) < 0) PyErr_Clear(); /* (present: only the hash could fail) */
        }
        Py_DECREF(key);
        if (fut || !PyErr_Occurred()) return fut;
    }
    PyErr_Clear();
    while (PyDict_Next(futs, &pos, &k, &fut)) {
        if (PyLong_Check(k) && PyLong_AsUnsignedLongLong(k) == (unsigned long long)id) {
            Py_INCREF(k);
            Py_INCREF(fut);
            if (PyDict_DelItem(futs, k) < 0) PyErr_Clear();
            Py_DECREF(k);
            return fut;
        }
        PyErr_Clear(); /* (a key that is not one of ours) */
    }
    return NULL;
}

/* The error being raised for completion d, which could not be handed to its
 * future: OutcomeUnknownError instead when d's operation may have acted (it
 * succeeded, or its own outcome is unknown), as for pl_py_aio_lost
 * (pl_py_aio_unknown). A receive that found nothing (PL_EMPTY) or an operation
 * that failed for sure keeps it. */
static void pl_py_aio_undelivered(pl_aio_done *d)
{
    static const char *const names[] = {
        "",           "send",   "send_batch", "peek_lock", "receive_and_delete",
        "renew_lock", "unlock", "complete",   "idle"};
    int code = pl_aio_done_code(d), kind = pl_aio_done_kind(d);
    if ((code == PL_OK || code == PL_EUNKNOWN) && kind > 0 && kind < (int)PL_PY_COUNT(names))
        pl_py_aio_unknown(names[kind]);
}

/* One completion, handed to its future (pl_py_aio_settle); a message that
 * reached no future (the receive was cancelled, or the future could not take it)
 * goes to orphan(handle, peek_locked), or when that fails or the message could
 * not be made a handle, a peek-lock's is unlocked here. 0, or -1 with an error
 * that no future took. */
static int pl_py_aio_take(pl_aio *a, PyObject *futs, PyObject *orphan, pl_aio_done *d)
{
    pl_message *m = pl_aio_done_take_message(d);
    int peek = pl_aio_done_kind(d) == PL_AIO_PEEK_LOCK, took, rc = 0;
    PyObject *fut = pl_py_aio_pop(futs, pl_aio_done_id(d));
    PyObject *h = m ? pl_py_handle_new(m, PL_PY_MESSAGE) : (Py_INCREF(Py_None), Py_None);
    if (!h) {
        if (peek) pl_aio_unlock_detached(a, m); /* (closed: the lock expires on its own) */
        pl_message_free(m);
        if (fut) pl_py_aio_undelivered(d);
        rc = pl_py_aio_fail(fut);
        Py_XDECREF(fut);
        return rc;
    }
    took = pl_py_aio_settle(fut, d, h);
    if (took < 0) {
        if (fut) pl_py_aio_undelivered(d);
        rc = pl_py_aio_fail(fut);
    }
    if (took <= 0 && h != Py_None) {
        pl_py_exc e = {NULL, NULL, NULL};
        if (rc < 0) pl_py_exc_take(&e); /* the first error is the one reported */
        PyObject *r = PyObject_CallFunctionObjArgs(orphan, h, peek ? Py_True : Py_False, NULL);
        if (!r && peek) pl_aio_unlock_detached(a, m); /* (PL_ESTATE if orphan had begun it) */
        Py_XDECREF(r);
        if (rc < 0)
            pl_py_exc_put(&e);
        else if (!r)
            rc = -1;
    }
    Py_DECREF(h);
    Py_XDECREF(fut);
    return rc;
}

/* pl_py_aio_resolve(a, futs, orphan): takes every queued completion of a (a
 * pl_aio) and resolves the future futs holds for it, popped from futs
 * (pl_py_aio_take). The loop's reader: the fd is quiet after. An error no
 * future took is raised once all are taken (the loop's exception handler
 * reports it). */
static PyObject *pl_py_aio_resolve(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pl_aio *a = nargs == 3 ? pl_py_handle_ptr(args[0], PL_PY_AIO) : NULL;
    pl_aio_done *d = NULL;
    int failed = 0;
    (void)module;
    if (!a || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "expected a pl_aio, a dict and a callable");
        return NULL;
    }
    pl_py_exc e = {NULL, NULL, NULL}; /* the first error no future took */
    while (pl_aio_next(&d, a) == PL_OK) {
        if (pl_py_aio_take(a, args[1], args[2], d) < 0) {
            if (!failed) pl_py_exc_take(&e);
            PyErr_Clear();
            failed = 1;
        }
        pl_aio_done_free(d);
    }
    if (failed) {
        pl_py_exc_put(&e);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- the module ---------------------------------------------------------- */

#define PL_PY_FASTCALL(f) ((PyCFunction)(void (*)(void))(f))

static PyMethodDef pl_py_functions[] = {
    {"pl_py_set_error_factory", pl_py_set_error_factory, METH_O, NULL},
    {"pl_py_set_log_handler", pl_py_set_log_handler, METH_O, NULL},
    {"pl_py_set_orphan_warner", pl_py_set_orphan_warner, METH_O, NULL},
    {"pl_py_error_last", pl_py_error_last, METH_NOARGS, NULL},
    {"pl_redact", pl_py_redact, METH_O, NULL},
    {"pl_client_new", PL_PY_FASTCALL(pl_py_client_new), METH_FASTCALL | METH_KEYWORDS, NULL},
    {"pl_renewer_new", PL_PY_FASTCALL(pl_py_renewer_new), METH_FASTCALL | METH_KEYWORDS, NULL},
    {"pl_run_new", PL_PY_FASTCALL(pl_py_run_new), METH_FASTCALL | METH_KEYWORDS, NULL},
    {"pl_py_bind", PL_PY_FASTCALL(pl_py_bind), METH_FASTCALL, NULL},
    {"pl_py_message_body_of", pl_py_message_body_of, METH_O, NULL},
    {"pl_py_message_id_of", pl_py_message_id_of, METH_O, NULL},
    {"pl_py_message_sequence_number_of", pl_py_message_sequence_number_of, METH_O, NULL},
    {"pl_py_method", pl_py_method, METH_O, NULL},
    {"pl_py_aio_submit", PL_PY_FASTCALL(pl_py_aio_submit), METH_FASTCALL, NULL},
    {"pl_py_aio_resolve", PL_PY_FASTCALL(pl_py_aio_resolve), METH_FASTCALL, NULL},
    {"pl_py_aio_lost", PL_PY_FASTCALL(pl_py_aio_lost_py), METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

int pl_py_glue_init(PyObject *module)
{
    int i;
    for (i = 0; i < PL_ARGS; i++)
        if (!(pl_py_arg_str[i] = PyUnicode_InternFromString(pl_py_arg_names[i]))) return -1;
    if (!(pl_py_str_plain_h = PyUnicode_InternFromString("_plain_h"))) return -1;
    if (!(pl_py_str_done = PyUnicode_InternFromString("done"))) return -1;
    if (!(pl_py_str_set_result = PyUnicode_InternFromString("set_result"))) return -1;
    if (!(pl_py_str_set_exception = PyUnicode_InternFromString("set_exception"))) return -1;
    if (!(pl_py_str_cancel = PyUnicode_InternFromString("cancel"))) return -1;
    if (!(pl_py_str_get_loop = PyUnicode_InternFromString("get_loop"))) return -1;
    if (!(pl_py_str_callbacks = PyUnicode_InternFromString("_callbacks"))) return -1;
    if (!(pl_py_str_call_soon = PyUnicode_InternFromString("call_soon"))) return -1;
    if (!(pl_py_str_remove_done_callback = PyUnicode_InternFromString("remove_done_callback"))) return -1;
    if (!(pl_py_str_add_done_callback = PyUnicode_InternFromString("add_done_callback"))) return -1;
    if (!(pl_py_str_context = PyUnicode_InternFromString("context"))) return -1;
    if (!(pl_py_kw_context = PyTuple_Pack(1, pl_py_str_context))) return -1;
    if (PyType_Ready(&pl_py_method_type) < 0) return -1;
    return PyModule_AddFunctions(module, pl_py_functions);
}

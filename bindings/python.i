/*
 * python.i — the Python part of the peeklock SWIG bindings: the typemap hooks
 * promised by peeklock.i, the GIL policy and the error bridge. Built as the
 * extension module peeklock._core (swig -python -builtin); the hand-written
 * package python/peeklock/ is the public surface.
 */
%module(package="peeklock", threads="1") _core

/* Nothing releases the GIL unless listed under "the GIL" below. */
%nothread;

%{
#include <string.h>
#include "peeklock.h"

/* Python callable (code, http_status, retryable, message) -> exception
 * instance, registered by peeklock.errors at import. */
static PyObject *pl_py_error_factory = NULL;

/* The UTF-8 of an exact str, or NULL when the C layer could not take it whole
 * (a subclass, an embedded NUL, a lone surrogate); no Python error is left. */
static const char *pl_py_whole_utf8(PyObject *s) {
    Py_ssize_t n = 0;
    const char *u = PyUnicode_CheckExact(s) ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
    if (!u) { PyErr_Clear(); return NULL; }
    return strlen(u) == (size_t)n ? u : NULL;
}

/* The pl_message of a peeklock.Message: its "_h" slot (client.py). NULL with
 * a TypeError set when message is not one. */
static PyObject *pl_py_slot_h, *pl_py_slot_body;

static pl_message *pl_py_message_of(PyObject *message) {
    void *m = NULL;
    if (!pl_py_slot_h && !(pl_py_slot_h = PyUnicode_InternFromString("_h"))) return NULL;
    PyObject *h = PyObject_GetAttr(message, pl_py_slot_h);
    int res = h ? SWIG_ConvertPtr(h, &m, SWIGTYPE_p_pl_message, 0) : SWIG_ERROR;
    Py_XDECREF(h);
    if (SWIG_IsOK(res) && m) return (pl_message *)m;
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "expected a peeklock.Message, not %s", Py_TYPE(message)->tp_name);
    return NULL;
}

static void pl_py_raise(int code) {
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
        PyObject *exc = PyObject_CallFunction(pl_py_error_factory, "iiiO", code, status,
                                              retryable, msg);
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
%}

%inline %{
/* Registers the exception factory (peeklock.errors does this at import). */
static PyObject *pl_py_set_error_factory(PyObject *factory) {
    if (!PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError, "factory must be callable");
        return NULL;
    }
    Py_XINCREF(factory);
    Py_XSETREF(pl_py_error_factory, factory);
    Py_RETURN_NONE;
}

/* Client.send's common case in one call instead of one per property: a bytes
 * body and a dict (or None) of properties named by str with values exactly
 * str, int, float or bool. Builds the outgoing message, sends it with the GIL
 * released, frees it. Anything else (another body or mapping type, a subclass,
 * a datetime, an int beyond 64 bits, a string with a NUL) returns
 * NotImplemented before any request, and the caller takes the general path,
 * which accepts or rejects it as before. Errors of the C layer are raised as
 * the general path raises them, property by property in the same order. */
static PyObject *pl_py_send(pl_client *client, const char *entity, PyObject *body,
                            PyObject *properties) {
    if (!PyBytes_CheckExact(body) || (properties != Py_None && !PyDict_CheckExact(properties)))
        Py_RETURN_NOTIMPLEMENTED;
    pl_outgoing *m = NULL;
    int rc = pl_outgoing_new(&m, PyBytes_AS_STRING(body), (size_t)PyBytes_GET_SIZE(body));
    Py_ssize_t pos = 0;
    PyObject *k, *v;
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
            if (overflow || (i == -1 && PyErr_Occurred())) { PyErr_Clear(); goto general; }
            rc = pl_outgoing_add_int(m, name, (int64_t)i);
        } else if (PyFloat_CheckExact(v)) {
            rc = pl_outgoing_add_double(m, name, PyFloat_AS_DOUBLE(v));
        } else {
            goto general;
        }
    }
    if (rc >= 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = pl_send(client, entity, m);
        Py_END_ALLOW_THREADS
    }
    pl_outgoing_free(m);
    if (rc < 0) { pl_py_raise(rc); return NULL; }
    Py_RETURN_NONE;
general:
    pl_outgoing_free(m);
    Py_RETURN_NOTIMPLEMENTED;
}

/* Getters of the peeklock.Message properties read about once per message
 * (client.py): each takes the Message and reads its pl_message, so a read is
 * one C call instead of a Python frame plus a call. The values are those of
 * the generated wrappers; the body is kept in the Message's "_body" slot. */
static PyObject *pl_py_message_body_of(PyObject *message) {
    pl_message *m = pl_py_message_of(message);
    if (!m) return NULL;
    if (!pl_py_slot_body && !(pl_py_slot_body = PyUnicode_InternFromString("_body"))) return NULL;
    PyObject *body = PyObject_GetAttr(message, pl_py_slot_body);
    if (body != Py_None) return body;           /* the bytes made before, or NULL */
    Py_DECREF(body);
    size_t len = 0;
    const void *b = pl_message_body(m, &len);
    body = PyBytes_FromStringAndSize(b ? (const char *)b : "", b ? (Py_ssize_t)len : 0);
    if (body && PyObject_SetAttr(message, pl_py_slot_body, body) < 0) Py_CLEAR(body);
    return body;
}

static PyObject *pl_py_message_id_of(PyObject *message) {
    pl_message *m = pl_py_message_of(message);
    const char *id = m ? pl_message_id(m) : NULL;
    if (!m) return NULL;
    if (!id) Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(id, (Py_ssize_t)strlen(id), "surrogateescape");
}

static PyObject *pl_py_message_sequence_number_of(PyObject *message) {
    pl_message *m = pl_py_message_of(message);
    return m ? PyLong_FromLongLong((long long)pl_message_sequence_number(m)) : NULL;
}

/* The last error on this thread, as (code, http_status, retryable, message). */
static PyObject *pl_py_error_last(void) {
    const pl_error *e = pl_error_last();
    return Py_BuildValue("(iiis)", e->code, e->http_status, e->retryable,
                         e->message ? e->message : "");
}
%}

/* ---- the GIL: released only around calls that can block ----------------- */

%thread pl_send;
%thread pl_send_batch;
%thread pl_peek_lock;
%thread pl_receive_and_delete;
%thread pl_renew_lock;
%thread pl_unlock;
%thread pl_complete;
%thread pl_renewer_close;
%thread pl_renewer_wait_event;
%thread pl_renewer::~pl_renewer;

/* ---- int PL_STATUS: negative -> peeklock.Error subclass ------------------ */

%typemap(out) int PL_STATUS {
    if ($1 < 0) { pl_py_raise($1); SWIG_fail; }
    $result = SWIG_Py_Void();
}

/* ---- T **out: returned, owned by Python --------------------------------- */

%define PL_PY_OUT_OBJECT(TYPE)
%typemap(in, numinputs=0) TYPE **out (TYPE *tmp = NULL) { $1 = &tmp; }
%typemap(argout) TYPE **out {
    /* the status typemap left None: the object (or None) replaces it */
    Py_XDECREF($result);
    $result = tmp$argnum ? SWIG_NewPointerObj(SWIG_as_voidptr(tmp$argnum), $*1_descriptor, SWIG_POINTER_OWN)
                         : SWIG_Py_Void();
}
%enddef
PL_PY_OUT_OBJECT(pl_client)
PL_PY_OUT_OBJECT(pl_message)
PL_PY_OUT_OBJECT(pl_renewer)
PL_PY_OUT_OBJECT(pl_outgoing)
PL_PY_OUT_OBJECT(pl_batch)
PL_PY_OUT_OBJECT(pl_connstr)
PL_PY_OUT_OBJECT(pl_event)
PL_PY_OUT_OBJECT(pl_request)
PL_PY_OUT_OBJECT(pl_response)

/* ---- char **out: an owned string ---------------------------------------- */

%typemap(in, numinputs=0) char **out (char *tmp = NULL) { $1 = &tmp; }
%typemap(argout) char **out {
    Py_XDECREF($result);
    $result = tmp$argnum ? PyUnicode_DecodeUTF8(tmp$argnum, (Py_ssize_t)strlen(tmp$argnum), "replace")
                         : SWIG_Py_Void();
}
%typemap(freearg) char **out { pl_free(tmp$argnum); }

/* ---- bytes in / bytes out ------------------------------------------------ */

%typemap(in) (const void *body, size_t len) (Py_buffer view, int have_view = 0) {
    if (PyUnicode_Check($input)) {
        PyErr_SetString(PyExc_TypeError, "body must be bytes-like, not str (encode it first)");
        SWIG_fail;
    }
    if (PyObject_GetBuffer($input, &view, PyBUF_SIMPLE) != 0) SWIG_fail;
    have_view = 1;
    $1 = view.buf;
    $2 = (size_t)view.len;
}
%typemap(freearg) (const void *body, size_t len) { if (have_view$argnum) PyBuffer_Release(&view$argnum); }

%typemap(out) const void * "$result = SWIG_Py_Void();";
%typemap(in, numinputs=0) size_t *len (size_t tmp = 0) { $1 = &tmp; }
%typemap(argout) size_t *len {
    Py_XDECREF($result);
    $result = PyBytes_FromStringAndSize(result ? (const char *)result : "", result ? (Py_ssize_t)*$1 : 0);
}

/* ---- stats out: dicts ----------------------------------------------------- */

%typemap(in, numinputs=0) pl_client_stats *out (pl_client_stats tmp) {
    memset(&tmp, 0, sizeof tmp);
    $1 = &tmp;
}
%typemap(argout) pl_client_stats *out {
    Py_XDECREF($result);
    $result = (Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:d,s:d}",
        "requests", (unsigned long long)tmp$argnum.requests,
        "reused_connections", (unsigned long long)tmp$argnum.reused_connections,
        "retries", (unsigned long long)tmp$argnum.retries,
        "sent", (unsigned long long)tmp$argnum.sent,
        "received", (unsigned long long)tmp$argnum.received,
        "completed", (unsigned long long)tmp$argnum.completed,
        "abandoned", (unsigned long long)tmp$argnum.abandoned,
        "renewed", (unsigned long long)tmp$argnum.renewed,
        "lost", (unsigned long long)tmp$argnum.lost,
        "renew_p50_ms", tmp$argnum.renew_p50_ms,
        "renew_p99_ms", tmp$argnum.renew_p99_ms));
}

%typemap(in, numinputs=0) pl_renewer_stats *out (pl_renewer_stats tmp) {
    memset(&tmp, 0, sizeof tmp);
    $1 = &tmp;
}
%typemap(argout) pl_renewer_stats *out {
    Py_XDECREF($result);
    $result = (Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:d,s:d,s:(KKKKKK),s:K}",
        "held", (unsigned long long)tmp$argnum.held,
        "renewals", (unsigned long long)tmp$argnum.renewals,
        "failures", (unsigned long long)tmp$argnum.failures,
        "lost", (unsigned long long)tmp$argnum.lost,
        "cap_reached", (unsigned long long)tmp$argnum.cap_reached,
        "threads", (unsigned long long)tmp$argnum.threads,
        "lateness_p99_ms", tmp$argnum.lateness_p99_ms,
        "rtt_p99_ms", tmp$argnum.rtt_p99_ms,
        "slack_buckets",
        (unsigned long long)tmp$argnum.slack_buckets[0], (unsigned long long)tmp$argnum.slack_buckets[1],
        (unsigned long long)tmp$argnum.slack_buckets[2], (unsigned long long)tmp$argnum.slack_buckets[3],
        (unsigned long long)tmp$argnum.slack_buckets[4], (unsigned long long)tmp$argnum.slack_buckets[5],
        "state_bytes", (unsigned long long)tmp$argnum.state_bytes));
}

%include "peeklock.i"

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
#include <float.h>
#include <string.h>
#include <structmember.h>
#include "peeklock.h"

/* Python callable (code, http_status, retryable, message) -> exception
 * instance, registered by peeklock.errors at import. */
static PyObject *pl_py_error_factory = NULL;

/* Python callable (kind, operation, entity, code, http_status, attempt, delay_ms,
 * message), registered by peeklock.client at import: the log hook of every client
 * (PL_BIND_LOG_FN, peeklock.i), told each retry and each failed call. The hook runs
 * on the thread that made the call, which released the GIL around the request: it
 * takes the GIL back for the handler, then releases it again. Only failures call it:
 * a call that succeeds at once costs nothing more. Never called while the
 * interpreter finalizes. */
static PyObject *pl_py_log_handler = NULL;

static void pl_py_log(void *userdata, const pl_log_record *r) {
    PyGILState_STATE g;
    PyObject *res = NULL;
    (void)userdata;
#if PY_VERSION_HEX >= 0x030D0000
    if (!Py_IsInitialized() || Py_IsFinalizing()) return;
#else
    if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
#endif
    g = PyGILState_Ensure();
    if (pl_py_log_handler) {
        PyObject *handler = pl_py_log_handler;
        Py_INCREF(handler);
        res = PyObject_CallFunction(handler, "isNiiilN", r->kind, r->operation,
                                    PyUnicode_DecodeUTF8(r->entity, (Py_ssize_t)strlen(r->entity), "replace"),
                                    r->code, r->http_status, r->attempt, r->delay_ms,
                                    PyUnicode_DecodeUTF8(r->message, (Py_ssize_t)strlen(r->message), "replace"));
        if (!res) PyErr_WriteUnraisable(handler);     /* a handler's failure stays out of the call */
        Py_XDECREF(res);
        Py_DECREF(handler);
    }
    PyGILState_Release(g);
}
#define PL_BIND_LOG_FN pl_py_log

/* The UTF-8 of an exact str, or NULL when the C layer could not take it whole
 * (a subclass, an embedded NUL, a lone surrogate); no Python error is left. */
static const char *pl_py_whole_utf8(PyObject *s) {
    Py_ssize_t n = 0;
    const char *u = PyUnicode_CheckExact(s) ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
    if (!u) { PyErr_Clear(); return NULL; }
    return strlen(u) == (size_t)n ? u : NULL;
}

/* The slots of a peeklock.Message (client.py), read and set at their offsets:
 * pl_py_bind records them, with the class, at import. A Message made here
 * gets every slot Message.__init__ sets. */
enum { PL_SLOT_H, PL_SLOT_CLIENT, PL_SLOT_BODY, PL_SLOT_PROPS, PL_SLOT_MAX_RENEW,
       PL_SLOT_IN_RENEWER, PL_SLOTS };
static const char *const pl_py_slot_names[PL_SLOTS] = {
    "_h", "_client", "_body", "_props", "max_renew", "_in_renewer"};
static Py_ssize_t pl_py_slot_offset[PL_SLOTS];
static PyTypeObject *pl_py_message_type = NULL;
/* client._ENTITY_OK: entity names that passed the checks (exact str keys). */
static PyObject *pl_py_entity_ok = NULL;

#define PL_PY_SLOT(o, i) (*(PyObject **)((char *)(o) + pl_py_slot_offset[i]))

/* Stores value (a new reference) in slot i of a Message. */
static void pl_py_slot_set(PyObject *message, int i, PyObject *value) {
    PyObject *old = PL_PY_SLOT(message, i);
    PL_PY_SLOT(message, i) = value;
    Py_XDECREF(old);
}

/* The pl_message of a peeklock.Message (its "_h" slot). NULL with a TypeError
 * set when message is not one. */
static pl_message *pl_py_message_of(PyObject *message) {
    void *m = NULL;
    if (pl_py_message_type && PyObject_TypeCheck(message, pl_py_message_type)
        && SWIG_IsOK(SWIG_ConvertPtr(PL_PY_SLOT(message, PL_SLOT_H), &m, SWIGTYPE_p_pl_message, 0))
        && m)
        return (pl_message *)m;
    PyErr_Format(PyExc_TypeError, "expected a peeklock.Message, not %s", Py_TYPE(message)->tp_name);
    return NULL;
}

/* A new peeklock.Message owning m (freed here if that fails), as
 * Message(handle, client, max_renew) makes it; steals max_renew. */
static PyObject *pl_py_message_new(pl_message *m, PyObject *client, PyObject *max_renew) {
    PyObject *h = SWIG_Python_NewPointerObj(NULL, SWIG_as_voidptr(m), SWIGTYPE_p_pl_message,
                                            SWIG_POINTER_OWN);
    PyObject *msg = NULL;
    if (h == Py_None) Py_CLEAR(h);              /* out of memory */
    if (h) msg = pl_py_message_type->tp_alloc(pl_py_message_type, 0);
    else pl_message_free(m);
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

/* The "_plain_h" object of a peeklock.Client (a new reference) and its
 * pl_client: the client's handle while it is open and has no token provider
 * (nothing to refresh). Otherwise NULL, no error set: the caller takes the
 * Python method. */
static PyObject *pl_py_str_plain_h;

static PyObject *pl_py_plain_client(PyObject *client, pl_client **c) {
    PyObject *h = PyObject_GetAttr(client, pl_py_str_plain_h);
    void *p = NULL;
    if (h && (!SWIG_IsOK(SWIG_ConvertPtr(h, &p, SWIGTYPE_p_pl_client, 0)) || !p)) Py_CLEAR(h);
    PyErr_Clear();
    *c = (pl_client *)p;
    return h;
}

/* Parameter names of the C methods, interned by pl_py_bind. */
enum { PL_ARG_ENTITY, PL_ARG_BODY, PL_ARG_PROPERTIES, PL_ARG_TIMEOUT, PL_ARG_MAX_RENEW, PL_ARGS };
static const char *const pl_py_arg_names[PL_ARGS] = {
    "entity", "body", "properties", "timeout", "max_renew"};
static PyObject *pl_py_arg_str[PL_ARGS];

/* Fast-call arguments into out[0..nnames) by position (at most npos) or by
 * name (names: PL_ARG_*). 0 when the call has more positional arguments, a
 * name not in names or one given twice: the Python method then takes the call
 * (and rejects it). */
static int pl_py_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      const int *names, Py_ssize_t npos, Py_ssize_t nnames, PyObject **out) {
    Py_ssize_t i, j, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > npos) return 0;
    for (i = 0; i < nargs; i++) out[i] = args[i];
    for (i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        for (j = 0; j < nnames && k != pl_py_arg_str[names[j]]; j++) {}
        if (j == nnames)                        /* a name not interned */
            for (j = 0; j < nnames && PyUnicode_Compare(k, pl_py_arg_str[names[j]]) != 0; j++) {}
        if (j == nnames || out[j]) return 0;
        out[j] = args[nargs + i];
    }
    return 1;
}

/* An entity name that passed the checks of client.py before. */
static int pl_py_entity_known(PyObject *entity) {
    return entity && PyUnicode_CheckExact(entity) && pl_py_entity_ok
           && PyDict_Contains(pl_py_entity_ok, entity) == 1;
}

/* The call handed on, as it came, to self's Python method of that name. */
static PyObject *pl_py_general(PyObject *self, const char *name, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *method = PyObject_GetAttrString(self, name);
    PyObject *res = method ? PyObject_Vectorcall(method, args, (size_t)nargs, kwnames) : NULL;
    Py_XDECREF(method);
    return res;
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

/* Registers the log hook's handler (peeklock.client does this at import). */
static PyObject *pl_py_set_log_handler(PyObject *handler) {
    if (!PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "handler must be callable");
        return NULL;
    }
    Py_INCREF(handler);
    Py_XSETREF(pl_py_log_handler, handler);
    Py_RETURN_NONE;
}

/* Getters of the peeklock.Message properties read about once per message
 * (client.py): each takes the Message and reads its pl_message, so a read is
 * one C call instead of a Python frame plus a call. The values are those of
 * the generated wrappers; the body is kept in the Message's "_body" slot. */
static PyObject *pl_py_message_body_of(PyObject *message) {
    pl_message *m = pl_py_message_of(message);
    if (!m) return NULL;
    PyObject *body = PL_PY_SLOT(message, PL_SLOT_BODY);
    if (body && body != Py_None) {              /* the bytes made before */
        Py_INCREF(body);
        return body;
    }
    size_t len = 0;
    const void *b = pl_message_body(m, &len);
    body = PyBytes_FromStringAndSize(b ? (const char *)b : "", b ? (Py_ssize_t)len : 0);
    if (body) {
        Py_INCREF(body);
        pl_py_slot_set(message, PL_SLOT_BODY, body);
    }
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

/* ---- Client.send, Client.peek_lock, Message.complete: one C call --------- */

%{
/* Their common case each: an entity checked before, an open client without a
 * token provider, plain arguments (see each). Any other call goes on, as it
 * came, to the Python method of the same name with a leading underscore
 * (client.py), which checks, refreshes and raises as always. The request runs
 * with the GIL released; errors of the C layer raise as the wrappers raise. */

/* Client.send's common case in one call instead of one per property: a bytes
 * body and a dict (or None) of properties named by str with values exactly
 * str, int, float or bool. Builds the outgoing message, sends it with the GIL
 * released, frees it. Anything else (another body or mapping type, a subclass,
 * a datetime, an int beyond 64 bits, a string with a NUL) returns
 * NotImplemented before any request, and the caller hands the call on to the
 * general path, which accepts or rejects it as before. Errors of the C layer
 * are raised as the general path raises them, property by property in the
 * same order. */
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

static PyObject *pl_py_client_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
    static const int names[] = {PL_ARG_ENTITY, PL_ARG_BODY, PL_ARG_PROPERTIES};
    PyObject *a[3] = {NULL, NULL, NULL}, *h = NULL, *res;
    pl_client *c = NULL;
    const char *entity;
    if (pl_py_args(args, nargs, kwnames, names, 2, 3, a) && pl_py_entity_known(a[0]) && a[1]
        && PyBytes_CheckExact(a[1]) && (h = pl_py_plain_client(self, &c)) != NULL) {
        if (!(entity = PyUnicode_AsUTF8(a[0]))) {           /* out of memory */
            Py_DECREF(h);
            return NULL;
        }
        res = pl_py_send(c, entity, a[1], a[2] ? a[2] : Py_None);
        Py_DECREF(h);
        if (res != Py_NotImplemented) return res;   /* sent, or raised */
        Py_DECREF(res);
    }
    return pl_py_general(self, "_send", args, nargs, kwnames);
}

/* A peek-lock whose answer was lost may leave a message locked by nobody: said at WARNING
 * through peeklock.client._warn_orphaned (rare: only then is Python called). */
static void pl_py_warn_orphaned(PyObject *entity) {
    PyObject *mod, *r;
    if (!pl_client_last_orphaned()) return;
    if (!(mod = PyImport_ImportModule("peeklock.client"))) { PyErr_Clear(); return; }
    r = PyObject_CallMethod(mod, "_warn_orphaned", "O", entity);
    Py_XDECREF(r);
    if (!r) PyErr_Clear();
    Py_DECREF(mod);
}

/* timeout: an int of 0..300 seconds; max_renew: None or a positive finite
 * float or int. */
static PyObject *pl_py_client_peek_lock(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames) {
    static const int names[] = {PL_ARG_ENTITY, PL_ARG_TIMEOUT, PL_ARG_MAX_RENEW};
    PyObject *a[3] = {NULL, NULL, NULL}, *h = NULL, *mr;
    pl_client *c = NULL;
    pl_message *m = NULL;
    const char *entity;
    long t = 30;
    int rc;
    if (!pl_py_args(args, nargs, kwnames, names, 2, 3, a) || !pl_py_entity_known(a[0]))
        goto general;
    if (!(entity = PyUnicode_AsUTF8(a[0]))) return NULL;    /* with the GIL: it may allocate */
    if (a[1] && (!PyLong_CheckExact(a[1]) || (t = PyLong_AsLong(a[1])) < 0 || t > 300)) {
        PyErr_Clear();
        goto general;
    }
    mr = a[2];
    if (!mr || mr == Py_None) {
        mr = Py_None;
        Py_INCREF(mr);
    } else if (PyFloat_CheckExact(mr) || PyLong_CheckExact(mr)) {
        double d = PyFloat_AsDouble(mr);
        if (!(d > 0.0 && d <= DBL_MAX)) {       /* NaN, inf, <= 0, or an int beyond a double */
            PyErr_Clear();
            goto general;
        }
        mr = PyFloat_FromDouble(d);
        if (!mr) return NULL;
    } else {
        goto general;
    }
    if (!(h = pl_py_plain_client(self, &c))) {
        Py_DECREF(mr);
        goto general;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = pl_peek_lock(&m, c, entity, (int)t);
    Py_END_ALLOW_THREADS
    Py_DECREF(h);
    pl_py_warn_orphaned(a[0]);
    if (rc < 0 || !m) {
        Py_DECREF(mr);
        if (rc < 0) {
            pl_py_raise(rc);
            return NULL;
        }
        Py_RETURN_NONE;                         /* nothing arrived in time */
    }
    return pl_py_message_new(m, self, mr);
general:
    return pl_py_general(self, "_peek_lock", args, nargs, kwnames);
}

/* No arguments, the message not handed to the renewer. */
static PyObject *pl_py_message_complete(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames) {
    PyObject *client = PL_PY_SLOT(self, PL_SLOT_CLIENT), *mh = PL_PY_SLOT(self, PL_SLOT_H), *h;
    pl_client *c = NULL;
    void *m = NULL;
    int rc;
    if (nargs || kwnames || PL_PY_SLOT(self, PL_SLOT_IN_RENEWER) != Py_False || !client
        || !SWIG_IsOK(SWIG_ConvertPtr(mh, &m, SWIGTYPE_p_pl_message, 0)) || !m)
        return pl_py_general(self, "_complete", args, nargs, kwnames);
    /* m lives as long as its handle object, not as the Message: another thread may
     * set or delete _h (or _client) while the GIL is released, or while _plain_h is
     * read. Both are held until pl_complete returns. */
    Py_INCREF(mh);
    Py_INCREF(client);
    h = pl_py_plain_client(client, &c);
    Py_DECREF(client);
    if (!h) {
        Py_DECREF(mh);
        return pl_py_general(self, "_complete", args, nargs, kwnames);
    }
    Py_BEGIN_ALLOW_THREADS
    rc = pl_complete(c, (pl_message *)m);
    Py_END_ALLOW_THREADS
    Py_DECREF(h);
    Py_DECREF(mh);
    if (rc < 0) {
        pl_py_raise(rc);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef pl_py_methods[] = {
    {"send", (PyCFunction)(void (*)(void))pl_py_client_send, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"peek_lock", (PyCFunction)(void (*)(void))pl_py_client_peek_lock,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"complete", (PyCFunction)(void (*)(void))pl_py_message_complete,
     METH_FASTCALL | METH_KEYWORDS, NULL},
};
%}

%inline %{
/* Records the Message class (its slots' offsets) and the entity cache of
 * client.py; called once, at import. */
static PyObject *pl_py_bind(PyObject *message_class, PyObject *entity_ok) {
    int i;
    if (!PyType_Check(message_class) || !PyDict_CheckExact(entity_ok)) {
        PyErr_SetString(PyExc_TypeError, "expected the Message class and a dict");
        return NULL;
    }
    for (i = 0; i < PL_SLOTS; i++) {
        PyObject *d = PyDict_GetItemString(((PyTypeObject *)message_class)->tp_dict,
                                           pl_py_slot_names[i]);
        if (!d || Py_TYPE(d) != &PyMemberDescr_Type
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "Message has no slot %s", pl_py_slot_names[i]);
            return NULL;
        }
        pl_py_slot_offset[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    for (i = 0; i < PL_ARGS; i++)
        if (!pl_py_arg_str[i] && !(pl_py_arg_str[i] = PyUnicode_InternFromString(pl_py_arg_names[i])))
            return NULL;
    if (!pl_py_str_plain_h && !(pl_py_str_plain_h = PyUnicode_InternFromString("_plain_h")))
        return NULL;
    Py_INCREF(message_class);
    Py_XSETREF(pl_py_message_type, (PyTypeObject *)message_class);
    Py_INCREF(entity_ok);
    Py_XSETREF(pl_py_entity_ok, entity_ok);
    Py_RETURN_NONE;
}

/* The C method called name ("send" or "peek_lock" of Client, "complete" of
 * Message) as a method of cls, documented by doc (kept for good). */
static PyObject *pl_py_method(PyObject *cls, const char *name, PyObject *doc) {
    size_t i;
    if (!PyType_Check(cls) || !PyUnicode_Check(doc)) {
        PyErr_SetString(PyExc_TypeError, "expected a class and a str");
        return NULL;
    }
    for (i = 0; i < sizeof pl_py_methods / sizeof pl_py_methods[0]; i++) {
        PyMethodDef *def = &pl_py_methods[i];
        if (strcmp(def->ml_name, name) != 0) continue;
        if (!def->ml_doc) {
            Py_INCREF(doc);                     /* its UTF-8 is the doc from now on */
            if (!(def->ml_doc = PyUnicode_AsUTF8(doc))) return NULL;
        }
        return PyDescr_NewMethod((PyTypeObject *)cls, def);
    }
    PyErr_Format(PyExc_ValueError, "no C method %s", name);
    return NULL;
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
%thread pl_renewer_finish;
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
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:d,s:d,s:K,s:K,s:K}",
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
        "renew_p99_ms", tmp$argnum.renew_p99_ms,
        "orphaned_locks", (unsigned long long)tmp$argnum.orphaned_locks,
        "failed", (unsigned long long)tmp$argnum.failed,
        "renew_failures", (unsigned long long)tmp$argnum.renew_failures));
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

/* pl_renewer_finish's outcome: the return value (the status typemap left None). */
%typemap(in, numinputs=0) int *outcome (int tmp = 0) { $1 = &tmp; }
%typemap(argout) int *outcome {
    Py_XDECREF($result);
    $result = PyLong_FromLong(tmp$argnum);
}

/* ---- the asynchronous engine (peeklock.aio) ------------------------------- */

#define PL_BIND_AIO
PL_PY_OUT_OBJECT(pl_aio)
%thread pl_aio::~pl_aio;
%ignore pl_aio_next;
%ignore pl_aio_done_take_message;
%ignore pl_aio_done;

/* Submit calls return the operation's id. */
%typemap(in, numinputs=0) uint64_t *id (uint64_t tmp = 0) { $1 = &tmp; }
%typemap(argout) uint64_t *id {
    Py_XDECREF($result);
    $result = PyLong_FromUnsignedLongLong((unsigned long long)tmp$argnum);
}

%typemap(in, numinputs=0) pl_aio_stats *out (pl_aio_stats tmp) {
    memset(&tmp, 0, sizeof tmp);
    $1 = &tmp;
}
%typemap(argout) pl_aio_stats *out {
    Py_XDECREF($result);
    $result = (Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}",
        "submitted", (unsigned long long)tmp$argnum.submitted,
        "completed", (unsigned long long)tmp$argnum.completed,
        "pending", (unsigned long long)tmp$argnum.pending,
        "inflight", (unsigned long long)tmp$argnum.inflight,
        "max_pending", (unsigned long long)tmp$argnum.max_pending,
        "cancelled", (unsigned long long)tmp$argnum.cancelled,
        "cancel_abandoned", (unsigned long long)tmp$argnum.cancel_abandoned,
        "op_bytes", (unsigned long long)tmp$argnum.op_bytes));
}
%apply int PL_STATUS { int pl_aio_stats_get };

%inline %{
/* Every queued completion of a, as a list of tuples (id, code, http_status,
 * retryable, text, message handle or None, orphaned); the fd is quiet after.
 * One call per readable event: the loop's reader calls nothing else. */
static PyObject *pl_py_aio_drain(pl_aio *a) {
    PyObject *list = PyList_New(0);
    pl_aio_done *d = NULL;
    if (!list) return NULL;
    while (pl_aio_next(&d, a) == PL_OK) {
        pl_message *m = pl_aio_done_take_message(d);
        PyObject *h = m ? SWIG_Python_NewPointerObj(NULL, SWIG_as_voidptr(m), SWIGTYPE_p_pl_message, SWIG_POINTER_OWN)
                        : SWIG_Py_Void();
        const char *text = pl_aio_done_message(d);
        PyObject *t = h ? Py_BuildValue("(KiiiNNIi)", (unsigned long long)pl_aio_done_id(d),
                                        pl_aio_done_code(d), pl_aio_done_http_status(d),
                                        pl_aio_done_retryable(d),
                                        PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace"),
                                        h, pl_aio_done_orphaned(d), pl_aio_done_attempts(d))
                        : NULL;
        pl_aio_done_free(d);
        if (!t || PyList_Append(list, t) < 0) {
            /* out of memory: the rest stays queued (the fd stays readable) */
            Py_XDECREF(t);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(t);
    }
    return list;
}
%}

%include "peeklock.i"

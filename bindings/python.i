/*
 * python.i — the Python part of the peeklock SWIG bindings: the typemap hooks
 * promised by peeklock.i and the GIL policy. Built as the extension module
 * peeklock._core (swig -python -builtin) together with bindings/python/glue.c,
 * the C that SWIG does not generate (error bridge, log hook, options, the C
 * methods of client.py's classes); the hand-written package python/peeklock/ is
 * the public surface.
 */
%module(package="peeklock", threads="1") _core

/* Nothing releases the GIL unless listed under "the GIL" below. */
%nothread;

%{
#include "glue.h"

/* The SWIG side of glue.h's handles: SWIG's runtime lives in this file. */
static swig_type_info *pl_py_swig_type(pl_py_kind kind) {
    switch (kind) {
    case PL_PY_CLIENT: return SWIGTYPE_p_pl_client;
    case PL_PY_MESSAGE: return SWIGTYPE_p_pl_message;
    case PL_PY_RENEWER: return SWIGTYPE_p_pl_renewer;
    case PL_PY_AIO: return SWIGTYPE_p_pl_aio;
    case PL_PY_RUN: return SWIGTYPE_p_pl_run;
    }
    return NULL;
}

void *pl_py_handle_ptr(PyObject *handle, pl_py_kind kind) {
    void *p = NULL;
    return handle && SWIG_IsOK(SWIG_ConvertPtr(handle, &p, pl_py_swig_type(kind), 0)) ? p : NULL;
}

PyObject *pl_py_handle_new(void *ptr, pl_py_kind kind) {
    PyObject *h = SWIG_Python_NewPointerObj(NULL, ptr, pl_py_swig_type(kind), SWIG_POINTER_OWN);
    if (h != Py_None) return h;
    Py_DECREF(h);                               /* out of memory */
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return NULL;
}

/* What the module's init code returns on failure: SWIG 4.4 and later run it in
 * SWIG_mod_exec (multi-phase init, an int), earlier ones in SWIG_init (the module). */
#if defined(SWIG_VERSION) && SWIG_VERSION >= 0x040400
#define PL_PY_INIT_FAILED -1
#else
#define PL_PY_INIT_FAILED NULL
#endif
%}

/* glue.c's functions join the generated ones: the error and log bridges
 * (pl_py_set_error_factory, pl_py_set_log_handler, pl_py_set_orphan_warner, pl_py_error_last,
 * pl_redact, which answers None rather than raise),
 * pl_client_new, pl_renewer_new and pl_run_new taking their options structs' fields as
 * keywords, the Message getters and pl_py_bind, pl_py_method (the C methods of
 * client.py's classes), pl_py_aio_submit, pl_py_aio_resolve and pl_py_aio_lost. */
%init %{
    if (pl_py_glue_init(m) < 0) return PL_PY_INIT_FAILED;
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
/* char **out2: a second owned string; the result becomes the pair (out, out2) */
%typemap(in, numinputs=0) char **out2 (char *tmp = NULL) { $1 = &tmp; }
%typemap(argout) char **out2 {
    PyObject *second = tmp$argnum ? PyUnicode_DecodeUTF8(tmp$argnum, (Py_ssize_t)strlen(tmp$argnum), "replace")
                                  : SWIG_Py_Void();
    PyObject *pair = ($result && second) ? PyTuple_Pack(2, $result, second) : NULL;
    Py_XDECREF(second);
    Py_XDECREF($result);
    $result = pair;
    if (!pair) SWIG_fail;
}
%typemap(freearg) char **out2 { pl_free(tmp$argnum); }

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

/* ---- stats out: dicts (glue.c, by bindings/pl_fields.h's lists) ----------- */

%typemap(in, numinputs=0) pl_client_stats *out (pl_client_stats tmp) { memset(&tmp, 0, sizeof tmp); $1 = &tmp; }
%typemap(argout) pl_client_stats *out { Py_XDECREF($result); $result = pl_py_client_stats(&tmp$argnum); }
%typemap(in, numinputs=0) pl_renewer_stats *out (pl_renewer_stats tmp) { memset(&tmp, 0, sizeof tmp); $1 = &tmp; }
%typemap(argout) pl_renewer_stats *out { Py_XDECREF($result); $result = pl_py_renewer_stats(&tmp$argnum); }
%typemap(in, numinputs=0) pl_run_tallies *out (pl_run_tallies tmp = PL_RUN_TALLIES_INIT) { $1 = &tmp; }
%typemap(argout) pl_run_tallies *out { Py_XDECREF($result); $result = pl_py_run_tallies(&tmp$argnum); }

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

/* Submit calls return the operation's id. Out of memory for it, the operation
 * (under way, but nobody could wait for it) is cancelled, and the call raises
 * what its caller may assume (pl_py_aio_lost: MemoryError for a peek-lock,
 * OutcomeUnknownError for an operation that may have acted). */
%typemap(in, numinputs=0) uint64_t *id (uint64_t tmp = 0) { $1 = &tmp; }
%typemap(argout) uint64_t *id {
    Py_XDECREF($result);
    $result = PyLong_FromUnsignedLongLong((unsigned long long)tmp$argnum);
    if (!$result && tmp$argnum) pl_py_aio_lost(arg1, tmp$argnum, "$symname");
}

%typemap(in, numinputs=0) pl_aio_stats *out (pl_aio_stats tmp) { memset(&tmp, 0, sizeof tmp); $1 = &tmp; }
%typemap(argout) pl_aio_stats *out { Py_XDECREF($result); $result = pl_py_aio_stats(&tmp$argnum); }
%apply int PL_STATUS { int pl_aio_stats_get };

%include "peeklock.i"

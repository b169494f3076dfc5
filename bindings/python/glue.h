/*
 * glue.h — the hand-written part of the Python extension module peeklock._core:
 * what SWIG does not generate (bindings/python/glue.c). bindings/python.i includes
 * this header, calls pl_py_glue_init from its %init block and pl_py_raise from its
 * status typemap, and defines the two handle functions below over SWIG's runtime.
 */
#ifndef PEEKLOCK_PYTHON_GLUE_H
#define PEEKLOCK_PYTHON_GLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* The SWIG classes glue.c makes and reads handles of. */
typedef enum pl_py_kind { PL_PY_CLIENT, PL_PY_MESSAGE, PL_PY_RENEWER, PL_PY_AIO, PL_PY_RUN } pl_py_kind;

/* Defined in bindings/python.i (SWIG's runtime lives there). The object that a
 * SWIG handle of that kind wraps, or NULL (no error set) when handle is not one. */
void *pl_py_handle_ptr(PyObject *handle, pl_py_kind kind);
/* A new SWIG handle owning ptr (its destructor frees it); NULL with an error set
 * when out of memory, ptr then not freed. */
PyObject *pl_py_handle_new(void *ptr, pl_py_kind kind);

/* Adds glue.c's functions to the module (see pl_py_functions in glue.c); -1 with
 * an error set on failure. */
int pl_py_glue_init(PyObject *module);

/* Raises the exception of a PL_E* code: the class made by the factory that
 * peeklock.errors registers, with pl_error_last()'s details when they are code's. */
void pl_py_raise(int code);

/* The dict of a stats or tallies struct, its fields (bindings/pl_fields.h) by name
 * (a histogram as a tuple); NULL with an error set. The .i typemaps return them. */
struct pl_client_stats;
struct pl_renewer_stats;
struct pl_run_tallies;
struct pl_aio_stats;
PyObject *pl_py_client_stats(const struct pl_client_stats *s);
PyObject *pl_py_renewer_stats(const struct pl_renewer_stats *s);
PyObject *pl_py_run_tallies(const struct pl_run_tallies *s);
PyObject *pl_py_aio_stats(const struct pl_aio_stats *s);

struct pl_aio;
/* An operation the engine took (id) that its caller cannot wait for (out of
 * memory for its id, or for its future's registration): cancelled, and the
 * error for the caller raised in place of the MemoryError being raised.
 * submit_fn names the submit function (pl_aio_send, ...): a peek-lock or an idle
 * wait keeps MemoryError (it acted on nothing; a lock it gets anyway reaches no
 * future and is unlocked), any other may already have acted (a send, a settle,
 * a receive-and-delete on the wire runs to its end): OutcomeUnknownError. */
void pl_py_aio_lost(struct pl_aio *a, uint64_t id, const char *submit_fn);

#endif

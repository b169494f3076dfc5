/*
 * failalloc.c — a failing allocator for the out-of-memory tests
 * (tests/python/test_aio_oom.py), built by the test itself: hooks Python's three
 * allocator domains (PyMem_SetAllocator) and makes one chosen allocation fail.
 *
 * arm(n): from now on, allocations made on this thread while counting is on
 * (between on() and off(), which nest) are numbered from 0, and number n
 * returns NULL, once. disarm() -> (allocations counted, whether n failed), and
 * the allocators pass everything through again. Allocations on other threads
 * (the engine's, the interpreter's helpers) are never counted nor failed: they
 * read armed, owner and target without the GIL, hence atomics. restore() puts
 * the interpreter's own allocators back (the test module's end).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>

typedef struct hook {
    PyMemAllocatorEx real;
    PyMemAllocatorDomain domain;
} hook;

static hook hooks[3];
static int installed, fired, depth;
static long counted;
/* (read by every thread that allocates, with or without the GIL) */
static _Atomic int armed;
static _Atomic long target;
static _Atomic pthread_t owner;

/* 1 when this allocation is the one to fail. */
static int fail_now(void)
{
    if (!armed || depth <= 0 || !pthread_equal(pthread_self(), owner)) return 0;
    if (counted++ != target) return 0;
    fired = 1;
    return 1;
}

static void *h_malloc(void *ctx, size_t size)
{
    hook *h = ctx;
    return fail_now() ? NULL : h->real.malloc(h->real.ctx, size);
}

static void *h_calloc(void *ctx, size_t nelem, size_t elsize)
{
    hook *h = ctx;
    return fail_now() ? NULL : h->real.calloc(h->real.ctx, nelem, elsize);
}

static void *h_realloc(void *ctx, void *ptr, size_t size)
{
    hook *h = ctx;
    return fail_now() ? NULL : h->real.realloc(h->real.ctx, ptr, size);
}

static void h_free(void *ctx, void *ptr)
{
    hook *h = ctx;
    h->real.free(h->real.ctx, ptr);
}

static void install(void)
{
    static const PyMemAllocatorDomain domains[3] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    if (installed) return;
    for (int i = 0; i < 3; i++) {
        PyMemAllocatorEx mine = {&hooks[i], h_malloc, h_calloc, h_realloc, h_free};
        hooks[i].domain = domains[i];
        PyMem_GetAllocator(domains[i], &hooks[i].real);
        PyMem_SetAllocator(domains[i], &mine);
    }
    installed = 1;
}

static PyObject *restore(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    armed = 0;
    if (installed) {
        for (int i = 0; i < 3; i++) PyMem_SetAllocator(hooks[i].domain, &hooks[i].real);
        installed = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *arm(PyObject *self, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    (void)self;
    if (n == -1 && PyErr_Occurred()) return NULL;
    install();
    owner = pthread_self();
    counted = 0;
    target = n;
    fired = 0;
    depth = 0;
    armed = 1;
    Py_RETURN_NONE;
}

static PyObject *disarm(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    armed = 0;
    return Py_BuildValue("(lO)", counted, fired ? Py_True : Py_False);
}

static PyObject *on(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    depth++;
    Py_RETURN_NONE;
}

static PyObject *off(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    depth--;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"arm", arm, METH_O, NULL},      {"disarm", disarm, METH_NOARGS, NULL},   {"on", on, METH_NOARGS, NULL},
    {"off", off, METH_NOARGS, NULL}, {"restore", restore, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "failalloc", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_failalloc(void)
{
    return PyModule_Create(&module);
}

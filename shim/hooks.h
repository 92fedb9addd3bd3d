/* Declarations generated from hooks.def. */
#ifndef EXTSAN_HOOKS_H
#define EXTSAN_HOOKS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>

enum hook_scope { PATCH_IN_EXTENSIONS, PATCH_IN_RUNTIME, PATCH_EVERYWHERE };

#define HOOK(where, ret, name, params)                                                             \
    extern ret(*real_##name) params;                                                               \
    ret extsan_##name params;
#include "hooks.def"
#undef HOOK

struct hook {
    const char *name;
    enum hook_scope scope;
    void *wrapper;
    void **real;
};

extern const struct hook hooks[];
extern const unsigned hook_count;

#endif

/*
 * The call-without-gil check: every function of the Python C API that an extension imports is
 * called through a generic wrapper (shim/call_stubs.h) whose slow path lands here when the
 * calling thread has no attached thread state. Functions the C-API documentation allows without
 * one are never wrapped (call_check_exempt); the capsule functions keep their own wrappers and
 * finding kind (capsule_check.h).
 */
#ifndef EXTSAN_CALL_CHECK_H
#define EXTSAN_CALL_CHECK_H

#include <stdbool.h>
#include <stdint.h>

/* True when `name` is a C-API function's name: Py* or _Py*. */
bool call_check_api_name(const char *name);

/*
 * True when the C API lets `name` be called without an attached thread state (the exemption
 * table in call_check.c, each entry with the documentation it rests on), or when it is not a
 * C-API function name at all (not Py* or _Py*).
 */
bool call_check_exempt(const char *name);

/*
 * `api` is being called by a thread without an attached thread state, before the call, with
 * first_argument in its first argument register: records
 * the finding (its native stack, and the Python stack of the thread's saved frames) and, the
 * first time, writes the report out, since the call may crash the process. Returns so that the
 * call goes ahead. Any thread; never takes the GIL.
 */
void call_check_without_gil(const char *api, uintptr_t first_argument);

#endif

/*
 * Reference leaks: objects that a piece of work, repeated, leaves alive in every repetition,
 * kept by references that no visible or hidden referrer explains (a missing Py_DECREF, a
 * Py_INCREF too many), on a release build of Python.
 *
 * The check brackets the repetitions of the same work (the pytest plugin's --extsan-leaks=N,
 * extsan.check_leaks around a callable):
 *
 *   leak_check_begin()   before the first repetition, a warm-up whose objects are the program's
 *                        own from then on (caches, interned strings, memos filled once)
 *   leak_check_next()    before each measured repetition
 *   leak_check_end()     after the last one
 *   leak_check_cancel()  instead of end, when a repetition failed: the work is not repeatable
 *
 * From the first measured repetition to the end, the object allocator (PYMEM_DOMAIN_OBJ) is
 * wrapped: each block it hands out is recorded with its repetition and its allocation site
 * (native and Python stacks), and forgotten when freed. At the end, after a full collection:
 *
 *   survivors   the recorded blocks still allocated whose object is proven alive (mapped, a live
 *               type, a plausible refcount, not immortal)
 *   explained   every tracked object (and every untracked container one leads to) holds, to
 *               each survivor, the larger of the references its traverse shows and the words of
 *               its memory that point there (C fields its traverse leaves out); the fields of
 *               the objects outside the collector those traverses reach (code objects,
 *               lru_cache entries), and untracked extension instances' memory, are read too
 *   leaked      a survivor with references left unexplained, that no object from before the
 *               measured repetitions refers to (so not reachable from the program's roots),
 *               whose type and allocation site have such survivors in every measured repetition
 *               (so a cache filled once is not a leak, nor is a memo: its dict explains it)
 *
 * Each leaked (type, site) becomes a reference-leak finding: the type, the objects leaked per
 * repetition, the unexplained references of an example, its allocation site.
 *
 * GIL held for every call; not reentrant.
 */
#ifndef EXTSAN_LEAK_CHECK_H
#define EXTSAN_LEAK_CHECK_H

#include <stdbool.h>

/* Starts a check; false when one is running already or Python's allocator cannot be wrapped. */
bool leak_check_begin(void);
/* The next repetition starts: the first call ends the warm-up. */
void leak_check_next(void);
/* Ends the check and records its findings; returns how many it recorded. */
unsigned leak_check_end(void);
/* Ends the check without looking for leaks (a repetition failed: the work is not repeatable). */
void leak_check_cancel(void);
/* Why the last check that ended looked for no leaks (threads its repetitions started still
   run: what they hold would look leaked), or NULL. */
const char *leak_check_skipped(void);

#endif

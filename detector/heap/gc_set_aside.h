/*
 * Setting the program's heap aside from the cyclic collector while the reference-leak check
 * repeats a piece of work, so that each collection the check makes examines only what the
 * repetitions made (a check on a 300k-object heap: 0.2 ms per collection against 98 ms).
 *
 * The collector's generations are moved onto a list of extsan's own, which no collection, no
 * gc.get_objects() and no gc.freeze()/unfreeze() walks, and moved back into the oldest
 * generation at the end (where a bare run's full collection would have left them). Unlike
 * gc.freeze() this leaves objects the program froze itself where they are (pyenv's 3.12.1
 * starts with 375). Where the generations' layout cannot be verified (a runtime whose internal
 * layout differs from this core's headers), gc.freeze() does it instead, when the program has
 * frozen nothing; otherwise nothing is set aside and the check is only slower.
 */
#ifndef EXTSAN_GC_SET_ASIDE_H
#define EXTSAN_GC_SET_ASIDE_H

#include <Python.h>
#include <stdbool.h>

/* With the GIL held, in `interpreter`'s thread: sets its heap aside. False when it could not. */
bool gc_set_aside_heap(PyInterpreterState *interpreter);

/* With the GIL held: puts back what gc_set_aside_heap set aside (nothing when it set none). */
void gc_put_heap_back(void);

#endif

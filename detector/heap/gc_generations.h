/*
 * The cyclic collector's generations, the one place extsan reaches into them (through the
 * internal headers of the Python it was built for, with the layout verified in the process).
 *
 * Setting the heap aside: while the reference-leak check repeats a piece of work, the program's
 * heap is moved off the generations onto a list of extsan's own, which no collection, no
 * gc.get_objects() and no gc.freeze()/unfreeze() walks, so that each collection the check makes
 * examines only what the repetitions made (a check on a 300k-object heap: 0.2 ms per collection
 * against 98 ms). It goes back into the oldest generation at the end, where a bare run's full
 * collection would have left it. Unlike gc.freeze() this leaves objects the program froze itself
 * where they are (pyenv's 3.12.1 starts with 375). Where the layout cannot be verified (a runtime
 * whose internal layout differs from this core's headers), gc.freeze() does it instead when the
 * program has frozen nothing; otherwise nothing is set aside and the check is only slower.
 *
 * Listing every tracked object: gc.get_objects() leaves out the permanent generation (what the
 * program froze) and what is set aside; an analysis that counts the references each object
 * holds needs them too, or every object they refer to has a reference nothing explains.
 */
#ifndef EXTSAN_GC_GENERATIONS_H
#define EXTSAN_GC_GENERATIONS_H

#include <Python.h>
#include <stdbool.h>

/* With the GIL held, in `interpreter`'s thread: sets its heap aside. False when it could not. */
bool gc_set_aside_heap(PyInterpreterState *interpreter);

/* With the GIL held: puts back what gc_set_aside_heap set aside (nothing when it set none). */
void gc_put_heap_back(void);

/*
 * With the GIL held: a new list of every object the collector tracks in the calling thread's
 * interpreter (gc.get_objects(), then those frozen or set aside), or NULL (error cleared).
 * Where the layout cannot be verified, gc.get_objects() alone.
 */
PyObject *gc_tracked_objects(void);

#endif

/*
 * The relocation patcher: points the GOT slots through which loaded objects call the hooked
 * functions at extsan's wrappers. Plain symbol interposition would not do: a statically linked
 * interpreter resolves the C API inside its own executable, ahead of any preloaded library.
 */
#ifndef EXTSAN_GOT_PATCH_H
#define EXTSAN_GOT_PATCH_H

#include "hooks.h"

#include <stdbool.h>

/*
 * Patches every loaded object except extsan's own and the dynamic loader. Idempotent and
 * serialised; run at start-up and after every dlopen. Returns the number of slots written now.
 */
unsigned got_patch_loaded_objects(void);

/*
 * Patches the objects loaded since the last patching, if any (whoever loaded them); true when
 * there were some. A look at the dynamic linker's load count when nothing is new.
 */
bool got_patch_objects_loaded_since(void);

#endif

/* What to write to fix a finding about a type, in the words of the library it was written with. */
#ifndef EXTSAN_FIX_HINTS_H
#define EXTSAN_FIX_HINTS_H

#include "findings.h"
#include "registry.h"

const char *fix_hint(enum finding_kind kind, enum binding_library binding);

/* The extra hint for a heap type whose traverse does not visit its type. */
const char *fix_hint_missing_type_visit(void);

#endif

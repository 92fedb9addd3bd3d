/*
 * extsan's public C API, for a test runner (the pytest plugin, scripts/extsan_pytest.py) that
 * reaches the core with ctypes, and the start-up step that makes the core work when it is
 * loaded into an interpreter already running instead of being preloaded.
 *
 * These are the only symbols the core exports; none starts with "Py". Call them with the GIL
 * held (ctypes.PyDLL keeps it around each call; ctypes.CDLL releases it).
 *
 *   int extsan_activate(void)
 *       1 when extsan is active in this process, 0 when it stays dormant (another Python
 *       version, a bad environment). Finishes what the constructor could not do without the
 *       GIL (below). Idempotent.
 *   void extsan_set_context(const char *test_id)
 *       Names what runs from now on (a pytest node id); NULL or "" clears it. New findings and
 *       new allocation sites carry it (detector/runtime/context.h).
 *   unsigned extsan_check_now(void)
 *       Runs the heap analysis now, recording hidden references and leaked cycles found at
 *       this point (heap_analysis_check_now: holders counted before are not counted again).
 *       Returns extsan_findings_count() after it.
 *   unsigned extsan_findings_count(void)
 *       The findings this process recorded so far (a forked child starts at 0).
 *   size_t extsan_findings_text(unsigned first, char *buffer, size_t size)
 *       The text report's blocks of the findings from the first-th on (0-based, in order of
 *       first occurrence), suppressed ones left out, written to buffer like snprintf: returns
 *       the length of the whole text, so a call with size 0 asks for it.
 *   size_t extsan_findings_json(unsigned first, char *buffer, size_t size)
 *       The same findings as a JSON array of the JSON report's findings, suppressed ones
 *       included (with "suppressed"), written to buffer as extsan_findings_text writes.
 *   int extsan_match_rules(unsigned index, const char *source, const char *rules,
 *                          char *error, size_t error_size)
 *       Whether one of rules (lines of a suppressions file, each holding a rule; source names
 *       them in messages) matches the index-th finding as a suppression would: the line of the
 *       first that does (from 1), 0 when none does or there is no such finding (an index past
 *       the last only checks the rules), -1 for a malformed or empty line, with one line in
 *       error ("SOURCE:LINE: WHAT IS WRONG").
 */
#ifndef EXTSAN_ACTIVATE_H
#define EXTSAN_ACTIVATE_H

/*
 * The core's constructor started extsan (lifecycle_start succeeded). When the interpreter is
 * already running and this thread holds the GIL (the core was loaded by ctypes.PyDLL), it also
 * does what preloading would have done by now: arms the exit analysis, and registers and
 * instruments the extension types created earlier (registry_walk_types).
 */
void activate_after_start(void);

#endif

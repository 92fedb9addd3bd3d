/*
 * The call sites a run has described already, shared by its processes: symbolisation (libdwfl
 * loading an object's symbols and DWARF, tens of milliseconds for libpython or numpy) is then
 * paid once per distinct frame across a run, not once per process that reports it. A run is
 * the processes that write into one log_dir (`extsan run`, the pytest plugin with xdist
 * workers); without log_dir each process keeps only its own lookups.
 *
 * The cache is the file log_dir/extsan-symbols.tsv, appended to by each process with one write
 * per call site (O_APPEND: whole lines, never interleaved), and read by each process from where
 * it last stopped when a lookup misses. One line per call site, tab-separated:
 *
 *     module  size  mtime_ns  offset(hex)  function  file  line
 *
 * keyed by the object's path, size and modification time (a rebuilt object is another object)
 * and the return address's offset in it. A line that does not parse (a process killed in the
 * middle of its write) is skipped: the cache only saves work, it decides nothing. The file must
 * be a regular file of this user's, as the reports in log_dir are.
 *
 * Called with the symboliser's lock held (symbolize.c).
 */
#ifndef EXTSAN_SYMBOL_CACHE_H
#define EXTSAN_SYMBOL_CACHE_H

#include "symbolize.h"

#include <stdbool.h>

/* Fills function, file and line of `frame` (module and module_offset set) from the cache. */
bool symbol_cache_find(struct frame_info *frame);
/* Records what symbolisation found for `frame`. */
void symbol_cache_add(const struct frame_info *frame);
/* In a forked child: the cache file is shared, the counts are the child's own. */
void symbol_cache_reset_counts(void);
/* "N call sites from the run's cache, M described", for the verbose log. */
void symbol_cache_log_counts(void);

#endif

/* extsan's own messages on stderr, each one line starting with "extsan: ". */
#ifndef EXTSAN_LOG_H
#define EXTSAN_LOG_H

/* Printed when the verbosity option is at least `level`; level 0 always prints. */
void extsan_log(int level, const char *format, ...) __attribute__((format(printf, 2, 3)));

#endif

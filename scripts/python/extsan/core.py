"""The extsan core in this process, reached with ctypes: the C API of shim/activate.c, used by
the pytest plugin and by check_leaks() (leaks.py)."""

import ctypes
import json
import os
import sys

CORE_NAME = "libextsan-py%d.%d.so" % sys.version_info[:2]


def loaded_core():
    """The path of the extsan core already in this process (preloaded), or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)  # address perms offset dev inode [path]
                if len(fields) == 6 and os.path.basename(fields[5].strip()) == CORE_NAME:
                    return fields[5].strip()
    except OSError:
        pass
    return None



class LeakCheckUnavailable(RuntimeError):
    """The process has no extsan core (not started under `extsan run` or its preload), or a
    check is running already."""


class Core:
    """The core reached with ctypes: PyDLL, so that the GIL stays held around every call."""

    def __init__(self, path):
        self.path = path
        lib = ctypes.PyDLL(path)
        lib.extsan_activate.restype = ctypes.c_int
        lib.extsan_activate.argtypes = []
        lib.extsan_set_context.restype = None
        lib.extsan_set_context.argtypes = [ctypes.c_char_p]
        lib.extsan_check_now.restype = ctypes.c_uint
        lib.extsan_check_now.argtypes = []
        lib.extsan_findings_count.restype = ctypes.c_uint
        lib.extsan_findings_count.argtypes = []
        lib.extsan_findings_text.restype = ctypes.c_size_t
        lib.extsan_findings_text.argtypes = [ctypes.c_uint, ctypes.c_char_p, ctypes.c_size_t]
        lib.extsan_findings_json.restype = ctypes.c_size_t
        lib.extsan_findings_json.argtypes = [ctypes.c_uint, ctypes.c_char_p, ctypes.c_size_t]
        lib.extsan_leaks_begin.restype = ctypes.c_int
        lib.extsan_leaks_begin.argtypes = []
        lib.extsan_leaks_next.restype = None
        lib.extsan_leaks_next.argtypes = []
        lib.extsan_leaks_end.restype = ctypes.c_uint
        lib.extsan_leaks_end.argtypes = []
        lib.extsan_leaks_cancel.restype = None
        lib.extsan_leaks_cancel.argtypes = []
        lib.extsan_leaks_skipped.restype = ctypes.c_char_p
        lib.extsan_leaks_skipped.argtypes = []
        lib.extsan_match_rules.restype = ctypes.c_int
        lib.extsan_match_rules.argtypes = [ctypes.c_uint, ctypes.c_char_p, ctypes.c_char_p,
                                           ctypes.c_char_p, ctypes.c_size_t]
        self.lib = lib

    def activate(self):
        return bool(self.lib.extsan_activate())

    def set_context(self, name):
        self.lib.extsan_set_context(name.encode("utf-8", "surrogateescape") if name else None)

    def findings_count(self):
        return self.lib.extsan_findings_count()

    def check_now(self):
        return self.lib.extsan_check_now()

    def findings_json(self, first):
        """The findings from the first-th on, as the JSON report's findings."""
        size = self.lib.extsan_findings_json(first, None, 0)
        if not size:
            return []
        buffer = ctypes.create_string_buffer(size + 1)
        self.lib.extsan_findings_json(first, buffer, size + 1)
        return json.loads(buffer.value.decode("utf-8", "surrogateescape"))

    def match_rules(self, index, source, rules):
        """The first of rules ('kind:pattern' strings, the suppressions file's syntax) that
        matches the index-th finding, as the runtime matches a suppression, or None; a malformed
        rule is a ValueError naming source and its number. An index past the findings only
        checks the rules."""
        if not rules:
            return None
        error = ctypes.create_string_buffer(1024)
        found = self.lib.extsan_match_rules(
            index, source.encode("utf-8", "surrogateescape"),
            "\n".join(rules).encode("utf-8", "surrogateescape"), error, len(error))
        if found < 0:
            raise ValueError(error.value.decode("utf-8", "replace"))
        return rules[found - 1] if found else None

    def check_repetitions(self, repeat, repetition):
        """The reference-leak check around repetition(1) .. repetition(repeat), after the
        warm-up the caller ran: None when it looked for leaks (its findings are the core's),
        else why it did not. A repetition returns why it did not pass, or None: one that did not
        pass ends the check (the work is not repeatable), and so does an exception, which
        propagates. LeakCheckUnavailable when a check runs already."""
        if not self.leaks_begin():
            raise LeakCheckUnavailable("a reference-leak check is running already, or the core "
                                       "is dormant in this process")
        try:
            for index in range(1, repeat + 1):
                self.leaks_next()
                failure = repetition(index)
                if failure:
                    self.leaks_cancel()
                    return "repetition %d of %d: %s" % (index, repeat, failure)
        except BaseException:
            self.leaks_cancel()
            raise
        self.leaks_end()
        return self.leaks_skipped()

    def leaks_begin(self):
        """Starts a reference-leak check (leak_check.h): the calls that follow until
        leaks_next() are the warm-up. False when one is running already."""
        return bool(self.lib.extsan_leaks_begin())

    def leaks_next(self):
        """A measured repetition starts."""
        self.lib.extsan_leaks_next()

    def leaks_end(self):
        """Ends the check; the number of reference-leak findings it recorded."""
        return self.lib.extsan_leaks_end()

    def leaks_cancel(self):
        """Ends the check without looking for leaks (a repetition failed)."""
        self.lib.extsan_leaks_cancel()

    def leaks_skipped(self):
        """Why the check that ended last looked for no leaks, or None."""
        reason = self.lib.extsan_leaks_skipped()
        return reason.decode() if reason else None

    def findings_text(self, first):
        size = self.lib.extsan_findings_text(first, None, 0)
        if not size:
            return ""
        buffer = ctypes.create_string_buffer(size + 1)
        self.lib.extsan_findings_text(first, buffer, size + 1)
        return buffer.value.decode("utf-8", "replace")

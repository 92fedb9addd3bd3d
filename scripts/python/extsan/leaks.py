"""check_leaks(): the reference-leak check around a callable, outside pytest.

    import extsan.leaks
    findings = extsan.leaks.check_leaks(lambda: mymodule.parse(b"..."), repeat=3)

calls the callable repeat + 1 times (the first a warm-up, whose objects count as the program's;
an exception from any call ends the check without findings and propagates) in a process extsan checks (under `extsan run`, or with the core preloaded) and returns the
reference-leak findings it made, as the JSON report's findings: each names the type of the
objects leaked per repetition, the references nothing explains, and where an example was
allocated (native and Python stacks). They are in the process's reports too. See leak_check.h
for what counts as a leak, and the README for the cost.
"""

import warnings

from .core import Core, loaded_core


class LeakCheckUnavailable(RuntimeError):
    """The process has no extsan core (not started under `extsan run` or its preload), or a
    check is running already."""


_core = None


def core():
    """The core preloaded in this process, reached once."""
    global _core
    if _core is None:
        path = loaded_core()
        if path is None:
            raise LeakCheckUnavailable("extsan is not loaded in this process: run it under "
                                       "`extsan run` (or LD_PRELOAD=libextsan.so)")
        _core = Core(path)
        _core.activate()
    return _core


def check_leaks(function, repeat=3):
    """Runs function() repeat + 1 times under the reference-leak check; returns its findings."""
    if repeat < 2:
        raise ValueError("repeat must be at least 2 (one repetition cannot show growth), not %r"
                         % (repeat,))
    checker = core()
    first = checker.findings_count()
    function()  # the warm-up
    if not checker.leaks_begin():
        raise LeakCheckUnavailable("a reference-leak check is running already, or the core is "
                                   "dormant in this process")
    try:
        for _ in range(repeat):
            checker.leaks_next()
            function()
    except BaseException:
        checker.leaks_cancel()  # the work is not repeatable: nothing to conclude
        raise
    checker.leaks_end()
    skipped = checker.leaks_skipped()
    if skipped:
        warnings.warn("extsan: the reference-leak check looked for no leaks: " + skipped,
                      RuntimeWarning, stacklevel=2)
    return [f for f in checker.findings_json(first) if f.get("kind") == "reference-leak"]

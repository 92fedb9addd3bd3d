"""check_leaks(): the reference-leak check around a callable, outside pytest.

    import extsan.leaks
    findings = extsan.leaks.check_leaks(lambda: mymodule.parse(b"..."), repeat=3)

calls the callable repeat + 1 times (the first a warm-up, whose objects count as the program's;
an exception from any call ends the check without findings and propagates) in a process extsan
checks (under `extsan run`, or with the core preloaded) and returns the reference-leak findings
it made, as the JSON report's findings: each names the type of the objects leaked per
repetition, the references nothing explains, and where an example was allocated (native and
Python stacks). They are in the process's reports too. See leak_check.h for what counts as a
leak, and the README for the cost.
"""

import warnings

from .core import Core, LeakCheckUnavailable, loaded_core


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

    def repetition(index):
        function()  # its result is not a reason to stop: only an exception is

    skipped = checker.check_repetitions(repeat, repetition)
    if skipped:
        warnings.warn("extsan: the reference-leak check looked for no leaks: " + skipped,
                      RuntimeWarning, stacklevel=2)
    return [f for f in checker.findings_json(first) if f.get("kind") == "reference-leak"]

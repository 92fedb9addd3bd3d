"""extsan's pytest plugin: names the test behind each finding, and can fail the test that leaks.

Installed (`pip install extsan`), pytest loads it through its pytest11 entry point (it shows
as `extsan-<version>` on pytest's `plugins:` line) and it checks a run when asked, or when the
run is under `extsan run` already (the core preloaded: the plugin then names the tests):

    pytest --extsan ...                          # or, in the project's pytest configuration:
    extsan = true                                # (ini; `--no-extsan` then turns it off per run)

From a checkout, `-p extsan_pytest` with scripts/ on PYTHONPATH loads it (scripts/extsan_pytest.py
sets ON_BY_DEFAULT): loading it that way turns extsan on for the run, unless ini
`extsan = false` or `--no-extsan`. What it does:

- When the process was not started under extsan's preload (`extsan run`), it loads the core
  built for this Python (libextsan-py3.X.so in the installed package's lib/, or in a checkout's
  build/, built first if missing) into the running interpreter with ctypes.PyDLL, which patches
  the extensions loaded so far, arms the exit analysis and finds the extension types created so
  far. It also puts libextsan.so beside it in LD_PRELOAD for the processes the run starts
  (pytest-xdist workers, subprocesses, multiprocessing), which are then checked from their start,
  as under `extsan run`. A
  malformed EXTSAN_OPTIONS is a usage error of pytest (status 4) rather than the core's 125.
- Around each test it tells the core which test runs (extsan_set_context(nodeid)): every finding
  names the test that made the GIL-less call, or that allocated the instance holding the hidden
  reference, in the text report ("in test ...") and in the JSON report ("test").
- With --extsan-check-each-test (or ini `extsan_check_each_test = true`), after each test's
  teardown it runs the heap analysis (extsan_check_now) and makes the test ERROR at teardown
  when findings appeared during it, with their text report as the message, so the failing test
  is the one that leaked (and the session's exit status says so). A finding fails only the first
  test that produces it; later occurrences are counted in the exit report. And it fails only
  the test it names: one about an instance allocated outside any test (while collection
  imported the modules; one more analysis runs just before the first test to find those) or
  by an earlier test fails none, and is listed in the terminal summary.

The core's C API (shim/activate.h): extsan_activate, extsan_set_context, extsan_check_now,
extsan_findings_count, extsan_findings_text. Standard library and pytest only.
"""

import ctypes
import os
import re
import subprocess
import sys

import pytest

from . import layout

CORE_NAME = "libextsan-py%d.%d.so" % sys.version_info[:2]

# Whether loading the plugin checks the run when neither the command line nor the ini says:
# no when pytest loads it by its entry point (every run of an environment extsan is installed
# in), yes when the run names it (-p extsan_pytest, from a checkout).
ON_BY_DEFAULT = False


def build_dir():
    """Where the shim and the cores are: $EXTSAN_BUILD_DIR, else the installed package's lib/ or
    the checkout's build/."""
    return os.environ.get("EXTSAN_BUILD_DIR") or layout.LIB_DIR


def checkout_build_dir():
    """The build/ that `extsan build` fills: only a checkout's, never an installed package's."""
    return None if layout.INSTALLED or layout.CHECKOUT is None else os.path.join(layout.CHECKOUT, "build")


def pytest_addoption(parser):
    group = parser.getgroup("extsan", "extsan (sanitizer for extension modules)")
    group.addoption("--extsan", action="store_true", dest="extsan", default=None,
                    help="check this run with extsan (the default once the plugin is loaded, "
                         "unless ini extsan = false)")
    group.addoption("--no-extsan", action="store_false", dest="extsan",
                    help="do not check this run with extsan, although the plugin is loaded")
    group.addoption("--extsan-check-each-test", action="store_true", default=None,
                    dest="extsan_check_each_test",
                    help="after each test, look for leaked cycles and make the test error at "
                         "teardown when it produced findings")
    parser.addini("extsan", type="bool", default=None,
                  help="whether to check the run with extsan (default: false when installed, "
                       "true when loaded with -p extsan_pytest)")
    parser.addini("extsan_check_each_test", type="bool", default=False,
                  help="the default of --extsan-check-each-test")


# ---- the core --------------------------------------------------------------------------------


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


def ensure_core():
    """build/libextsan-py3.X.so for this Python, running `extsan build` when it is missing."""
    core = os.path.join(build_dir(), CORE_NAME)
    if os.path.exists(core):
        return core
    checkout = checkout_build_dir()
    if checkout is None or os.path.realpath(build_dir()) != os.path.realpath(checkout):
        why = "EXTSAN_BUILD_DIR" if os.environ.get("EXTSAN_BUILD_DIR") else \
            "extsan was installed for another Python: install it into this one's environment"
        raise pytest.UsageError("extsan: no core for Python %d.%d in %s (%s)"
                                % (sys.version_info[:2] + (build_dir(), why)))
    command = [sys.executable, os.path.join(layout.CHECKOUT, "scripts", "extsan"), "build"]
    sys.stderr.write("extsan: building the shim for Python %d.%d (first use)...\n" % sys.version_info[:2])
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not os.path.exists(core):
        raise pytest.UsageError("extsan: no core for Python %d.%d: `%s` %s\n%s\n"
                                "HINT: scripts/extsan build --python %s"
                                % (sys.version_info[:2] + (" ".join(command),
                                   "failed" if result.returncode else "did not build it",
                                   result.stdout[-2000:], sys.executable)))
    return core


def check_options():
    """A malformed EXTSAN_OPTIONS would stop the process at the core's start (status 125):
    check it first with the options tool, and make it a usage error of pytest instead."""
    text = os.environ.get("EXTSAN_OPTIONS", "")
    tool = os.path.join(build_dir(), "extsan-options")
    if not text or not os.access(tool, os.X_OK):
        return
    result = subprocess.run([tool, "check", text], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        complaint = re.sub(r"^(extsan: )?(EXTSAN_OPTIONS: )?", "", lines[0] if lines else "rejected")
        raise pytest.UsageError("extsan: invalid EXTSAN_OPTIONS %r: %s" % (text, complaint))


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
        self.lib = lib

    def activate(self):
        return bool(self.lib.extsan_activate())

    def set_context(self, name):
        self.lib.extsan_set_context(name.encode("utf-8", "surrogateescape") if name else None)

    def findings_count(self):
        return self.lib.extsan_findings_count()

    def check_now(self):
        return self.lib.extsan_check_now()

    def findings_text(self, first):
        size = self.lib.extsan_findings_text(first, None, 0)
        if not size:
            return ""
        buffer = ctypes.create_string_buffer(size + 1)
        self.lib.extsan_findings_text(first, buffer, size + 1)
        return buffer.value.decode("utf-8", "replace")


def preload_children():
    """Puts the shim in LD_PRELOAD for the processes this one starts from now on."""
    shim = os.path.join(build_dir(), "libextsan.so")
    if not os.path.exists(shim) or re.search(r"[\s:]", shim):
        return
    entries = [e for e in re.split(r"[\s:]+", os.environ.get("LD_PRELOAD", "")) if e and e != shim]
    os.environ["LD_PRELOAD"] = ":".join([shim] + entries)


# ---- the plugin ------------------------------------------------------------------------------


# A finding's block in the text report starts with its headline, "==PID==extsan: KIND: ...", and
# names its test on a line of its own (report_text.c).
HEADLINE = re.compile(r"==\d+==extsan: [a-z-]+: ")
NAMED_TEST = re.compile(r"==\d+==extsan:   in test (.*)$")


def finding_blocks(text):
    """The text report of findings, split into (test named or None, block text)."""
    blocks = []
    for line in text.splitlines(keepends=True):
        if HEADLINE.match(line) or not blocks:
            blocks.append([None, line])
            continue
        named = NAMED_TEST.match(line)
        if named and blocks[-1][0] is None:
            blocks[-1][0] = named.group(1)
        blocks[-1][1] += line
    return [(test, block) for test, block in blocks if HEADLINE.match(block)]


class ExtsanPlugin:
    """Per process: the core, how it got here, and the findings count when each test began."""

    def __init__(self, core, mode, check_each_test):
        self.core = core
        self.mode = mode  # "preloaded" or "in-process"
        self.check_each_test = check_each_test
        self.first = {}  # nodeid -> findings count before the test
        self.checked_before_tests = False
        # Findings that failed no test, for the terminal summary: [(when found, blocks)].
        self.unblamed = []

    def check_before_first_test(self):
        """The analysis once before any test runs: what exists then (the objects collection made
        while importing the test modules and conftests) is found by it, rather than by the
        first test's check, and listed apart. Such findings name no test."""
        self.checked_before_tests = True
        self.core.check_now()
        blocks = finding_blocks(self.core.findings_text(0))
        if blocks:
            self.unblamed.append(("before the first test (collection)", blocks))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if self.check_each_test and not self.checked_before_tests:
            self.check_before_first_test()
        self.core.set_context(item.nodeid)
        self.first[item.nodeid] = self.core.findings_count()
        try:
            return (yield)
        finally:
            self.first.pop(item.nodeid, None)
            self.core.set_context(None)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        result = yield
        first = self.first.get(item.nodeid)
        if not self.check_each_test or first is None or self.core.check_now() <= first:
            return result
        # A finding fails the test it names: the one that made the GIL-less call or allocated
        # the instance the finding is about. The check after a test also finds what the test
        # did not make: a cycle made at import or by an earlier test (a wider-scoped fixture)
        # that became garbage during this one. That is listed in the summary and fails no test:
        # the test it names has already passed, or there is none.
        blocks = finding_blocks(self.core.findings_text(first))
        own = [block for test, block in blocks if test == item.nodeid]
        others = [(test, block) for test, block in blocks if test != item.nodeid]
        if others:
            self.unblamed.append(("after " + item.nodeid, others))
        if own:
            pytest.fail("extsan: findings during %s (--extsan-check-each-test):\n\n%s"
                        % (item.nodeid, "".join(own).rstrip()), pytrace=False)
        return result

    def pytest_terminal_summary(self, terminalreporter):
        if not self.unblamed:
            return
        # Headlines only: the stacks are in extsan's report.
        terminalreporter.write_sep("=", "extsan: findings that fail no test")
        for when, blocks in self.unblamed:
            terminalreporter.write_line("found %s:" % when)
            for test, block in blocks:
                for line in block.splitlines():
                    if line.startswith("=="):
                        terminalreporter.write_line(line)
                if test is None:
                    terminalreporter.write_line("  (made by no test)")

    def pytest_report_header(self, config):
        if config.option.verbose > 0:
            return "extsan: %s (%s)%s" % (self.mode, self.core.path,
                                          ", checking after each test" if self.check_each_test else "")
        return None


def option(config, name):
    """An option's value, also before the command line is fully parsed (initial conftests)."""
    early = getattr(config, "known_args_namespace", None)
    value = getattr(early, name, None) if early is not None else None
    return value if value is not None else config.getoption(name, None)


def wanted(config):
    value = option(config, "extsan")
    if value is None:
        value = config.getini("extsan")
    if value is not None:
        return value
    # Under `extsan run` the core is there already: the plugin only names the tests.
    return ON_BY_DEFAULT or loaded_core() is not None


def start(config):
    """Activates extsan in this process once (the first hook that can), per `wanted`."""
    if config.pluginmanager.has_plugin("extsan-session") or not wanted(config):
        return
    core_path = loaded_core()
    mode = "preloaded" if core_path else "in-process"
    if core_path is None:
        core_path = ensure_core()
        check_options()
    try:
        core = Core(core_path)
    except OSError as e:
        raise pytest.UsageError("extsan: cannot load %s: %s" % (core_path, e))
    if not core.activate():
        raise pytest.UsageError("extsan: the core %s stays dormant in this process (run with "
                                "EXTSAN_OPTIONS=verbosity=1 to see why)" % core_path)
    if mode == "in-process":
        preload_children()
    check = option(config, "extsan_check_each_test")
    if check is None:
        check = config.getini("extsan_check_each_test")
    config.pluginmanager.register(ExtsanPlugin(core, mode, bool(check)), "extsan-session")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # Before the conftest files are imported: the extensions they import are patched when
    # they load rather than after.
    start(early_config)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # The plugin was registered too late for pytest_load_initial_conftests (pytest_plugins).
    start(config)

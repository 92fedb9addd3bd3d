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
  by an earlier test fails none, and is marked so in the terminal summary.
- At the end of the session it runs the analysis once more (what the exit analysis would find
  later, found now) and lists every finding not suppressed in pytest's terminal summary, one
  line each: kind, subject, test, first extension frame; pytest-xdist workers send theirs to
  the controller, which lists them all.
- With --extsan-fail (or ini `extsan_fail = true`) a finding that is not suppressed (the runtime
  option `suppressions`), baselined (--extsan-baseline FILE, ini `extsan_baseline`: a file of
  `extsan gate --update-baseline`) or accepted by its test's marker fails the run: exit status
  1, said in the summary and in pytest's last line.
- Markers: `@pytest.mark.extsan(allow=["hidden-reference:mymod.*"])` accepts the findings of
  that test that a `kind:pattern` rule (the suppressions file's syntax) matches;
  `@pytest.mark.extsan(check=False)` accepts every finding of the test, and skips the check
  after it under --extsan-check-each-test; `@pytest.mark.extsan(leaks=N)` runs the test under
  the reference-leak check as --extsan-leaks=N would (leaks=0: not).
- With --extsan-leaks=N the test runs N + 1 times (the first a warm-up, the fixtures the same,
  a unittest TestCase's test with its setUp and tearDown) under the reference-leak check
  (extsan_leaks_begin/next/end, leak_check.h), and a test whose repetitions leak objects fails
  with the reference-leak findings as its message. A test whose repetition does not pass (it
  cannot be repeated: state its module set up once) is not checked: its outcome stays its first
  run's, and the summary lists it with the repetition's error.

The core's C API (shim/activate.h): extsan_activate, extsan_set_context, extsan_check_now,
extsan_findings_count, extsan_findings_text, extsan_findings_json, extsan_leaks_*. The package's
report tools
(fingerprints, baselines, the rule syntax), the standard library and pytest.
"""

import os
import re
import subprocess
import sys

import pytest

from . import layout
from .baseline import load_baseline
from .common import Failure
from .core import CORE_NAME, Core, LeakCheckUnavailable, loaded_core
from .findings import finding_line
from .fingerprint import fingerprint


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
    group.addoption("--extsan-fail", action="store_true", default=None, dest="extsan_fail",
                    help="fail the run (exit status 1) when a finding is not suppressed, "
                         "baselined or accepted by its test's extsan marker")
    group.addoption("--extsan-baseline", metavar="FILE", default=None, dest="extsan_baseline",
                    help="findings whose fingerprint FILE lists (written by `extsan gate "
                         "--update-baseline`) do not fail the run")
    group.addoption("--extsan-leaks", metavar="N", type=int, default=None, dest="extsan_leaks",
                    help="run each test N + 1 times (the first a warm-up; N at least 2) under "
                         "the reference-leak check, and fail a test whose repetitions leak "
                         "objects")
    parser.addini("extsan_check_each_test", type="bool", default=False,
                  help="the default of --extsan-check-each-test")
    parser.addini("extsan_fail", type="bool", default=False, help="the default of --extsan-fail")
    parser.addini("extsan_baseline", default="",
                  help="the default of --extsan-baseline (relative to the ini file)")


# ---- the core --------------------------------------------------------------------------------


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


def finding_blocks(text):
    """The text report of findings, split into one block per finding."""
    blocks = []
    for line in text.splitlines(keepends=True):
        if HEADLINE.match(line) or not blocks:
            blocks.append(line)
        else:
            blocks[-1] += line
    return [block for block in blocks if HEADLINE.match(block)]


MARKER_HELP = ("extsan(allow=['kind:pattern', ...], check=True, leaks=N): findings of this test "
               "that a rule matches (the suppressions file's syntax) do not fail the run; "
               "check=False: none do; leaks=N: run it N + 1 times under the reference-leak check")


class MarkerRules:
    """What a test's extsan markers accept of its findings: allow, its rules as written (each a
    line of the suppressions file's syntax, checked and matched by the core)."""

    # Past any finding: extsan_match_rules then only checks the rules.
    CHECK_ONLY = 2**32 - 1

    def __init__(self, item, core):
        self.check = None
        self.allow = []
        self.leaks = None  # repetitions of the reference-leak check; None: the command line's
        for marker in item.iter_markers("extsan"):  # the closest first: its check= wins
            unknown = sorted(set(marker.kwargs) - {"allow", "check", "leaks"})
            if marker.args or unknown:
                raise ValueError("takes only allow=, check= and leaks= (got %s)"
                                 % ", ".join([repr(a) for a in marker.args] + unknown))
            if "check" in marker.kwargs and self.check is None:
                self.check = bool(marker.kwargs["check"])
            if "leaks" in marker.kwargs and self.leaks is None:
                self.leaks = marker.kwargs["leaks"]
                if not isinstance(self.leaks, int) or isinstance(self.leaks, bool) or \
                        self.leaks < 0 or self.leaks == 1:
                    raise ValueError("leaks: %r is not 0 (off) or a number of repetitions of 2 "
                                     "or more (one cannot show growth)" % (self.leaks,))
            allow = marker.kwargs.get("allow", ())
            for rule in [allow] if isinstance(allow, str) else allow:
                if not isinstance(rule, str) or "\n" in rule:
                    raise ValueError("allow: %r is not a 'kind:pattern' string" % (rule,))
                self.allow.append(rule)
        core.match_rules(self.CHECK_ONLY, "allow", self.allow)
        self.check = self.check is not False


class StatsEntry:
    """A finding that fails the run, among the terminal reporter's reports (its stats), whose
    attributes other plugins read (hypothesis reads every report's __dict__)."""

    count_towards_summary = True
    when = "extsan"
    nodeid = ""

    def __init__(self, line):
        self.longrepr = line


def repeat_once(item):
    """Runs the test once more: why it did not pass, or None. A unittest TestCase records its
    failure or skip instead of raising it: what the repetition recorded is taken back, so that
    the test's outcome stays its first run's."""
    try:
        item.runtest()
    except (KeyboardInterrupt, SystemExit, pytest.exit.Exception):
        raise
    except BaseException as error:  # a failure, an error, a skip or an xfail of the repetition
        return describe_error(error)
    recorded = item.__dict__.pop("_excinfo", None)
    return describe_error(recorded[0].value) if recorded else None


def describe_error(error):
    text = str(error).strip().splitlines()
    return type(error).__name__ + (": " + text[0] if text else "")


class ExtsanPlugin:
    """Per process: the core, how it got here, the findings count when each test began, and what
    the session's findings are (accepted or not)."""

    def __init__(self, core, mode, check_each_test, fail, baseline, leaks=0):
        self.core = core
        self.leaks = leaks  # --extsan-leaks: measured repetitions of each test, 0: no check
        self.mode = mode  # "preloaded" or "in-process"
        self.check_each_test = check_each_test
        self.fail = fail
        self.baseline = baseline  # {fingerprint: entry}
        self.first = {}  # nodeid -> findings count before the test
        self.marks = {}  # nodeid -> MarkerRules of the tests run here
        self.checked_before_tests = False
        # Findings that failed no test under --extsan-check-each-test: index -> when found.
        self.unblamed = {}
        # The summary's entries: this process's at the session's end, and the workers'.
        self.entries = []
        # Tests the reference-leak check could not check: "nodeid: why" (a repetition that did
        # not pass, threads left running).
        self.unchecked = []

    # -- classifying ---------------------------------------------------------------------------

    def status(self, index, finding):
        """(status, why) of the index-th finding: suppressed, unchecked, allowed, baselined or
        new. Only a new one fails the run (--extsan-fail) or its test (--extsan-check-each-test)."""
        if finding.get("suppressed"):
            return "suppressed", "suppressed by " + finding["suppressed"]
        marks = self.marks.get(finding.get("test"))
        if marks is not None and not marks.check:
            return "unchecked", "its test is marked check=False"
        rule = self.core.match_rules(index, "allow", marks.allow) if marks is not None else None
        if rule is not None:
            return "allowed", "allowed by its test's marker: " + rule.strip()
        if fingerprint(finding) in self.baseline:
            return "baselined", "baselined"
        return "new", None

    def entry(self, index, finding):
        """What the summary shows of a finding (sent as is by a pytest-xdist worker)."""
        status, why = self.status(index, finding)
        notes = [why] if why else []
        if index in self.unblamed:
            notes.append("fails no test: found %s" % self.unblamed[index])
        line = finding_line(finding, test=True)
        return {"line": line + ("  [%s]" % "; ".join(notes) if notes else ""), "status": status}

    def findings_since(self, first):
        """(index, finding, its text) of the findings from the first-th on: the text report's
        block, which has one per finding not suppressed in the same order, or its one line."""
        blocks = iter(finding_blocks(self.core.findings_text(first)))
        for index, finding in enumerate(self.core.findings_json(first), first):
            block = next(blocks, "") if not finding.get("suppressed") else ""
            yield index, finding, block or finding_line(finding, test=True) + "\n"

    # -- the tests ------------------------------------------------------------------------------

    def check_before_first_test(self):
        """The analysis once before any test runs: what exists then (the objects collection made
        while importing the test modules and conftests) is found by it, rather than by the
        first test's check, and marked apart. Such findings name no test."""
        self.checked_before_tests = True
        for index in range(self.core.check_now()):
            self.unblamed[index] = "before the first test (collection)"

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

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        try:
            self.marks[item.nodeid] = MarkerRules(item, self.core)
        except ValueError as e:
            pytest.fail("extsan marker of %s: %s" % (item.nodeid, e), pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        """--extsan-leaks=N (or the marker's leaks=N): the test runs N + 1 times under the
        reference-leak check, the first a warm-up, with the same fixtures (a unittest TestCase's
        test with its setUp and tearDown); a test whose repetitions leak fails, with the findings
        as its message. A test whose repetition does not pass cannot be repeated: it is not
        checked, and is listed in the summary; its outcome stays its first run's."""
        marks = self.marks.get(item.nodeid)
        repeat = marks.leaks if marks is not None and marks.leaks is not None else self.leaks
        if not repeat:
            return (yield)
        first = self.core.findings_count()
        result = yield  # the warm-up: pytest's own run of the test
        # A unittest TestCase records its failure or skip instead of raising it: a warm-up
        # that did not pass has nothing to repeat.
        if getattr(item, "_excinfo", None):
            return result
        try:
            unchecked = self.core.check_repetitions(repeat, lambda index: repeat_once(item))
        except LeakCheckUnavailable:
            return result
        if unchecked:
            self.unchecked.append("%s: %s" % (item.nodeid, unchecked))
            return result
        failing = [block for index, finding, block in self.findings_since(first)
                   if finding.get("kind") == "reference-leak"
                   and self.status(index, finding)[0] == "new"]
        if failing:
            pytest.fail("extsan: reference leaks in %s (%d repetitions after a warm-up):\n\n%s"
                        % (item.nodeid, repeat, "".join(failing).rstrip()), pytrace=False)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        result = yield
        first = self.first.get(item.nodeid)
        marks = self.marks.get(item.nodeid)
        if not self.check_each_test or first is None or (marks is not None and not marks.check):
            return result
        if self.core.check_now() <= first:
            return result
        # A finding fails the test it names: the one that made the GIL-less call or allocated
        # the instance the finding is about. The check after a test also finds what the test
        # did not make: a cycle made at import or by an earlier test (a wider-scoped fixture)
        # that became garbage during this one. That is marked in the summary and fails no test:
        # the test it names has already passed, or there is none.
        failing = []
        for index, finding, block in self.findings_since(first):
            if finding.get("test") != item.nodeid:
                self.unblamed[index] = "after " + item.nodeid
            elif self.status(index, finding)[0] == "new":
                failing.append(block)
        if failing:
            pytest.fail("extsan: findings during %s (--extsan-check-each-test):\n\n%s"
                        % (item.nodeid, "".join(failing).rstrip()), pytrace=False)
        return result

    # -- the session's end ------------------------------------------------------------------------

    def pytest_sessionfinish(self, session):
        # The analysis the process's exit runs later, now: its findings are listed before
        # pytest's last line, and can fail the run.
        self.core.check_now()
        entries = [self.entry(index, finding)
                   for index, finding in enumerate(self.core.findings_json(0))
                   if not finding.get("suppressed")]
        # A pytest-xdist worker (xdist sets workeroutput after the plugin started): the
        # controller reports.
        if hasattr(session.config, "workeroutput"):
            session.config.workeroutput["extsan_entries"] = entries
            session.config.workeroutput["extsan_unchecked"] = self.unchecked
            return
        self.entries = entries + self.entries
        if self.fail and self.failing() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """pytest-xdist: a worker ended; its findings join the summary."""
        output = getattr(node, "workeroutput", {})
        self.entries.extend(output.get("extsan_entries", ()))
        self.unchecked.extend(output.get("extsan_unchecked", ()))

    def failing(self):
        return [entry for entry in self.entries if entry["status"] == "new"]

    def pytest_terminal_summary(self, terminalreporter):
        if self.unchecked:
            count = len(self.unchecked)
            terminalreporter.write_sep("=", "extsan: %d test%s not checked for reference leaks"
                                       % (count, "" if count == 1 else "s"))
            for line in self.unchecked:
                terminalreporter.write_line(line)
        if not self.entries:
            return
        count = len(self.entries)
        terminalreporter.write_sep("=", "extsan: %d finding%s" % (count, "" if count == 1 else "s"))
        for entry in self.entries:
            terminalreporter.write_line(entry["line"])
        failing = len(self.failing())
        if not self.fail or not failing:
            return
        terminalreporter.write_line(
            "extsan: %d finding%s not suppressed, baselined or allowed: the run fails (--extsan-fail)"
            % (failing, "" if failing == 1 else "s"), red=True, bold=True)
        # pytest's last line counts them too ("4 passed, 1 extsan finding in 0.5s").
        key = "extsan finding" if failing == 1 else "extsan findings"
        terminalreporter.stats.setdefault(key, []).extend(StatsEntry(e["line"]) for e in self.failing())

    def pytest_report_header(self, config):
        if config.option.verbose > 0:
            return "extsan: %s (%s)%s%s" % (
                self.mode, self.core.path,
                ", checking after each test" if self.check_each_test else "",
                ", findings fail the run" if self.fail else "")
        return None


def option(config, name):
    """An option's value, also before the command line is fully parsed (initial conftests)."""
    early = getattr(config, "known_args_namespace", None)
    value = getattr(early, name, None) if early is not None else None
    return value if value is not None else config.getoption(name, None)


def setting(config, name):
    """A bool option's value: the command line's, else the ini file's."""
    value = option(config, name)
    return bool(value if value is not None else config.getini(name))


def read_baseline(config):
    """{fingerprint: entry} of --extsan-baseline (or the ini's extsan_baseline, relative to the
    ini file); a file that cannot be used is a usage error, before any test runs."""
    path = option(config, "extsan_baseline")
    if not path:
        path = config.getini("extsan_baseline")
        if path and config.inipath is not None:
            path = os.path.join(str(config.inipath.parent), path)
    if not path:
        return {}
    try:
        return load_baseline(path)
    except Failure as e:
        raise pytest.UsageError("extsan: %s" % str(e).replace("--baseline", "--extsan-baseline", 1))


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
    leaks = option(config, "extsan_leaks") or 0
    if leaks < 0 or leaks == 1:
        raise pytest.UsageError("extsan: --extsan-leaks=%d: 0 (off) or a number of repetitions "
                                "of 2 or more (one cannot show growth)" % leaks)
    plugin = ExtsanPlugin(core, mode, setting(config, "extsan_check_each_test"),
                          setting(config, "extsan_fail"), read_baseline(config), leaks)
    config.pluginmanager.register(plugin, "extsan-session")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # Before the conftest files are imported: the extensions they import are patched when
    # they load rather than after.
    start(early_config)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Also when extsan is off: a marked test must not fail --strict-markers then.
    config.addinivalue_line("markers", MARKER_HELP)
    # The plugin was registered too late for pytest_load_initial_conftests (pytest_plugins).
    start(config)

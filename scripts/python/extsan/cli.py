"""extsan: run a program with the extsan shim preloaded, build the shim, merge and render its reports.

    extsan build [--python PY ...] [--force] [--verbose]
    extsan run [runtime option flags] [--options STR] [--json FILE] [--wait SECONDS]
               [--allow-unchecked] -- CMD ...
    extsan gate [runtime option flags] [--suppressions FILE] [--baseline FILE]
                [--update-baseline FILE] [--json FILE] [--sarif FILE] [--junit FILE]
                [--wait SECONDS] [--allow-unchecked] -- CMD ...
    extsan report FILE.json [--html OUT.html] [--dot DIR]
    extsan demo [--python PY] [runtime option flags] [--options STR] [--json FILE]
    extsan options [--markdown]
    extsan merge OUT IN ...

One function per subcommand (cmd_build, cmd_run, ...); what works on reports (merging,
fingerprints, the gate, SARIF, JUnit, text and HTML) is in the other modules of this package.
The console script `extsan` of an installed package runs main(); so do `python -m extsan` and a
checkout's scripts/extsan. The runtime option flags of `run`, `gate` and `demo` are generated
from `extsan-options list` (extsan/lib/ installed, build/ in a checkout),
the tool compiled from the one C options table (detector/runtime/options.def), so a new option needs no
change here.

Exit status: CMD's own status for `run` (128+N when CMD dies of signal N, as a shell reports it),
or the runtime option exitcode when CMD exited 0 and a finding was not suppressed;
for `gate` CMD's status when CMD failed, else 3 when a finding is new, else 0;
126/127 when CMD cannot be started or is not found (as env(1) and timeout(1) do), and 125 for any
failure of extsan itself (bad option, build failure, unreadable report, a Python process that ran
unchecked without --allow-unchecked), always with one line on stderr naming the problem.
Standard library only; Python 3.9 to 3.13.
"""

import argparse
import fcntl
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

from . import __version__, layout
from .atomic import check_writable, write_atomically, write_json_atomically
from .collect import collect_reports, unchecked_failure, warn_incomplete
from .common import EXIT_FAILURE, LOG_DIR_MODE, Failure, first_line, plural, rel
from .merge import merge_documents, merge_failure, merge_reports, read_merged, report_files

# `run` is the command every test run starts through, so what only `gate` and `report` use (the
# gate with its baselines, SARIF and JUnit; fingerprints; the text, HTML and Graphviz renderings)
# is imported by those commands, not here: each import costs start-up time (scripts/bench-startup).

# ---------------------------------------------------------------------------------------------
# Layout and constants
# ---------------------------------------------------------------------------------------------

# The libraries: in the installed package (extsan/lib), or in the checkout's build/ (layout.py).
# Building (build, demo) needs a checkout: ROOT is None in an installed package.
ROOT = layout.CHECKOUT
BUILD_DIR = os.path.join(ROOT, "build") if ROOT else None
SHIM = layout.SHIM
OPTIONS_TOOL = layout.OPTIONS_TOOL
FIXTURES_DIR = os.path.join(ROOT, "tests", "fixtures") if ROOT else None
DEMO_SCRIPT = os.path.join(FIXTURES_DIR, "demo.py") if ROOT else None

EXIT_CANNOT_RUN = 126  # CMD found but could not be started
EXIT_NOT_FOUND = 127  # CMD not found

SUPPORTED_MINORS = range(9, 14)  # CPython 3.9 .. 3.13
BUILD_LOG_TAIL = 40  # lines of meson output shown when a build fails

# si_code of a signal sent by the kernel itself; a terminal's ^C arrives this way, to the
# whole foreground process group (Linux value; the signal module does not export it).
SI_KERNEL = 0x80
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

DEFAULT_WAIT = 30  # seconds `run` and `gate` wait, after CMD, for processes still writing reports


# ---------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with extsan's error convention: one line, exit 125 (argparse's own is 2)."""

    def error(self, message):
        where = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise Failure("%s%s (see '%s --help')" % (where, message, self.prog))


def help_requested(args):
    """True when -h/--help appears among extsan's own arguments (before any '--')."""
    own = args[: args.index("--")] if "--" in args else args
    return "-h" in own or "--help" in own


# run's flags that are not runtime options. A run given none but these (the usual case) needs
# no runtime option table to parse its arguments, so `extsan-options list`, a process, is not run.
RUN_OWN_FLAGS = ("--json", "--wait", "--allow-unchecked", "--options")
SUBCOMMANDS = ("build", "run", "demo", "gate", "report", "options", "merge")


def only_own_flags(args, own_flags):
    """True when every flag among args is one of own_flags (--flag or --flag=value). Anything
    else that starts with '-' (a runtime option flag, -h, a misspelt flag, a value argparse
    would take for a flag) says no, so that the full parser decides as it always has."""
    return all(not arg.startswith("-") or arg.split("=", 1)[0] in own_flags for arg in args)


def split_command(args):
    """Splits [extsan args] -- CMD ... at the first '--'; CMD is None when there is none."""
    if "--" in args:
        i = args.index("--")
        return args[:i], args[i + 1 :]
    return args, None


# ---------------------------------------------------------------------------------------------
# Runtime options (the C table, read through build/extsan-options)
# ---------------------------------------------------------------------------------------------


class RuntimeOption:
    def __init__(self, name, type_, default, minimum, maximum, help_):
        self.name = name
        self.type = type_
        self.default = default
        self.minimum = minimum
        self.maximum = maximum
        self.help = help_

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    @property
    def default_is_true(self):
        return self.default.strip().lower() in ("1", "true")


def options_tool(*args, check=True):
    """Runs build/extsan-options with args; returns the CompletedProcess (text, captured)."""
    try:
        result = subprocess.run([OPTIONS_TOOL] + list(args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True)
    except OSError as e:
        raise Failure("cannot run %s: %s" % (rel(OPTIONS_TOOL), e.strerror or e))
    if check and result.returncode != 0:
        detail = first_line(result.stderr)
        raise Failure(
            "'%s %s' failed with status %d%s"
            % (rel(OPTIONS_TOOL), " ".join(args), result.returncode, ": " + detail if detail else "")
        )
    return result


def load_runtime_options():
    """The runtime options from `extsan-options list`, or None when the tool is not built."""
    if not os.access(OPTIONS_TOOL, os.X_OK):
        return None
    options = []
    for number, line in enumerate(options_tool("list").stdout.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 6 or fields[1] not in ("bool", "int", "string"):
            raise Failure("%s list: line %d is not name<TAB>type<TAB>default<TAB>min<TAB>max<TAB>help: %r"
                          % (rel(OPTIONS_TOOL), number, line))
        options.append(RuntimeOption(*fields[:5], "\t".join(fields[5:])))
    return options


def add_runtime_option_flags(parser, options):
    """Adds one flag per runtime option; each stores its EXTSAN_OPTIONS value under 'rt_<name>'.

    bool: --NAME and --no-NAME (the one that changes the default carries the help text);
    int: --NAME N; string: --NAME VALUE. A flag that would clash with one of extsan's own
    (the runtime option 'help' against --help) is not generated: set it with --options.
    """
    group = parser.add_argument_group(
        "runtime options",
        "(passed to the shim in EXTSAN_OPTIONS; these win over EXTSAN_OPTIONS and --options)")
    taken = set(parser._option_string_actions)  # argparse keeps no public list of its flags
    for opt in options:
        dest = "rt_" + opt.name
        if opt.type == "bool":
            on, off = opt.flag, "--no-" + opt.flag[2:]
            if on in taken or off in taken:
                continue
            group.add_argument(on, dest=dest, action="store_const", const="1", default=None,
                               help="(the default)" if opt.default_is_true else "turn on: " + opt.help)
            group.add_argument(off, dest=dest, action="store_const", const="0", default=None,
                               help="turn off: " + opt.help if opt.default_is_true else "(the default)")
        else:
            if opt.flag in taken:
                continue
            if opt.type == "int":
                limits = ", %s..%s" % (opt.minimum, opt.maximum) if opt.minimum or opt.maximum else ""
                group.add_argument(opt.flag, dest=dest, metavar="N", type=int_value(opt.flag), default=None,
                                   help="%s (default: %s%s)" % (opt.help, opt.default, limits))
            else:
                default = repr(opt.default) if opt.default else "empty"
                group.add_argument(opt.flag, dest=dest, metavar=opt.name.rsplit("_", 1)[-1].upper(),
                                   default=None, help="%s (default: %s)" % (opt.help, default))


def seconds_value(text):
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("not a number of seconds (0 or more): %r" % text)
    return value


def int_value(flag):
    def parse(text):
        try:
            return str(int(text, 10))
        except ValueError:
            raise argparse.ArgumentTypeError("not an integer: %r" % text)

    return parse


def quote_option_value(name, value):
    """A value as it must appear in EXTSAN_OPTIONS: quoted when it holds ':', space or a quote."""
    if value and not re.search(r"[\s:'\"]", value):
        return value
    if '"' not in value:
        return '"%s"' % value
    if "'" not in value:
        return "'%s'" % value
    raise Failure("runtime option %s: a value holding both ' and \" cannot be passed in EXTSAN_OPTIONS"
                  % name)


def split_options(text):
    """Splits an EXTSAN_OPTIONS string into (name, value) items, quotes removed.

    Mirrors the C parser (detector/runtime/options.h): items separated by ':' or white space, a value
    may be quoted with ' or ". Used only to find the log_dir in force; the C tool validates.
    """
    items, current, quote = [], [], None
    for ch in text + ":":
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch == ":" or ch.isspace():
            if current:
                items.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quote and current:
        items.append("".join(current)[:-1])  # unterminated quote; the C tool will report it
    pairs = []
    for item in items:
        name, _, value = item.partition("=")
        if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
            value = value[1:-1]
        pairs.append((name, value))
    return pairs


def compose_options(*parts):
    """Joins EXTSAN_OPTIONS fragments; later items win (the C parser applies them in order)."""
    return ":".join(p.strip(": \t\n") for p in parts if p and p.strip(": \t\n"))


def option_in_force(text, name):
    """The last value given to runtime option `name` in text, or None."""
    value = None
    for key, val in split_options(text):
        if key == name:
            value = val
    return value


def check_options(text):
    """Validates an EXTSAN_OPTIONS string with `extsan-options check`, before CMD starts."""
    if not text:
        return
    result = options_tool("check", text, check=False)
    if result.returncode != 0:
        raise Failure("invalid runtime options %r: %s" % (text, options_tool_complaint(result)))


def check_suppression_file(path):
    """Validates a suppression file with `extsan-options check-suppressions`, before CMD starts
    (for a runtime that applies suppressions itself)."""
    result = options_tool("check-suppressions", path, check=False)
    if result.returncode != 0:
        complaint = options_tool_complaint(result)
        raise Failure(complaint if path in complaint else "%s: %s" % (rel(path), complaint))


def options_tool_complaint(result):
    """The first line the options tool wrote about a rejected input, without its framing."""
    detail = first_line(result.stderr) or "rejected (status %d)" % result.returncode
    for prefix in ("extsan:", "EXTSAN_OPTIONS:"):  # the tool's own framing; we give ours
        if detail.startswith(prefix):
            detail = detail[len(prefix) :].strip()
    return detail


# ---------------------------------------------------------------------------------------------
# Finding Pythons
# ---------------------------------------------------------------------------------------------

# Run in each candidate interpreter (-I: no user site, no PYTHON* variables). Must stay valid
# on any Python 3 so that an old interpreter answers instead of failing with a SyntaxError.
PYTHON_QUERY = r"""
import json, os, sys, sysconfig
inc = sysconfig.get_paths().get("include") or ""
print(json.dumps({
    "implementation": sys.implementation.name,
    "version": list(sys.version_info[:3]),
    "executable": sys.executable,
    "include": inc,
    "headers": os.path.isfile(os.path.join(inc, "Python.h")),
    "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
}))
"""


class PythonInfo:
    def __init__(self, given, data):
        self.given = given
        self.executable = data["executable"] or given
        self.version = tuple(data["version"])
        self.implementation = data["implementation"]
        self.include = data["include"]
        self.headers = data["headers"]
        self.free_threaded = data["free_threaded"]

    @property
    def minor(self):
        return self.version[1]

    @property
    def label(self):
        return "%d.%d" % self.version[:2]

    def unsupported_reason(self):
        """Why the shim cannot be built for this interpreter, or None."""
        if self.implementation != "cpython":
            return "is %s, not CPython" % self.implementation
        if self.version[0] != 3 or self.minor not in SUPPORTED_MINORS:
            return "is Python %s; extsan supports CPython 3.9 to 3.13" % ".".join(map(str, self.version))
        if self.free_threaded:
            return "is a free-threaded build, which extsan does not support"
        if not self.headers:
            return "has no Python.h in %s (install its development headers)" % (
                self.include or "its include dir")
        return None


def query_pythons(paths):
    """Asks each interpreter about itself, all at once; returns {path: PythonInfo or error text}."""
    running = {}
    for path in paths:
        try:
            running[path] = subprocess.Popen(
                [path, "-I", "-c", PYTHON_QUERY],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                universal_newlines=True,
            )
        except OSError as e:
            running[path] = e.strerror or str(e)
    answers = {}
    for path, proc in running.items():
        if isinstance(proc, str):
            answers[path] = proc
            continue
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            answers[path] = "did not answer within 60 s"
            continue
        try:
            answers[path] = PythonInfo(path, json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError, KeyError, TypeError):
            answers[path] = first_line(err) or "exited with status %d" % proc.returncode
    return answers


def candidate_pythons():
    """Where to look when no --python is given, in order of preference."""
    found = []
    on_path = shutil.which("python3")
    if on_path:
        found.append(on_path)
    found += sorted(p for p in glob.glob("/usr/bin/python3*") if re.search(r"/python3(\.\d+)?$", p))
    pyenv_root = None
    if shutil.which("pyenv"):
        try:
            pyenv_root = subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        universal_newlines=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pyenv_root = None
    pyenv_root = pyenv_root or os.environ.get("PYENV_ROOT")
    if pyenv_root:
        versions = glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", "python3"))
        found += sorted(versions, key=version_sort_key)
    return [p for p in found if os.access(p, os.X_OK)]


def version_sort_key(path):
    return [int(n) if n.isdigit() else n for n in re.split(r"(\d+)", path)]


def discover_pythons():
    """One usable CPython per minor version 3.9-3.13 among the candidates (first found wins)."""
    chosen, seen = {}, set()
    answers = query_pythons(candidate_pythons())
    for path, info in answers.items():  # dicts keep the candidates' order
        if isinstance(info, str) or info.unsupported_reason():
            continue
        real = os.path.realpath(info.executable)
        if real in seen:
            continue
        seen.add(real)
        chosen.setdefault(info.minor, info)
    return chosen


def resolve_pythons(paths):
    """PythonInfo for each --python given; any unusable one is a Failure naming it."""
    resolved = []
    executables = [resolve_executable(p) for p in paths]
    answers = query_pythons(executables)
    for given, path in zip(paths, executables):
        info = answers[path]
        if isinstance(info, str):
            raise Failure("--python %s: cannot query it: %s" % (given, info))
        reason = info.unsupported_reason()
        if reason:
            raise Failure("--python %s %s" % (given, reason))
        info.given = given
        resolved.append(info)
    return resolved


def resolve_executable(path):
    if os.sep in path:
        if not os.path.exists(path):
            raise Failure("--python %s: no such file" % path)
        return path
    found = shutil.which(path)
    if not found:
        raise Failure("--python %s: not found on PATH" % path)
    return found


def pythons_by_minor(infos):
    """{minor: PythonInfo}; two interpreters of one minor version is a Failure."""
    chosen = {}
    for info in infos:
        other = chosen.get(info.minor)
        if other and os.path.realpath(other.executable) != os.path.realpath(info.executable):
            raise Failure("--python %s and %s are both Python %s; give one per minor version"
                          % (other.given, info.given, info.label))
        chosen[info.minor] = info
    return chosen


# ---------------------------------------------------------------------------------------------
# Building with Meson
# ---------------------------------------------------------------------------------------------


def meson_command():
    meson = shutil.which("meson")
    if meson:
        return [meson]
    if module_available("mesonbuild"):
        return [sys.executable, "-m", "mesonbuild.mesonmain"]
    raise Failure("meson not found: put it on PATH or install it (python3 -m pip install meson ninja)")


def module_available(name):
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def build_environment():
    """The environment for meson: NINJA pointed at PyPI's ninja when none is on PATH."""
    env = os.environ.copy()
    if not env.get("NINJA") and not (shutil.which("ninja") or shutil.which("samu")):
        try:
            import ninja  # PyPI's ninja package ships the binary

            env["NINJA"] = os.path.join(ninja.BIN_DIR, "ninja")
        except (ImportError, AttributeError):
            pass  # meson will say what it misses
    return env


def run_build_step(args, what, log_dir, verbose):
    """Runs one meson command; quiet unless verbose, log tail and Failure when it fails."""
    if verbose:
        print("extsan: $ " + " ".join(args), file=sys.stderr)
        status = subprocess.call(args, env=build_environment(), stdin=subprocess.DEVNULL, stdout=sys.stderr)
        if status != 0:
            raise Failure("build failed: %s exited with status %d" % (what, status))
        return
    result = subprocess.run(args, env=build_environment(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if result.returncode == 0:
        return
    log_path = os.path.join(log_dir, "extsan-build.log")
    try:
        with open(log_path, "w") as f:
            f.write("$ %s\n%s" % (" ".join(args), result.stdout))
        where = "full log: %s" % rel(log_path)
    except OSError:
        where = "rerun with --verbose for the full output"
    lines = result.stdout.rstrip("\n").splitlines()
    sys.stderr.write("".join(line + "\n" for line in lines[-BUILD_LOG_TAIL:]))
    raise Failure("build failed: %s exited with status %d (%s)" % (what, result.returncode, where))


def configured_option(build_dir, name):
    """The value of a Meson option in a configured build directory, or None."""
    if not os.path.exists(os.path.join(build_dir, "meson-private", "coredata.dat")):
        return None
    try:
        with open(os.path.join(build_dir, "meson-info", "intro-buildoptions.json")) as f:
            for option in json.load(f):
                if option.get("name") == name:
                    return option.get("value")
    except (OSError, ValueError, AttributeError):
        pass
    return None


def is_configured(build_dir):
    return os.path.exists(os.path.join(build_dir, "meson-private", "coredata.dat"))


class BuildLock:
    """An exclusive lock on build/ so that concurrent `extsan run`s do not build at once."""

    def __enter__(self):
        os.makedirs(BUILD_DIR, exist_ok=True)
        self.fd = os.open(os.path.join(BUILD_DIR, ".extsan.lock"),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def meson_setup(build_dir, source_dir, options, verbose, what):
    """meson setup, or setup --reconfigure when build_dir was configured before."""
    args = meson_command() + ["setup"]
    if is_configured(build_dir):
        args.append("--reconfigure")
    args += [build_dir, source_dir] + ["-D%s=%s" % kv for kv in options]
    log_dir = build_dir if os.path.isdir(build_dir) else BUILD_DIR
    run_build_step(args, "meson setup (%s)" % what, log_dir, verbose)


def meson_compile(build_dir, verbose, what):
    args = meson_command() + ["compile", "-C", build_dir]
    run_build_step(args, "meson compile (%s)" % what, build_dir, verbose)


def ensure_build_dependencies():
    """On a fresh machine, installs the system libraries the shim links (scripts/install-deps)."""
    probe = subprocess.run(["pkg-config", "--exists", "libunwind", "libdw"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if shutil.which("pkg-config") else None
    if probe is not None and probe.returncode == 0:
        return
    print("extsan: libunwind or libdw is missing; running scripts/install-deps --system", file=sys.stderr)
    if subprocess.run([os.path.join(ROOT, "scripts", "install-deps"), "--system"]).returncode != 0:
        raise Failure("scripts/install-deps --system failed; install libunwind-dev and libdw-dev")


def build_shim(pythons, force=False, verbose=False):
    """Configures (only when the Python set changed, or force) and compiles build/."""
    ensure_build_dependencies()
    paths = [pythons[m].executable for m in sorted(pythons)]
    for path in paths:
        if "," in path:
            raise Failure("%s: a path holding ',' cannot be passed in -Dpythons" % path)
    with BuildLock():
        if force or configured_option(BUILD_DIR, "pythons") != paths:
            meson_setup(BUILD_DIR, ROOT, [("pythons", ",".join(paths))], verbose, "the shim")
        meson_compile(BUILD_DIR, verbose, "the shim")
        missing = [p for p in [SHIM, OPTIONS_TOOL] if not os.path.exists(p)]
        if missing:
            raise Failure("the build succeeded but did not produce %s" % ", ".join(rel(p) for p in missing))


def discover_or_fail():
    pythons = discover_pythons()
    if not pythons:
        raise Failure("no CPython 3.9-3.13 with development headers found (python3 on PATH, "
                      "/usr/bin/python3*, pyenv versions); name one with --python")
    return pythons


def ensure_shim(required=None, verbose=False):
    """Builds the shim when it is missing, or when `required` (PythonInfo) has no core yet.
    An installed package builds nothing: its libraries are those it was installed with."""
    if layout.INSTALLED:
        if not (os.path.exists(SHIM) and os.access(OPTIONS_TOOL, os.X_OK)):
            raise Failure("the installed package lacks %s or %s: reinstall extsan" % (SHIM, OPTIONS_TOOL))
        return
    if ROOT is None:
        raise Failure("extsan has no libraries here (%s) and no checkout to build them in: "
                      "install it with pip, or run scripts/extsan from a checkout" % layout.LIB_DIR)

    def built():
        if not (os.path.exists(SHIM) and os.access(OPTIONS_TOOL, os.X_OK)):
            return False
        return required is None or os.path.exists(core_path(required.minor))

    if built():
        return
    with BuildLock():  # another extsan may have built it while we waited
        if built():
            return
    print("extsan: building the shim (first use)...", file=sys.stderr)
    pythons = discover_or_fail()
    if required is not None:
        pythons[required.minor] = required
    build_shim(pythons, verbose=verbose)


def core_path(minor):
    return layout.core_path(minor)


def need_checkout(subcommand):
    """build and demo compile extsan's sources: a Failure in an installed package."""
    if layout.INSTALLED or ROOT is None:
        raise Failure("%s: needs a checkout of extsan (its sources); this extsan is installed in %s, "
                      "with its core for Python %d.%d in %s" % (subcommand, layout.PACKAGE_DIR,
                                                              sys.version_info[0], sys.version_info[1],
                                                              layout.LIB_DIR))


# ---------------------------------------------------------------------------------------------
# Running a command under the shim
# ---------------------------------------------------------------------------------------------


def preload_value(existing):
    """LD_PRELOAD with the shim first and the existing entries (space or ':' separated) kept."""
    if re.search(r"[\s:]", SHIM):
        raise Failure("%s: LD_PRELOAD cannot hold a path with ':' or white space; move the checkout" % SHIM)
    entries = [e for e in re.split(r"[\s:]+", existing or "") if e and e != SHIM]
    return ":".join([SHIM] + entries)


def runtime_flag_items(args, options):
    """The EXTSAN_OPTIONS items the runtime option flags ask for, in table order."""
    items = []
    for opt in options or []:
        value = getattr(args, "rt_" + opt.name, None)
        if value is not None:
            items.append("%s=%s" % (opt.name, quote_option_value(opt.name, value)))
    return ":".join(items)


def wait_forwarding_signals(argv, env):
    """Runs argv and returns its exit status as a shell reports it, forwarding signals.

    SIGINT, SIGTERM and SIGHUP are blocked here and taken with sigtimedwait, so extsan itself
    never dies of them while CMD runs; each is sent on to CMD. A ^C typed at the terminal is the
    exception: the kernel already sent it to the whole foreground process group, CMD included,
    so forwarding it would deliver it twice (a second KeyboardInterrupt inside the handler of the
    first).
    """
    waited = set(FORWARDED_SIGNALS) | {signal.SIGCHLD}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        try:
            # The child starts with the mask extsan had, not with these signals blocked.
            proc = subprocess.Popen(argv, env=env,
                                    preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old_mask))
        except FileNotFoundError:
            print("extsan: %s: command not found" % argv[0], file=sys.stderr)
            return EXIT_NOT_FOUND
        except OSError as e:
            print("extsan: %s: cannot run it: %s" % (argv[0], e.strerror or e), file=sys.stderr)
            return EXIT_CANNOT_RUN
        while proc.poll() is None:
            info = signal.sigtimedwait(waited, 1.0)
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            if info.si_code == SI_KERNEL and same_process_group(proc.pid):
                continue
            try:
                proc.send_signal(info.si_signo)
            except ProcessLookupError:
                pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    status = proc.returncode
    return 128 - status if status < 0 else status


def same_process_group(pid):
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return True


def run_under_shim(command, args, options, extra_env=None):
    """Everything `run` does after parsing: options, environment, CMD, then the reports.

    The run-wide status follows the exitcode option as each process's does: CMD exited 0 and a
    process of the run reported a finding no rule suppressed, so the run exits with exitcode
    (a finding of a subprocess whose status CMD ignored fails the run too).
    """
    status, document, failure = run_and_merge(command, args, options, extra_env, json_path=args.json)
    if failure is not None:
        raise failure
    exitcode = int(option_in_force(runtime_options_text(args, options), "exitcode") or 0)
    if status != 0 or not exitcode or document is None:
        return status
    unsuppressed = [f for f in document["findings"] if not f.get("suppressed")]
    if not unsuppressed:
        return status
    print("extsan: %s no rule suppressed: exit status %d (option exitcode)"
          % (plural(len(unsuppressed), "finding"), exitcode), file=sys.stderr)
    return exitcode


def runtime_options_text(args, options):
    """The EXTSAN_OPTIONS text a run gives its processes (without the log_dir it may add):
    $EXTSAN_OPTIONS, then --options, then the runtime option flags, later items winning."""
    return compose_options(os.environ.get("EXTSAN_OPTIONS", ""), args.options or "",
                           runtime_flag_items(args, options))


def run_and_merge(command, args, options, extra_env=None, json_path=None, want_document=False):
    """Runs CMD under the shim with the options args give, then collects the report of every
    process CMD started (waiting up to --wait seconds for those still writing theirs) and
    merges them, into json_path too when given.

    Every run has a log directory (a private temporary one unless the options name one), so
    that a process that ran unchecked fails the run (unless --allow-unchecked) even without
    --json. Returns (CMD's status, the merged document, a Failure or None): a report that could
    not be merged is returned, not raised, so that the gate can put CMD's own failure first.
    want_document: the caller reads the document (the gate), so an empty run deserves a warning.
    """
    text = runtime_options_text(args, options)
    check_options(text)
    if json_path:
        check_writable("--json", json_path)
    private_dir = None
    log_dir = option_in_force(text, "log_dir")
    if log_dir:
        log_dir = os.path.abspath(log_dir)
        make_log_dir(log_dir)
        before = report_files(log_dir)
    else:
        private_dir = log_dir = make_private_log_dir()
        before = {}
        text = compose_options(text, "log_dir=" + quote_option_value("log_dir", log_dir))
    try:
        env = os.environ.copy()
        env.update(extra_env or {})
        env["LD_PRELOAD"] = preload_value(env.get("LD_PRELOAD"))
        env["EXTSAN_OPTIONS"] = text
        status = wait_forwarding_signals(command, env)
    except BaseException:
        if private_dir:
            shutil.rmtree(private_dir, ignore_errors=True)
        raise
    collected = collect_reports(log_dir, before, args.wait)
    warn_incomplete(collected, args.wait, log_dir, private_dir is not None)
    # A process still running may yet write into the private directory: it stays.
    keep = private_dir is not None and bool(collected.still_running)
    kept = " (the reports are kept in %s)" % private_dir if private_dir else ""
    document, problems = merge_documents(collected.paths)
    if json_path:
        try:
            write_json_atomically(json_path, document)
        except Failure as e:
            return status, document, Failure("%s%s" % (e, kept))
    if not collected.paths and (json_path or want_document):
        print("extsan: warning: no process wrote a report into %s%s"
              % (log_dir, "; %s lists none" % rel(json_path) if json_path else ""), file=sys.stderr)
    if problems:
        return status, document, merge_failure(problems, len(collected.paths), json_path, kept)
    if private_dir and not keep:
        shutil.rmtree(private_dir, ignore_errors=True)
    return status, document, unchecked_failure(document, args.allow_unchecked)


def make_log_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise Failure("log_dir %s: cannot create it: %s" % (path, e.strerror or e))


def make_private_log_dir():
    """A fresh temporary log directory, mode 01733: a process of the run that runs as another
    user (a test dropping privileges with user=/group=) can create its report there, while no
    other user can list the directory or remove or replace a file it did not create (the
    sticky bit). Its owner, this process, reads and removes everything."""
    path = tempfile.mkdtemp(prefix="extsan-")
    os.chmod(path, LOG_DIR_MODE)
    return path


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def default_demo_python():
    """sys.executable when the shim can be built for it, else the first Python found."""
    info = query_pythons([sys.executable]).get(sys.executable)
    if isinstance(info, PythonInfo) and not info.unsupported_reason():
        return info
    pythons = discover_or_fail()
    return pythons[sorted(pythons)[0]]


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------


def cmd_build(args):
    """extsan build: find the Pythons, configure build/ when their set changed, compile."""
    need_checkout("build")
    if args.python:
        pythons = pythons_by_minor(resolve_pythons(args.python))
    else:
        pythons = discover_or_fail()
    build_shim(pythons, force=args.force, verbose=args.verbose)
    labels = ", ".join(pythons[m].label for m in sorted(pythons))
    print("extsan: built %s for Python %s" % (rel(SHIM), labels), file=sys.stderr)
    return 0


def cmd_run(args, command, options):
    """extsan run: CMD under the shim, with the runtime options given; CMD's exit status."""
    if not command:
        raise Failure("run: no command given (usage: extsan run [options] -- CMD ...)")
    return run_under_shim(command, args, options)


def cmd_demo(args, options):
    """extsan demo: build the shim and the fixture extensions for PY, run the demo under the shim."""
    need_checkout("demo")
    if args.python:
        python = resolve_pythons([args.python])[0]
    else:
        python = default_demo_python()
    for path in (os.path.join(FIXTURES_DIR, "meson.build"), DEMO_SCRIPT):
        if not os.path.exists(path):
            raise Failure("%s: not found; the demo needs the test fixtures" % rel(path))
    ensure_shim(required=python, verbose=args.verbose)
    demo_dir = os.path.join(BUILD_DIR, "demo-py" + python.label)
    with BuildLock():
        if configured_option(demo_dir, "python") != python.executable:
            meson_setup(demo_dir, FIXTURES_DIR, [("python", python.executable)], args.verbose, "the fixtures")
        meson_compile(demo_dir, args.verbose, "the fixtures")
    pythonpath = os.pathsep.join(p for p in [demo_dir, os.environ.get("PYTHONPATH", "")] if p)
    print("extsan: running the demo with Python %s under the shim" % python.label, file=sys.stderr)
    return run_under_shim([python.executable, DEMO_SCRIPT], args, options,
                          extra_env={"PYTHONPATH": pythonpath})


def cmd_options(args):
    """extsan options: the runtime options table, from the C table itself."""
    ensure_shim()
    sys.stdout.write(options_tool("markdown" if args.markdown else "help").stdout)
    return 0


def cmd_merge(args):
    """extsan merge: the --json merge of `run`, on given reports or directories of them."""
    paths, seen = [], set()
    for given in args.inputs:
        if os.path.isdir(given):
            found = sorted(report_files(given))
            if not found:
                print("extsan: warning: %s holds no extsan.<pid>.json report" % given, file=sys.stderr)
            paths += found
        else:
            paths.append(given)
    paths = [p for p in paths if not (os.path.realpath(p) in seen or seen.add(os.path.realpath(p)))]
    problems = merge_reports(paths, args.out)
    if problems:
        raise merge_failure(problems, len(paths), args.out, "")
    return 0


def cmd_gate(args, command, options):
    """extsan gate: CMD under the shim, then its findings against the suppressions and the
    baseline (gate.py); exits with CMD's failure, else 3 for new findings."""
    from . import gate

    if not command:
        raise Failure("gate: no command given (usage: extsan gate [options] -- CMD ...)")
    given = compose_options(os.environ.get("EXTSAN_OPTIONS", ""), args.options or "")
    suppressions = args.suppressions or option_in_force(given, "suppressions")
    if suppressions:
        check_suppression_file(suppressions)
        if args.suppressions:  # CMD may change directory: the runtime gets an absolute path
            args.rt_suppressions = os.path.abspath(args.suppressions)
    accepted = gate.read_baseline_checking_outputs(args)
    return gate.run_gate(args, accepted, lambda: run_and_merge(command, args, options, json_path=None,
                                                             want_document=True))


def cmd_report(args):
    """extsan report: a merged (or per-process) report for a person: text on stdout, or one
    HTML page; --dot also writes each finding's graph as a Graphviz file."""
    from .fingerprint import add_fingerprints
    from .graph import write_dot_files
    from .html import render_html
    from .text import render_text

    document = add_fingerprints(read_merged(args.report))
    if args.html:
        check_writable("--html", args.html)
    if args.dot:
        write_dot_files(document["findings"], args.dot)
    if args.html:
        write_atomically(args.html, render_html(document, "extsan report: %s" % os.path.basename(args.report),
                                                full=args.full_stacks))
    else:
        # Strings of bytes that were not UTF-8 hold their escapes (\udcff): shown as such.
        sys.stdout.reconfigure(errors="backslashreplace")
        sys.stdout.write(render_text(document, full=args.full_stacks))
    return 0


# ---------------------------------------------------------------------------------------------
# Parsers and main
# ---------------------------------------------------------------------------------------------

DESCRIPTION = "A sanitizer for CPython extension modules: runs a program with the extsan shim preloaded."
NO_OPTIONS_NOTE = ("The runtime option flags (--halt-on-error, --stack-depth N, ...) are listed here "
                   "once the shim is built (extsan build); until then, use --options.")


RUN_JSON_HELP = ("after CMD exits, merge the reports of all its processes into FILE "
                 "(log_dir defaults to a private temporary directory)")
GATE_DESCRIPTION = (  # % the gate's exit status for new findings (gate.EXIT_NEW_FINDINGS)
    "Run CMD under the shim (as run does), merge the reports of all its processes and classify each "
    "finding: suppressed (a rule of --suppressions matches it), baselined (its fingerprint is in "
    "--baseline) or new. Exit status: CMD's own when CMD failed (never hidden), else %d when a "
    "finding is new, else 0; 125 when extsan itself fails (a malformed suppression or baseline "
    "file, an unwritable output: before CMD starts). Ends with a summary line on stderr, then "
    "one line per new finding (kind, subject, fingerprint, first extension frame).")


def gate_exit_new_findings():
    from .gate import EXIT_NEW_FINDINGS

    return EXIT_NEW_FINDINGS


def add_run_arguments(parser, options, json_help=RUN_JSON_HELP):
    parser.add_argument("--json", metavar="FILE", help=json_help)
    parser.add_argument("--wait", metavar="SECONDS", type=seconds_value, default=DEFAULT_WAIT,
                        help="after CMD exits, wait up to SECONDS for its processes still running "
                             "that have not completed their reports (the multiprocessing forkserver "
                             "and resource tracker, detached children); one warning names those still "
                             "running then (default: %d)" % DEFAULT_WAIT)
    parser.add_argument("--allow-unchecked", action="store_true",
                        help="let a run in which a Python process ran unchecked (no core for its "
                             "version, a core that did not load) pass with a warning, instead of "
                             "failing with status 125")
    parser.add_argument("--options", metavar="STR", default="",
                        help="runtime options as 'name=value:name=value' "
                             "(on top of $EXTSAN_OPTIONS; flags win)")
    if options is not None:
        add_runtime_option_flags(parser, options)


def make_parser(options, only=None):
    """The parser; options (the runtime option table) may be None when not built yet.

    only: the subcommand being run, whose parser alone is built (the others' are never used
    then, and building them costs start-up time); None for all (the top-level help, an
    unknown subcommand's error listing the choices).
    """

    def wanted(name):
        return only is None or only == name

    parser = Parser(prog="extsan", description=DESCRIPTION, allow_abbrev=False,
                    epilog="'extsan COMMAND --help' describes each command. extsan's own failures exit 125.")
    parser.add_argument("--version", action="version", version="extsan " + __version__)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=Parser)
    epilog = None if options is not None else NO_OPTIONS_NOTE

    if wanted("build"):
        p = sub.add_parser("build", help="build the shim for the Pythons found (or given)", allow_abbrev=False,
                           description="Build build/libextsan.so and one core per CPython minor version "
                                       "3.9-3.13. Without --python: python3 on PATH, /usr/bin/python3*, "
                                       "$(pyenv root)/versions/*, one per minor version. Reconfigures only "
                                       "when that set changed.")
        p.add_argument("--python", metavar="PY", action="append", help="build for this interpreter (repeatable)")
        p.add_argument("--force", action="store_true", help="reconfigure even if the set of Pythons is unchanged")
        p.add_argument("--verbose", "-v", action="store_true", help="show Meson's output")

    if wanted("run"):
        p = sub.add_parser("run", help="run CMD under the shim", allow_abbrev=False, epilog=epilog,
                           usage="extsan run [options] -- CMD ...",
                           description="Run CMD with libextsan.so preloaded (in a checkout, built first if "
                                       "missing) and exit with CMD's status (128+N when CMD dies of signal "
                                       "N; with --exitcode N, N when CMD exited 0 and a process reported a "
                                       "finding no rule suppressed; 125 when extsan itself fails).")
        add_run_arguments(p, options)
        p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    if wanted("demo"):
        p = sub.add_parser("demo", help="build the fixtures and run the demo program under the shim",
                           allow_abbrev=False, epilog=epilog,
                           description="Build the shim and the fixture extensions (build/demo-py3.X) for PY, "
                                       "then run PY tests/fixtures/demo.py under the shim; its report appears "
                                       "on stderr.")
        p.add_argument("--python", metavar="PY",
                       help="interpreter to demonstrate with (default: this one if CPython 3.9-3.13, "
                            "else the first found)")
        p.add_argument("--verbose", "-v", action="store_true", help="show Meson's output")
        add_run_arguments(p, options)

    if wanted("gate"):
        p = sub.add_parser("gate", help="run CMD under the shim and fail on new findings (for CI)",
                           allow_abbrev=False, epilog=epilog, usage="extsan gate [options] -- CMD ...",
                           description=GATE_DESCRIPTION % gate_exit_new_findings())
        p.add_argument("--suppressions", metavar="FILE",
                       help="findings matching a kind:pattern line of FILE are suppressed (passed to the "
                            "runtime as suppressions=FILE when it has that option)")
        p.add_argument("--baseline", metavar="FILE", help="findings whose fingerprint FILE lists are accepted")
        p.add_argument("--update-baseline", metavar="FILE",
                       help="write today's findings (those not suppressed) to FILE as the new baseline; "
                            "they then count as baselined")
        p.add_argument("--sarif", metavar="FILE", help="write the findings as SARIF 2.1.0 (code scanning)")
        p.add_argument("--junit", metavar="FILE", help="write the findings as JUnit XML (CI test views)")
        add_run_arguments(p, options, json_help="write the merged report to FILE, each finding with its "
                                                "\"fingerprint\" and \"status\" (new, suppressed, baselined)")
        p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    if wanted("report"):
        p = sub.add_parser("report", help="render a JSON report as text or HTML", allow_abbrev=False,
                           description="Render a report of run --json, gate --json or merge (or one "
                                       "extsan.<pid>.json) for a person: text on stdout by default; with "
                                       "--html one self-contained page with the stacks, the source lines "
                                       "around them and each reference graph (drawn by Graphviz's dot when "
                                       "installed).")
        p.add_argument("report", metavar="FILE.json", help="the report to render")
        p.add_argument("--html", metavar="OUT.html", help="write an HTML page instead of the text")
        p.add_argument("--dot", metavar="DIR", help="also write each finding's graph to DIR/extsan-<fingerprint>.dot")
        p.add_argument("--full-stacks", action="store_true",
                       help="show every frame of every stack (by default an extension's frames and the "
                            "frames next to them, the rest folded into one line, as the runtime option "
                            "full_stacks)")

    if wanted("options"):
        p = sub.add_parser("options", help="print the runtime options table", allow_abbrev=False,
                           description="Print the runtime options (set with EXTSAN_OPTIONS or the flags of run).")
        p.add_argument("--markdown", action="store_true", help="as a Markdown table")

    if wanted("merge"):
        p = sub.add_parser("merge", help="merge per-process JSON reports into one", allow_abbrev=False,
                           description="Merge extsan.<pid>.json reports (files, or directories holding them, "
                                       "or reports merged before) into OUT, as run --json does.")
        p.add_argument("out", metavar="OUT", help="the merged report to write")
        p.add_argument("inputs", metavar="IN", nargs="+", help="a per-process report, or a directory of them")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    subcommand = argv[0] if argv and not argv[0].startswith("-") else None
    try:
        options = None
        own, command = split_command(argv) if subcommand in ("run", "gate") else (argv, None)
        if subcommand in ("run", "demo", "gate"):
            # The runtime option flags come from the built options tool: build before parsing,
            # unless only the help is wanted.
            if not help_requested(argv[1:]):
                ensure_shim()
            if subcommand != "run" or not only_own_flags(own[1:], RUN_OWN_FLAGS):
                options = load_runtime_options()
        only = subcommand if subcommand in SUBCOMMANDS else None
        args, unknown = make_parser(options, only).parse_known_args(own)
        if unknown:
            where = args.subcommand + ": " if args.subcommand else ""
            raise Failure("%sunrecognized arguments: %s (see 'extsan %s--help')"
                          % (where, " ".join(unknown), args.subcommand + " " if args.subcommand else ""))
        if args.subcommand is None:
            make_parser(options).print_usage(sys.stderr)
            raise Failure("no command given (build, run, gate, report, demo, options, merge)")
        if args.subcommand in ("run", "gate"):
            if command is not None and args.command:
                raise Failure("%s: unexpected argument %r before '--'" % (args.subcommand, args.command[0]))
            run = cmd_run if args.subcommand == "run" else cmd_gate
            return run(args, command if command is not None else args.command, options)
        if args.subcommand == "demo":
            return cmd_demo(args, options)
        return {"build": cmd_build, "options": cmd_options, "merge": cmd_merge,
                "report": cmd_report}[args.subcommand](args)
    except Failure as e:
        print("extsan: %s" % e, file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("extsan: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

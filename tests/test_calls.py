"""call-without-gil: any C-API function an extension calls without an attached thread state.

Each planted defect of tests/fixtures/call_defects.c runs in a program of its own under
`scripts/extsan run --json`, on every Python of the matrix. Most of them crash from 3.12 on (and
some before), as they would without extsan: the finding must reach the report first, and a crash
is then a deadly-signal finding of the same process. Every clean twin is silent and prints what
the defect prints when it survives.
"""

import json
import signal
from typing import NamedTuple, Tuple

import pytest

from conftest import NANOBIND_IDS, check_stack, program_pid

PRELUDE = """\
import os, sys
import call_defects as m
print("pid", os.getpid(), flush=True)
"""
CALL = "call-without-gil"


class Defect(NamedTuple):
    id: str
    program: str  # after PRELUDE
    apis: Tuple[str, ...]  # the names the runtime may give the function (a macro's target)
    function: str  # the fixture function a frame must name, at its `site` line
    site_api: str  # the api of that `site` comment
    stdout: str  # what the program prints when it survives; the clean twin always does
    inline_headers: Tuple[str, ...] = ()
    thread: str = "main"  # or "raw": a pthread that never had a thread state

    @property
    def clean(self):
        return self.program.replace("_without_gil", "_with_gil")


DEFECTS = [
    Defect("getattr", "print(m.getattr_without_gil(5))\n", ("PyObject_GetAttrString",),
           "getattr_without_gil", "PyObject_GetAttrString", "5"),
    Defect("long", "print(m.long_without_gil())\n", ("PyLong_FromLong",), "long_without_gil",
           "PyLong_FromLong", "1234567"),
    Defect("error", "try:\n    m.error_without_gil()\nexcept ValueError:\n    print('raised')\n",
           ("PyErr_SetString",), "error_without_gil", "PyErr_SetString", "raised"),
    Defect("build", "print(m.build_without_gil())\n", ("Py_BuildValue", "_Py_BuildValue_SizeT"),
           "build_without_gil", "Py_BuildValue", "(1, 2.5, 'x', 3)"),
    # Py_DECREF is inline: the frame may name the header that holds it.
    Defect("dealloc", "print(m.dealloc_without_gil())\n", ("_Py_Dealloc",), "dealloc_without_gil",
           "_Py_Dealloc", "None", inline_headers=("object.h", "refcount.h")),
    Defect("format", "print(m.format_without_gil())\n", ("PyOS_snprintf",), "format_without_gil",
           "PyOS_snprintf", "1 2.5 x"),
    Defect("raw_thread", "items = []\nm.raw_thread_without_gil(items)\nprint(items)\n",
           ("PyList_Append",), "append_on_raw_thread", "PyList_Append", "[7]", thread="raw"),
]


def crashed(result):
    """The program died of a signal (its status as the shell reports it), as it may without
    extsan: its report then has the deadly-signal finding."""
    return result.returncode in (-signal.SIGSEGV, 128 + signal.SIGSEGV, -signal.SIGABRT,
                                 128 + signal.SIGABRT, -signal.SIGBUS, 128 + signal.SIGBUS)


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: d.id)
def test_defect_is_reported_before_the_call(run, defect):
    """One call-without-gil finding with the function's name, the thread, and a stack that names
    the defect's line; the program then does what it does without extsan: it survives and
    prints what the twin prints, or it crashes and the crash is a finding too."""
    result = run(PRELUDE + defect.program)
    pid = program_pid(result)
    (finding,) = result.findings(CALL)
    where = json.dumps(finding, indent=1)
    assert finding["api"] in defect.apis and finding["pid"] == pid and finding["count"] == 1, where
    assert "capsule" not in finding, where
    thread = finding["thread"]
    if defect.thread == "main":
        assert thread["tid"] == pid and thread["python_thread_state"] is True, where
        # The Python code that called into the extension, read from the thread's own frames.
        assert [f["function"] for f in finding["python_stack"]] == ["<module>"], where
        assert finding["python_stack"][0]["file"] == "<string>", where
    else:
        assert thread["tid"] != pid and thread["python_thread_state"] is False, where
        assert finding.get("python_stack") in (None, []), where
    check_stack(finding, defect.function, api=defect.site_api, module="call_defects",
                inline_headers=defect.inline_headers)
    assert "%s: %s was called without the GIL" % (CALL, finding["api"]) in result.stderr, result.describe()
    if crashed(result):
        (death,) = result.findings("deadly-signal")
        assert death["pid"] == pid, result.describe()
    else:
        assert result.returncode == 0, result.describe()
        assert result.stdout.splitlines()[1:] == [defect.stdout], result.describe()
        assert result.findings("deadly-signal") == [], result.describe()


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: d.id)
def test_clean_twin_is_silent(run, defect):
    result = run(PRELUDE + defect.clean)
    result.check_silent(program_pid(result))
    assert result.stdout.splitlines()[1:] == [defect.stdout], result.describe()


def test_variadic_arguments_pass_through_the_slow_path(run):
    """PyOS_snprintf without the GIL (reported, then called): an int, a double in %xmm0 with
    %al = 1, and a string reach it intact; with the GIL (the fast path) too."""
    result = run(PRELUDE + "print(m.format_without_gil(), m.format_with_gil(), m.build_with_gil())\n")
    assert result.returncode == 0, result.describe()
    assert result.stdout.splitlines()[1:] == ["1 2.5 x 1 2.5 x (1, 2.5, 'x', 3)"], result.describe()
    assert [f["api"] for f in result.findings(CALL)] == ["PyOS_snprintf"], result.describe()


def test_check_calls_off(run):
    result = run(PRELUDE + DEFECTS[-2].program, extsan_args=["--no-check-calls"])
    result.check_silent(program_pid(result))


def test_suppressed_by_its_kind(run, tmp_path):
    rules = tmp_path / "calls.supp"
    rules.write_text("call-without-gil:PyOS_snprintf\n")
    result = run(PRELUDE + "print(m.format_without_gil())\n",
                 env={"EXTSAN_OPTIONS": "suppressions=%s" % rules})
    assert result.returncode == 0, result.describe()
    (finding,) = result.findings(CALL)
    assert finding["suppressed"] == "call-without-gil:PyOS_snprintf", result.describe()
    assert "call-without-gil: PyOS_snprintf" not in result.stderr, result.describe()


STDLIB_WORK = """\
import threading, json, zlib, hashlib, sqlite3, ctypes, decimal, array, select, time
def work(i):
    data = json.dumps({"i": i, "xs": list(range(100))}).encode()
    zlib.decompress(zlib.compress(data))
    hashlib.sha256(data * 100).hexdigest()
    con = sqlite3.connect(":memory:")
    con.execute("create table t(x)")
    con.executemany("insert into t values (?)", [(j,) for j in range(50)])
    con.close()
    decimal.Decimal(i) / 7
    array.array("d", range(100)).tobytes()
    select.select([], [], [], 0.001)
    time.sleep(0.001)
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
ctypes.CDLL(None).getpid()
print("done")
"""


def test_stdlib_extensions_in_threads_are_silent(run):
    """The standard library's extensions release the GIL around blocking work (zlib, hashlib,
    sqlite3, select, sleep) from many threads: none of their calls is reported."""
    result = run(STDLIB_WORK)
    assert result.returncode == 0, result.describe()
    assert result.findings(CALL) == [], result.describe()


# ---- the binding libraries' objects ---------------------------------------------------------


class BindingDefect(NamedTuple):
    id: str
    module: str
    defect: str  # the module's function that makes the defect
    twin: str
    function: str  # the fixture's C++ function a frame must name


BINDING_DEFECTS = [
    # nb::object's last reference dropped in nb::gil_scoped_release (a release build: nanobind's
    # debug builds abort on it themselves).
    BindingDefect("nanobind", "nb_capsule", "object_dies_in_released_scope",
                  "object_dies_after_released_scope", "nb_object_dies_in_released_scope"),
    # py::object copied in py::gil_scoped_release, the copy dropped last. The copy itself is an
    # inline Py_INCREF: no call, nothing for extsan to see until the count reaches zero.
    BindingDefect("pybind11", "pb_capsule", "object_copied_in_released_scope",
                  "object_copied_with_gil", "pb_object_copied_in_released_scope"),
]


def binding_program(defect, function):
    return PRELUDE.replace("import call_defects as m", "import %s as b" % defect.module) + \
        "b.%s()\nprint('done')\n" % function


def check_binding_defect(run, defect):
    result = run(binding_program(defect, defect.defect))
    pid = program_pid(result)
    (finding,) = result.findings(CALL)
    assert finding["api"] == "_Py_Dealloc" and finding["pid"] == pid, result.describe()
    check_stack(finding, defect.function, api="_Py_Dealloc", module=defect.module,
                inline_headers=("object.h", "refcount.h", "nb_types.h", "pytypes.h"))
    if crashed(result):
        assert result.findings("deadly-signal"), result.describe()
    else:
        assert result.returncode == 0 and result.stdout.splitlines()[1:] == ["done"], result.describe()

    twin = run(binding_program(defect, defect.twin))
    twin.check_silent(program_pid(twin))


@pytest.mark.pythons(*NANOBIND_IDS)
def test_nanobind_object_freed_without_gil(run):
    check_binding_defect(run, BINDING_DEFECTS[0])


def test_pybind11_object_copied_without_gil(run):
    check_binding_defect(run, BINDING_DEFECTS[1])

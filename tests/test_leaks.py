"""The reference-leak check (detector/heap/leak_check.c): objects a repeated piece of work
leaves alive, kept by references nothing explains, found on release builds of every Python of
the matrix, with the code that made them; each planted leak of tests/fixtures/leak_defects.c has
a clean twin that stays silent, as do a cache filled once, a dict memo and interned strings.

The checks run through extsan.leaks.check_leaks (the Python API) under `extsan run`, and through
the pytest plugin's --extsan-leaks=N and its marker."""
import json

import pytest

from conftest import NANOBIND_IDS, ROOT
from pytest_projects import run_pytest, write_project

# (case, call, the leaked type or None for a twin, the extension function that made it: None
# for the object a Py_INCREF too many leaks, which the Python code made)
CASES = [
    ("extra_incref", "m.extra_incref(object())", "object", None),
    ("extra_incref_twin", "m.same_ref(object())", None, None),
    ("error_path", "expect_error(m.error_path_list, True)", "list", "build_then_fail"),
    ("error_path_twin", "expect_error(m.error_path_list_fixed, True)", None, None),
    ("append", "m.append_new_ref([])", "int", "append_number"),
    ("append_twin", "m.append_released([])", None, None),
    ("cache_once", "m.cache_once()", None, None),
    ("memo", "m.memo(object())", None, None),
    ("memo_strings", "m.memo(str(next(counter)))", None, None),
    ("interned", "m.interned()", None, None),
    ("python_cache", "python_cache.append(object())", None, None),
    ("c_field", "python_cache.append(m.field_dict_holding())", None, None),
    ("busy_thread", "busy_thread()", None, None),
    ("thread_not_started", "_thread.start_new_thread(hold, ([],))", None, None),
    ("instance_dict", "python_cache.append(with_dict())", None, None),
    ("instance_dict_incref", "m.extra_incref(with_dict())", "Plain", None),
]

PROGRAM = """
import _thread, itertools, json, queue, sys, threading
import leak_defects as m
from extsan.leaks import check_leaks
counter = itertools.count(10**6)
python_cache = []

# Threads started before the checks run each repetition's job past its end (a test that does not
# wait for its work): what a running frame holds on its value stack (the dict) and its frame
# object are explained by the frame. The idle ones wait in frames whose objects' memory is stale
# (3.11+): read, it would hide the planted leaks.
jobs, release = queue.Queue(), threading.Event()
def serve():
    for job in iter(jobs.get, None):
        job()
workers = [threading.Thread(target=serve) for _ in range(4)]
for worker in workers:
    worker.start()

def wait_for_release(started):
    sys._getframe()
    started.set()
    release.wait()

def busy_thread():
    started = threading.Event()
    jobs.put(lambda: [dict(), wait_for_release(started)])
    started.wait()

# A thread a repetition starts holds its arguments (in C) before its first frame: it waits for the
# GIL, which the checks never give up within a switch interval this long.
sys.setswitchinterval(1000)
def hold(held):
    pass

def expect_error(function, argument):
    try:
        function(argument)
    except ValueError:
        return
    raise AssertionError("no error")

# Work that cannot be repeated (it leaks, then fails on its second call): the check ends
# without findings and the error propagates; the checks after it work.
calls = []
# An instance whose __dict__ was asked for: from 3.13 its traverse shows its values, not the dict
# it holds.
class Plain:
    pass
def with_dict():
    made = Plain()
    made.value = object()
    made.__dict__
    return made

def once_only():
    calls.append(m.append_new_ref([]))
    if len(calls) > 1:
        raise RuntimeError("once only")
try:
    check_leaks(once_only, repeat=3)
except RuntimeError as error:
    print(json.dumps(["unrepeatable", str(error)]), flush=True)

cases = {%s}
for case, work in cases.items():
    found = check_leaks(work, repeat=3)
    print(json.dumps([case, found]), flush=True)
release.set()
for worker in workers:
    jobs.put(None)
"""


BINDING_CASES = {
    "nb_gc": [("nb_inc_ref", "b.leak_inc_ref(object())", "object", None),
              ("nb_inc_ref_twin", "b.borrow(object())", None, None)],
    "pb_gc": [("pb_handle", "b.leak_new_handle()", "list", "pb_gc"),
              ("pb_handle_twin", "b.steal_new_object()", None, None)],
}

BINDING_PROGRAM = """
import json
import %s as b
from extsan.leaks import check_leaks
cases = {%s}
for case, work in cases.items():
    print(json.dumps([case, check_leaks(work, repeat=3)]), flush=True)
"""


def leak_env(fixtures):
    """The fixture modules and extsan's Python package (extsan.leaks) on PYTHONPATH."""
    return {"PYTHONPATH": "%s:%s" % (fixtures, ROOT / "scripts" / "python")}


def first_extension_function(frames):
    return next((f.get("function") for f in frames if f.get("in_extension")), None)


@pytest.fixture
def leak_run(run, fixtures):
    code = PROGRAM % ", ".join("%r: lambda: %s" % (case, call) for case, call, _, _ in CASES)
    result = run(code=code, env=leak_env(fixtures))
    assert result.returncode == 0, result.describe()
    return result, {json.loads(line)[0]: json.loads(line)[1] for line in result.stdout.splitlines()}


def test_planted_leaks_are_found_and_their_twins_are_silent(leak_run):
    result, found = leak_run
    assert found["unrepeatable"] == "once only", result.describe()
    for case, call, leaked_type, function in CASES:
        if leaked_type is None:
            assert found[case] == [], "%s (%s) is clean\n%s" % (case, call, result.describe())
            continue
        assert [f["type"] for f in found[case]] == [leaked_type], \
            "%s (%s)\n%s" % (case, call, result.describe())
        (finding,) = found[case]
        assert finding["per_repetition"] == 1 and finding["repetitions"] == 3, finding
        assert finding["unexplained_references"] >= 1, finding
        assert first_extension_function(finding["stack"]) == function, finding["stack"]
        assert any(frame.get("function") == "<lambda>" for frame in finding["python_stack"]), finding


def test_leaks_reach_the_reports(leak_run):
    """Each leak found is a finding of the process's report, its headline in the text; the check
    whose work failed in a repetition reported nothing."""
    result, found = leak_run
    wanted = sorted(t for _, _, t, _ in CASES if t)
    assert sorted(f["type"] for f in result.findings("reference-leak")) == wanted, result.describe()
    assert "reference-leak: 1 list object leaked per repetition" in result.stderr, result.describe()


LEAKY_TESTS = """
import threading, unittest
import pytest, leak_defects as m

def test_leaks():
    with pytest.raises(ValueError):
        m.error_path_list(True)

def test_clean():
    with pytest.raises(ValueError):
        m.error_path_list_fixed(True)
    m.memo(object())

@pytest.mark.extsan(leaks=0)
def test_leaks_unchecked():
    m.extra_incref(object())

@pytest.mark.extsan(leaks=2)
def test_marked():
    m.append_new_ref([])

# Tests that cannot be repeated: their state is set up once (per module).
runs = {"function": 0, "case": 0}

def test_once_only():
    runs["function"] += 1
    assert runs["function"] == 1, "ran %d times" % runs["function"]

# A thread it starts waits until the session ends, holding what it made.
stop = threading.Event()

def test_threads_left_running():
    threading.Thread(target=lambda held: stop.wait(), args=([object()],), daemon=True).start()

class TestCaseStyle(unittest.TestCase):
    def setUp(self):
        self.kept = []

    def test_case_leaks(self):
        m.append_new_ref([])

    def test_case_clean(self):
        m.append_released(self.kept)

    def test_case_once_only(self):
        runs["case"] += 1
        self.assertEqual(runs["case"], 1)

    @unittest.skipIf(True, "planted skip")
    def test_case_skipped(self):
        pass
"""


@pytest.mark.parametrize("leaks, workers", [(None, 0), (2, 0), (2, 2)],
                         ids=["marker-only", "option", "option-xdist"])
def test_pytest_leaks_option_fails_the_leaking_test(python, fixtures, tmp_path, leaks, workers):
    """--extsan-leaks=N fails the test whose repetitions leak, naming the leak, a unittest
    TestCase's test too (run with its setUp); the clean tests pass, leaks=0 turns the check off
    for a test, leaks=2 turns it on without the option. A test whose repetition fails (a function
    or a TestCase's) keeps its first run's outcome and is listed as not checked, by the
    pytest-xdist controller too."""
    args = ["-p", "extsan_pytest", "-rf"] + (["--extsan-leaks=%d" % leaks] if leaks else []) + \
        (["-n", str(workers)] if workers else [])
    project = write_project(tmp_path / "project", {"test_leaky.py": LEAKY_TESTS})
    result = run_pytest(python, fixtures, project, args=args, under_extsan=False)
    failed = sorted(line.split()[1].split("::")[-1] for line in result.stdout.splitlines()
                    if line.startswith("FAILED "))
    expected = ["test_case_leaks", "test_leaks", "test_marked"] if leaks else ["test_marked"]
    assert failed == expected, result.describe()
    assert "passed, 1 skipped" in result.stdout.splitlines()[-1], result.describe()
    assert "extsan: reference leaks in test_leaky.py::test_marked" in result.stdout, result.describe()
    # The skipped TestCase test's warm-up has nothing to repeat: its check ends without a word.
    assert "the reference-leak check" not in result.stdout + result.stderr, result.describe()
    # Those that cannot be repeated pass, as their first run did, and are listed as not checked.
    unrepeatable = ["test_leaky.py::test_once_only: repetition 1 of 2: AssertionError: ran 2 times",
                    "test_leaky.py::test_threads_left_running: threads its repetitions started "
                    "still run",
                    "test_leaky.py::TestCaseStyle::test_case_once_only: repetition 1 of 2: "
                    "AssertionError: 2 != 1"]
    if leaks:
        assert "extsan: 3 tests not checked for reference leaks" in result.stdout, result.describe()
    for line in unrepeatable:
        assert (line in result.stdout.splitlines()) == bool(leaks), result.describe()


def check_cases(cases, found, describe):
    for case, call, leaked_type, function in cases:
        if leaked_type is None:
            assert found[case] == [], "%s (%s) is clean\n%s" % (case, call, describe())
            continue
        assert [f["type"] for f in found[case]] == [leaked_type], "%s (%s)\n%s" % (case, call, describe())
        frame = next((f for f in found[case][0]["stack"] if f.get("in_extension")), None)
        if function is None:
            assert frame is None, found[case]
        else:
            assert frame is not None and function in frame["module"], found[case]


def check_binding(run, fixtures, module):
    cases = BINDING_CASES[module]
    code = BINDING_PROGRAM % (module, ", ".join("%r: lambda: %s" % (c, call) for c, call, _, _ in cases))
    result = run(code=code, env=leak_env(fixtures))
    assert result.returncode == 0, result.describe()
    found = {json.loads(line)[0]: json.loads(line)[1] for line in result.stdout.splitlines()}
    check_cases(cases, found, result.describe)


@pytest.mark.pythons(*NANOBIND_IDS)
def test_nanobind_inc_ref_is_found_and_its_twin_is_silent(run, fixtures):
    """nb::handle::inc_ref() on an argument leaks it (an object the caller's Python code made:
    no extension frame allocated it); its twin, which only borrows, is silent."""
    check_binding(run, fixtures, "nb_gc")


def test_pybind11_handle_is_found_and_its_twin_is_silent(run, fixtures):
    """A py::handle made from a new reference never releases it (the list is allocated in the
    module); its twin steals the reference into a py::object and is silent."""
    check_binding(run, fixtures, "pb_gc")


@pytest.mark.pythons("3.12", "debian3.11")
def test_one_repetition_is_refused(python, fixtures, tmp_path):
    """One measured repetition cannot tell a leak from a cache of the latest value: the option
    and the marker refuse it with one line each, and check_leaks with a ValueError."""
    project = write_project(tmp_path / "project", {"test_one.py": """
import pytest

@pytest.mark.extsan(leaks=1)
def test_marked_once():
    pass
"""})
    option = run_pytest(python, fixtures, project, args=["-p", "extsan_pytest", "--extsan-leaks=1"],
                        under_extsan=False)
    assert option.returncode == 4, option.describe()
    assert "--extsan-leaks=1: 0 (off) or a number of repetitions of 2 or more" in option.stderr, \
        option.describe()
    marker = run_pytest(python, fixtures, project, args=["-p", "extsan_pytest", "-rE", "-rf"],
                        under_extsan=False)
    assert marker.returncode == 1, marker.describe()
    assert "leaks: 1 is not 0 (off) or a number of repetitions of 2 or more" in marker.stdout, \
        marker.describe()


SUBINTERPRETER_PROGRAM = """
import json
try:
    import _interpreters as interpreters
except ImportError:
    import _xxsubinterpreters as interpreters
from extsan.leaks import check_leaks
sub = interpreters.create()
interpreters.run_string(sub, "kept = []")
found = check_leaks(lambda: interpreters.run_string(sub, "kept.append([object()])"), repeat=2)
interpreters.destroy(sub)
print(json.dumps(found))
"""


@pytest.mark.pythons("3.12", "3.13")
def test_a_subinterpreters_objects_are_not_checked(run, fixtures):
    """Objects a subinterpreter keeps live in its own heap, which the survey does not see: they
    are not recorded, so the list its __main__ keeps per repetition is no leak."""
    result = run(code=SUBINTERPRETER_PROGRAM, env={"PYTHONPATH": str(ROOT / "scripts" / "python")})
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout.splitlines()[-1]) == [], result.describe()


SET_ASIDE_PROGRAM = """
import gc, json
import leak_defects as m
from extsan.leaks import check_leaks
frozen = gc.get_freeze_count()  # pyenv's 3.12.1 starts with some
made_before = [[] for _ in range(1000)]
cycle = []
cycle.append(cycle)
seen = []
def work():
    seen.append(gc.get_freeze_count())
    m.append_new_ref([])
def work_frozen():  # another leak: one finding per type and site, and the first is found
    seen.append(gc.get_freeze_count())
    m.extra_incref(object())
def visible(objects):
    ids = {id(o) for o in gc.get_objects()}
    return [id(o) in ids for o in objects]
report = {"first": [f["type"] for f in check_leaks(work, repeat=2)]}
report["first_seen"] = [count == frozen for count in seen]
report["first_visible"] = all(visible(made_before))
del cycle
report["cycle_collected"] = gc.collect() >= 1

frozen_cache = []
gc.freeze()  # the program's own: it stays frozen, the check finds what it found
frozen = gc.get_freeze_count()
seen.clear()
report["second"] = [f["type"] for f in check_leaks(work_frozen, repeat=2)]
report["second_seen"] = [count == frozen for count in seen]
report["second_after"] = gc.get_freeze_count() == frozen
# what a frozen object keeps is explained by it, though gc.get_objects() does not list it
report["frozen_cache"] = check_leaks(lambda: frozen_cache.append([object()]), repeat=2)
gc.unfreeze()

check_leaks(gc.freeze, repeat=2)  # frozen inside the work: the whole heap is frozen, as bare
report["frozen_inside_visible"] = any(visible(made_before))
print(json.dumps(report))
"""


def test_the_heap_set_aside_during_a_check_comes_back_as_it_was(run, fixtures):
    """The check sets the program's heap aside from the collector during its repetitions (only
    what they make is examined by its collections): the work sees no objects frozen that the
    program did not freeze, objects the program froze stay frozen, and afterwards every object
    is where a bare run would have it (collectable, listed by gc.get_objects(), frozen when the
    work called gc.freeze()). A frozen list's items are explained by it: a cache, no leak. The
    generations' layout is verified on each Python of the matrix."""
    result = run(code=SET_ASIDE_PROGRAM, extsan_args=["--verbosity", "1"],
                 env=leak_env(fixtures))
    assert result.returncode == 0, result.describe()
    assert "the collector's generations can be set aside" in result.stderr, result.describe()
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "first": ["int"], "first_seen": [True, True, True], "first_visible": True, "cycle_collected": True,
        "second": ["object"], "second_seen": [True, True, True], "second_after": True,
        "frozen_cache": [], "frozen_inside_visible": False,
    }, result.describe()


FREE_LIST_PROGRAM = """
import json
import leak_defects as m
from extsan.leaks import check_leaks
def work():
    assert len([0, 1]) == 2  # a list that dies at once: the runtime keeps its memory for the next
    try:
        m.error_path_list(True)  # whose new list is that memory, then leaked
    except ValueError:
        pass
print(json.dumps(check_leaks(work, repeat=3)))
"""


@pytest.mark.pythons("3.13")
def test_a_leak_made_from_a_free_list_names_the_code_that_made_it(run, fixtures):
    """The runtime makes a list from the memory of one that just died (its free list), not from
    the allocator: the leaked list's site is the C function that made it, not the Python line
    whose list had the memory first (3.13+, through the runtime's reference tracer)."""
    result = run(code=FREE_LIST_PROGRAM,
                 env=leak_env(fixtures))
    assert result.returncode == 0, result.describe()
    (finding,) = json.loads(result.stdout.splitlines()[-1])
    assert finding["type"] == "list" and finding["per_repetition"] == 1, finding
    assert first_extension_function(finding["stack"]) == "build_then_fail", finding["stack"]


TRACER_PROGRAM = """
import json
import leak_defects as m
from extsan.leaks import check_leaks
m.count_objects_made()
counted = []
def work():
    start = m.objects_made()
    made = [object() for _ in range(100)]
    counted.append(m.objects_made() - start)
found = check_leaks(work, repeat=2)
print(json.dumps([found, counted, m.counting_tracer_installed()]))
"""


@pytest.mark.pythons("3.13")
def test_the_programs_reference_tracer_sees_every_object_during_a_check(run, fixtures):
    """The check's reference tracer passes each event on to the one the program had installed,
    and puts it back at the end."""
    result = run(code=TRACER_PROGRAM,
                 env=leak_env(fixtures))
    assert result.returncode == 0, result.describe()
    found, counted, installed = json.loads(result.stdout.splitlines()[-1])
    assert found == [] and installed is True, result.describe()
    assert len(counted) == 3 and min(counted) >= 100, counted  # the warm-up and 2 repetitions

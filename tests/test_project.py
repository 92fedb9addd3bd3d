"""Checks on the project itself: the README stays true to the code, the C unit tests pass, the
C sources keep the checked-in format."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"


def test_readme_options_table_is_the_c_table():
    generated = subprocess.run([str(BUILD / "extsan-options"), "markdown"], check=True,
                               stdout=subprocess.PIPE, text=True).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- options-table:begin -->\n(.*?)\n<!-- options-table:end -->", readme, re.S)
    assert match, "README.md lost its options-table markers"
    assert match.group(1).strip() == generated, "README options table differs from detector/runtime/options.def"


def test_readme_starts_with_the_two_commands_then_install_and_use():
    """The README starts with the two commands of a checkout (the demo, the whole test suite),
    then what a user of extsan types in their own project."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)[:2]
    commands = [[line.split("#")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]
    assert commands == [["scripts/extsan demo", "scripts/run-tests"],
                        ["pip install /path/to/extsan", "extsan run -- python -m pytest",
                         "pytest --extsan"]]
    ci = (ROOT / ".ci/run").read_text()
    assert "scripts/run-tests" in ci


UNIT_SOURCES = sorted((ROOT / "tests" / "unit").glob("test_*.c"))


def run_unit_test(source, *args):
    """Runs the program meson.build makes of tests/unit/test_NAME.c, build/test-NAME (with '_'
    turned into '-'), and fails unless its checks all passed, and there were some."""
    program = BUILD / ("test-" + source.stem[len("test_"):].replace("_", "-"))
    assert program.exists(), "%s is not built: is it registered in meson.build?" % program
    result = subprocess.run([str(program), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert re.search(r"^[1-9]\d* passed, 0 failed$", result.stdout, re.M), result.stdout


@pytest.mark.parametrize("source", UNIT_SOURCES, ids=lambda source: source.stem)
def test_c_unit_tests_pass(source):
    run_unit_test(source)


def test_c_sources_are_formatted():
    clang_format = shutil.which("clang-format")
    if clang_format is None:
        pytest.fail("clang-format is not installed (scripts/install-deps installs it)")
    sources = sorted(str(p) for d in ["shim", "detector/*", "tests/unit", "tests/bench", "tests/fixtures"]
                     for p in ROOT.glob(d + "/*") if p.suffix in {".c", ".h", ".cpp"})
    assert UNIT_SOURCES and all(str(source) in sources for source in UNIT_SOURCES), sources
    result = subprocess.run([clang_format, "--dry-run", "-Werror", *sources],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout[:2000]

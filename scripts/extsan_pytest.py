"""extsan's pytest plugin from a checkout: `-p extsan_pytest` with scripts/ on PYTHONPATH (the
tests' pytest projects use it). Loaded this way the plugin checks the run unless told not to
(ini `extsan = false`, `--no-extsan`); installed, pytest loads extsan.pytest_plugin by its
pytest11 entry point and checks a run when asked (`--extsan`, ini `extsan = true`).
See scripts/python/extsan/pytest_plugin.py."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "python"))

from extsan import pytest_plugin  # noqa: E402

pytest_plugin.ON_BY_DEFAULT = True

from extsan.pytest_plugin import pytest_addoption, pytest_configure, pytest_load_initial_conftests  # noqa: E402,F401

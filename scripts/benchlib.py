"""What extsan's benchmark scripts share: building tests/bench for an interpreter, running a
workload with and without the shim, and alternating runs so that drift in machine load hits
both alike. Benchmarks print ratios measured in one invocation; they assert nothing."""
import os
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
DEPS = BUILD / "deps"


def python_version(python):
    out = subprocess.check_output([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.decode().strip()


def build_shim():
    subprocess.run([str(ROOT / "scripts/extsan"), "build"], check=True)


def build_workloads(python):
    """Builds tests/bench for `python` (once; then incrementally) and returns the build dir."""
    build_dir = BUILD / f"bench-{Path(python).resolve().as_posix().replace('/', '_')}"
    if not (build_dir / "build.ninja").exists():
        subprocess.run(["meson", "setup", str(build_dir), str(ROOT / "tests/bench"),
                        f"-Dpython={python}", f"-Ddeps={DEPS}"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["meson", "compile", "-C", str(build_dir)], check=True, stdout=subprocess.DEVNULL)
    return build_dir


def environment(build_dir, preload, options=""):
    """The workload's environment: PYTHONPATH on the build dir, the shim preloaded or not."""
    env = dict(os.environ, PYTHONPATH=str(build_dir))
    for name in ("LD_PRELOAD", "EXTSAN_OPTIONS"):
        env.pop(name, None)
    if preload:
        env["LD_PRELOAD"] = str(BUILD / "libextsan.so")
        env["EXTSAN_OPTIONS"] = options
    return env


def run_timed(python, script, arguments, env):
    """Runs `python -c script arguments`; returns (the float its last stdout line prints, the
    process's wall time)."""
    start = time.perf_counter()
    out = subprocess.run([python, "-c", script, *map(str, arguments)], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return float(out.strip().splitlines()[-1]), time.perf_counter() - start


def alternate(repeat, plain_run, extsan_run):
    """Runs both variants `repeat` times, alternating; returns the medians
    (plain workload, extsan workload, plain process, extsan process)."""
    plain, instrumented = [], []
    for _ in range(repeat):
        plain.append(plain_run())
        instrumented.append(extsan_run())
    return (statistics.median(t for t, _ in plain), statistics.median(t for t, _ in instrumented),
            statistics.median(w for _, w in plain), statistics.median(w for _, w in instrumented))

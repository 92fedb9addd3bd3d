"""Writing report files so that no reader ever sees half of one, and checking beforehand that
they can be written (so that an unwritable path fails before a long test run, not after it)."""

import json
import os
import tempfile

from .common import Failure, rel


def check_writable(flag, given):
    """Fails (naming the flag) when the file `given` could not be written by write_atomically."""
    path = os.path.abspath(given)
    directory = os.path.dirname(path)
    if os.path.isdir(path) and not os.path.islink(path):
        raise Failure("%s %s: is a directory" % (flag, given))
    if not os.path.isdir(directory):
        raise Failure("%s %s: directory %s does not exist" % (flag, given, directory))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise Failure("%s %s: directory %s is not writable" % (flag, given, directory))


def write_atomically(path, text):
    """Writes a temporary file beside path, then renames it over path (a symlink is replaced,
    not followed), so a reader never sees half a file."""
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    if os.path.isdir(path) and not os.path.islink(path):
        raise Failure("%s: is a directory" % rel(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=directory)
    except OSError as e:
        raise Failure("cannot write %s: %s" % (rel(path), e.strerror or e))
    try:
        # A report's strings may hold the escapes of bytes that were not UTF-8 (\udcff for
        # byte 0xff, as Python's surrogateescape decodes them): written as that text.
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
            f.flush()
            # mkstemp makes the file 0600; a report is as readable as any file the user writes.
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise Failure("cannot write %s: %s" % (rel(path), e.strerror or e))


def write_json_atomically(path, document):
    write_atomically(path, json.dumps(document, indent=2) + "\n")


def current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

"""What every module of the extsan package shares: the failure convention and message helpers."""

import os

EXIT_FAILURE = 125  # extsan's own failure, never CMD's

# A run's log directory: rwx for its owner, write and search (no listing) for others, sticky: a
# process of the run that runs as another user (a test dropping privileges with user=/group=)
# can create its report there, and no other user can list it or remove a file it did not create.
LOG_DIR_MODE = 0o1733


class Failure(Exception):
    """A failure of extsan itself: the CLI prints 'extsan: <message>' and exits 125."""


def rel(path):
    """path relative to the current directory when that is shorter, for messages."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if len(relative) < len(path) else path


def first_line(text):
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def plural(count, singular, plural_form=None):
    """'1 new finding', '2 new findings'."""
    if count == 1:
        return "%d %s" % (count, singular)
    return "%d %s" % (count, plural_form or singular + "s")

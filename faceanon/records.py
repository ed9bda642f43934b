"""Where a job keeps its private records, and reading them back.

Every job (``anonymize``, ``restore``, ``pack``, ``unpack``, ``prepare``) writes its manifest,
run record and, when it pseudonymized names, the name mapping into one folder beside its
output, never inside it: ``OUT.private/`` for a folder ``OUT`` and ``OUT.h5.private/`` for an
archive.
Why: these records list every input path, each input's SHA-256 and the real names, which is
exactly what must not travel with an anonymized dataset; a user can publish ``OUT`` as it is.
The folder is made mode 0700 and its files 0600, since they re-identify what ``OUT`` hides.
One rule for every job keeps resume, ``eval`` and ``audit`` simple: they look in one place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from faceanon.fsutil import atomic_write_text

PRIVATE_SUFFIX = ".private"
MANIFEST, RUN, NAMES = "manifest.jsonl", "run.json", "names.json"
PEOPLE = "people.sealed"  # a video run's people, sealed (faceanon.people)
PRIVATE_MODE, FILE_MODE = 0o700, 0o600

# Manifest statuses. ``failed`` entries are retried on resume; the others are final.
OK, NO_FACE, SKIPPED, FAILED = "ok", "no_face", "skipped", "failed"


def private_dir(out: str | Path) -> Path:
    """The private record folder of the output ``out`` (folder or archive)."""
    out = Path(out)
    return out.with_name(out.name + PRIVATE_SUFFIX)


def make_private_dir(out: str | Path) -> Path:
    """Create (or tighten) the private record folder: owner-only access."""
    path = private_dir(out)
    path.mkdir(mode=PRIVATE_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Atomically write one private record file, readable by its owner only."""
    atomic_write_text(path, text, mode=FILE_MODE)


def read_run(out: str | Path) -> dict[str, Any] | None:
    """The run record of ``out``, or None when there is none (or it is unreadable)."""
    path = private_dir(out) / RUN
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def recorded_input(out: str | Path) -> Path | None:
    """The input that ``out`` was made from, as its run record names it (absolute)."""
    run = read_run(out)
    return Path(run["input"]) if run and run.get("input") else None


def manifest_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a manifest file; a line torn by a kill is passed over."""
    for raw in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        try:
            yield json.loads(raw)
        except json.JSONDecodeError:
            continue


def read_manifest(out: str | Path) -> list[dict[str, Any]]:
    """The manifest records of ``out`` (empty when there is none)."""
    path = private_dir(out) / MANIFEST
    return list(manifest_lines(path)) if path.is_file() else []


def output_paths(out: str | Path) -> dict[str, str]:
    """Input relative path → output relative path, for every input that was written."""
    return {rec["path"]: rec["output"] for rec in read_manifest(out) if "output" in rec}


def read_names(out: str | Path) -> dict[str, str]:
    """Real name → pseudonym of a pseudonymizing run (empty when names were kept)."""
    path = private_dir(out) / NAMES
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
    except (OSError, json.JSONDecodeError):
        return {}


class Manifest:
    """``manifest.jsonl``: one line per input, appended as work finishes, compacted at the end.

    Each input's line is held as its JSON text with its status beside it, not as a parsed
    record: on LFW (13,233 inputs) parsed records took 20 MiB, which made a job's peak memory
    grow with the dataset; the text takes a tenth of that.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, tuple[str, str]] = {}  # input path -> (status, JSON line)
        if path.exists():
            for rec in manifest_lines(path):
                self._keep(rec)
        self.compact()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        self._fh = os.fdopen(fd, "a", encoding="utf-8", errors="surrogateescape")

    def _keep(self, rec: dict[str, Any]) -> str:
        line = json.dumps(rec, sort_keys=True) + "\n"
        self.lines[rec["path"]] = (rec["status"], line)
        return line

    def done(self, relpath: str) -> bool:
        kept = self.lines.get(relpath)
        return kept is not None and kept[0] != FAILED

    def add(self, rec: dict[str, Any]) -> None:
        self._fh.write(self._keep(rec))
        self._fh.flush()

    def compact(self) -> None:
        write_private(self.path, "".join(line for _, line in self.lines.values()))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
            self.compact()

    def counts(self) -> dict[str, int]:
        counts = {OK: 0, NO_FACE: 0, SKIPPED: 0, FAILED: 0}
        for status, _ in self.lines.values():
            counts[status] = counts.get(status, 0) + 1
        return counts

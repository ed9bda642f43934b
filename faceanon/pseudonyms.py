"""Keyed pseudonyms for the names in a dataset's paths and labels.

A face is not the only thing that identifies a person: LFW-style datasets name every folder and
file after the person in it (``George_W_Bush/George_W_Bush_0001.jpg``), and archives carry the
same names as labels. An anonymized output therefore replaces each such name with a pseudonym:
the first 80 bits of HMAC-SHA256 of the name, keyed with a subkey that HKDF derives from the
user's key under an ``info`` of its own (so the pseudonyms reveal nothing about the codes the
networks get, and vice versa), written with digits and consonants only: without vowels no
word, and so no name, can turn up inside a pseudonym by chance (in base32, 1 in 1,711 LFW
DevTest people got one containing "bono").

Why a keyed PRF and not a plain hash: a hash of a public name (a celebrity's, a list of staff)
can be recomputed by anyone and so re-identifies; without the key the pseudonyms are unrelated
random strings. Why not random pseudonyms: the same name under the same key must always give
the same pseudonym, so a person's folder and files stay grouped together (identity-level
research still works on the output) and a resumed or repeated run gives identical paths.

Paths are rewritten component by component: every folder name is pseudonymized, and in a file
name the trailing numeric index and the extension are kept and the rest is pseudonymized, so
``Name/Name_0001.jpg`` becomes ``<p>/<p>_0001.jpg`` with one pseudonym ``<p>`` for the folder and
the file. A file name that is only an index (``00017.png``) names no one and is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from faceanon.errors import FaceanonError
from faceanon.keys import Key

INFO = "faceanon/pseudonyms/v1"  # the HKDF info of the subkey: no other use of the key shares it
PSEUDONYM_BYTES = 10  # 80 bits: a collision among a million names has odds of about 4e-13
ALPHABET = "0123456789bcdfghjklmnpqrstvwxz"  # no vowels (nor y): no word can be spelt
LENGTH = 17  # len(ALPHABET) ** 17 > 2 ** 80

# A file stem: a name part, then an optional trailing index with its separator (kept as is).
_STEM = re.compile(r"^(?P<name>.*?)(?P<index>[_\-. ]?\d+)?$", re.DOTALL)


class Pseudonyms:
    """Pseudonymizes names and relative paths under one key, remembering what it mapped.

    ``mapping`` (name → pseudonym) is what the private run record keeps; two different names
    that would share a pseudonym raise an error instead of silently merging two people.
    """

    def __init__(self, key: Key) -> None:
        self._subkey = key.derive(INFO, 32)
        self.mapping: dict[str, str] = {}
        self._owner: dict[str, str] = {}  # pseudonym → the name it was made from

    def name(self, name: str) -> str:
        """The pseudonym of one name (17 digits and lowercase consonants)."""
        known = self.mapping.get(name)
        if known is not None:
            return known
        digest = hmac.new(self._subkey, os.fsencode(name), hashlib.sha256).digest()
        pseudonym = _spell(int.from_bytes(digest[:PSEUDONYM_BYTES], "big"))
        other = self._owner.setdefault(pseudonym, name)
        if other != name:
            raise FaceanonError(f"two names share the pseudonym {pseudonym}; "
                                "use another key or --keep-names")
        self.mapping[name] = pseudonym
        return pseudonym

    def path(self, relpath: str) -> str:
        """``relpath`` (POSIX, relative) with every folder and the file's name part replaced."""
        *folders, filename = relpath.split("/")
        name, rest = split_file_name(filename)
        return "/".join([self.name(f) for f in folders] +
                        [(self.name(name) if name else "") + rest])


def _spell(number: int) -> str:
    """``number`` in base len(ALPHABET), ``LENGTH`` characters."""
    chars = []
    for _ in range(LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def split_file_name(filename: str) -> tuple[str, str]:
    """A file name as (name part, the rest: trailing index and extension), so that
    ``George_W_Bush_0001.jpg`` → (``George_W_Bush``, ``_0001.jpg``) and ``0001.jpg`` → ("", …)."""
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        stem, ext = filename, ""
    match = _STEM.match(stem)
    assert match is not None  # the pattern matches every string
    return match.group("name"), (match.group("index") or "") + dot + ext


def name_parts(relpath: str) -> list[str]:
    """The parts of a relative path that may name someone: its folders and the file's name
    part (what ``Pseudonyms.path`` replaces)."""
    *folders, filename = relpath.split("/")
    name, _ = split_file_name(filename)
    return folders + ([name] if name else [])

"""``faceanon keygen`` and ``keyinfo``: make and check secret keys."""

from __future__ import annotations

from pathlib import Path

import typer

from faceanon.cli.base import app, emit_json, err, out, user_errors

@app.command()
@user_errors
def keygen(out_path: Path = typer.Option(Path("faceanon.key"), "--out", "-o",
                                         help="Where to write the key (mode 0600)."),
           bits: int = typer.Option(256, help="Key length in bits (at least 128)."),
           force: bool = typer.Option(False, help="Overwrite an existing key file."),
           json_out: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Make a new random secret key. Only its fingerprint is printed, never the key."""
    from faceanon import keys

    key = keys.generate(bits)
    keys.save(key, out_path, force=force)
    if json_out:
        emit_json({"path": str(out_path), "bits": key.bits, "fingerprint": key.fingerprint})
    else:
        out.print(f"wrote {out_path} ({key.bits}-bit key, fingerprint {key.fingerprint})")


@app.command()
@user_errors
def keyinfo(path: Path = typer.Argument(..., help="A key file from `faceanon keygen`."),
            json_out: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Check a key file and show its bit length, fingerprint, format version and creation time."""
    from faceanon import keys

    key = keys.load(path)
    if keys.readable_by_others(path):
        err.print(f"[yellow]warning:[/yellow] {path}: readable by group or others; "
                  f"run chmod 600 {path}", highlight=False)
    info = {"path": str(path), "bits": key.bits, "fingerprint": key.fingerprint,
            "format_version": keys.FORMAT_VERSION, "created": key.created_iso}
    if json_out:
        emit_json(info)
    else:
        for name, value in info.items():
            out.print(f"{name:>15}  {value}", highlight=False)

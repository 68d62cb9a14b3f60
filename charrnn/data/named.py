"""Named corpora (enwik8, text8, tinyshakespeare): downloaded once, verified by SHA-256, kept in a cache.

The catalogue is ``corpora/catalogue.json`` (installed as ``charrnn/corpora_data/catalogue.json``);
``CHARRNN_CATALOGUE=FILE`` replaces it, for tests and mirrors only. ``CHARRNN_DATA=DIR`` moves the
data directory. Downloads and extractions go to a temp file that is verified (size + SHA-256) before
it is renamed into place, so a partial or corrupt file never counts as the corpus; a marker file
(hash, size, mtime) remembers the verification so later runs do not rehash 100 MB.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import stat
import sys
import urllib.error
import urllib.request
import zipfile
import zlib

from charrnn.errors import CharrnnError
from charrnn.system.fileio import atomic_file, disk_op
from charrnn.system.progress import progress_bar, show_progress
from charrnn.version import __version__

DATA_FIX = "set CHARRNN_DATA to a writable directory with free space"

TIMEOUT = 60          # seconds a download may stall before it is given up
CHUNK = 1 << 20       # bytes read, hashed and written at a time
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # charrnn/
CATALOGUE_FILES = (
    os.path.join(_PACKAGE, "corpora_data", "catalogue.json"),               # installed (setup.cfg maps corpora/ here)
    os.path.join(os.path.dirname(_PACKAGE), "corpora", "catalogue.json"),  # a source checkout
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ----------------------------------------------------------------------------- the catalogue

def catalogue_path() -> str:
    env = os.environ.get("CHARRNN_CATALOGUE")
    if env:
        return env
    for path in CATALOGUE_FILES:
        if os.path.isfile(path):
            return path
    raise CharrnnError("the named-corpus catalogue (corpora/catalogue.json) is missing from this installation; "
                       "reinstall charrnn")


def catalogue() -> dict[str, dict]:
    """Every named corpus: {name: entry} exactly as the catalogue file gives it."""
    path = catalogue_path()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise CharrnnError(f"cannot read the corpus catalogue '{path}': {e.strerror}; check CHARRNN_CATALOGUE") from None
    except ValueError as e:
        raise CharrnnError(f"the corpus catalogue '{path}' is not valid JSON ({e}); fix it") from None
    corpora = data.get("corpora") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(corpora, dict):
        raise CharrnnError(f"the corpus catalogue '{path}' is not a format-1 catalogue "
                           "(see corpora/README.md); fix it")
    for name, e in corpora.items():
        problem = _entry_problem(e)
        if problem:
            raise CharrnnError(f"the corpus catalogue '{path}': entry '{name}' {problem}; fix it")
    return corpora


def _entry_problem(e) -> str | None:
    if not isinstance(e, dict):
        return "is not an object"
    for key in ("url", "file", "size", "sha256", "split", "tokenizer"):
        if key not in e:
            return f"lacks '{key}'"
    parts = [e] + ([e["member"]] if "member" in e else [])
    for p in parts:
        if not isinstance(p, dict) or not isinstance(p.get("size"), int) or p["size"] <= 0:
            return "needs a positive integer 'size'"
        if not isinstance(p.get("sha256"), str) or not _SHA256.fullmatch(p["sha256"]):
            return "needs a 'sha256' of 64 lowercase hex digits"
    for f in [e["file"]] + ([e["member"].get("name")] if "member" in e else []):
        if not isinstance(f, str) or not f or f != os.path.basename(f) or f.startswith("."):
            return f"names {f!r}, which is not a plain file name"
    if "member" in e and e["member"]["name"] == e["file"]:
        return "gives the zip and its member the same file name"
    v, t = (e["split"].get(k) if isinstance(e["split"], dict) else None for k in ("val_frac", "test_frac"))
    if not (isinstance(v, (int, float)) and isinstance(t, (int, float)) and 0 < v and 0 <= t and v + t < 1):
        return "needs 'split' with 'val_frac' > 0, 'test_frac' >= 0 and their sum below 1"
    if not isinstance(e["tokenizer"], str):
        return "needs a 'tokenizer' name"
    return None


def is_named(name: str) -> bool:
    """True when NAME is a corpus of the catalogue (check ``os.path.exists(name)`` first: files win)."""
    return isinstance(name, str) and name in catalogue()


def data_dir() -> str:
    """Where the named corpora are kept: $CHARRNN_DATA, else the user cache directory + /charrnn."""
    env = os.environ.get("CHARRNN_DATA")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(r"~\AppData\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec: relative paths are invalid and ignored
            base = os.path.expanduser("~/.cache")
    return os.path.join(base, "charrnn")


def entry(name: str) -> dict:
    """One corpus with its defaults and local path.

    Keys: name, description, url, file, size, sha256 (the download), member (zips only: name, size,
    sha256), split {val_frac, test_frac}, tokenizer, homepage, citation, licence, and added here:
    path (where the text file is or will be), text_size and text_sha256 (of that text file).
    """
    cat = catalogue()
    if name not in cat:
        raise CharrnnError(f"unknown corpus '{name}'; the named corpora are {', '.join(sorted(cat))} "
                           "(see 'charrnn corpora')")
    e = json.loads(json.dumps(cat[name]))  # a deep copy: callers may change it
    text = e.get("member") or e
    e.update(name=name, path=os.path.join(data_dir(), text.get("name", e["file"])),
             text_size=text["size"], text_sha256=text["sha256"])
    return e


def status(name: str) -> str:
    """'downloaded' (verified), 'unverified' (a file is there, not yet checked) or 'missing'; never hashes."""
    e = entry(name)
    if _marked(e["path"], e["text_sha256"]):
        return "downloaded"
    return "unverified" if os.path.lexists(e["path"]) else "missing"


# ----------------------------------------------------------------------------- fetching

def fetch(name: str, progress: bool | None = None, log=None) -> str:
    """The local path of corpus NAME's text file, downloading and verifying it the first time.

    Already present and verified: no network. Every failure is a one-line CharrnnError naming the
    URL and where to put the file by hand.
    """
    e = entry(name)
    final = e["path"]
    if os.path.lexists(final):
        _check_present(final, e["text_size"], e["text_sha256"], f"the {name} corpus", log)
        return final
    directory = data_dir()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise CharrnnError(f"cannot create the data directory '{directory}': {err.strerror}; "
                           "set CHARRNN_DATA to a writable directory") from None
    download = os.path.join(directory, e["file"])
    if "member" not in e:
        _download(e, download, progress, log)
        _mark(final, e["text_sha256"])
        return final
    if os.path.lexists(download):  # placed by hand, or left by a run that stopped while extracting
        _check_present(download, e["size"], e["sha256"], f"the {name} download", log)
    else:
        _download(e, download, progress, log)
    _extract(e, download, final, log)
    _mark(final, e["text_sha256"])
    with contextlib.suppress(OSError):
        os.unlink(download)  # the zip has served its purpose; the verified text stays
    return final


def manual_hint(e: dict) -> str:
    """Where to put the file by hand, for error messages."""
    hint = os.path.join(data_dir(), e["file"])
    if "member" in e:
        hint += f" (or the unzipped file at {e['path']})"
    return hint


def _check_present(path: str, size: int, sha: str, what: str, log) -> None:
    try:
        st = os.stat(path)
    except OSError as err:
        raise CharrnnError(f"cannot access '{path}': {err.strerror}; remove it and run again") from None
    fix = "delete it (charrnn then downloads it again) or replace it with the right file"
    if not stat.S_ISREG(st.st_mode):
        raise CharrnnError(f"'{path}' should be {what} but is not a regular file; {fix}")
    if st.st_size != size:
        raise CharrnnError(f"'{path}' is not {what}: it has {st.st_size:,} bytes, expected {size:,}; {fix}")
    if _marked(path, sha):
        return
    if log and size >= 1 << 24:
        log(f"verifying {path} (sha256, once) ...")
    got = _sha256_file(path)
    if got != sha:
        raise CharrnnError(f"'{path}' is not {what}: sha256 {got}, expected {sha}; {fix}")
    _mark(path, sha)


def _download(e: dict, dest: str, progress: bool, log) -> None:
    url, size = e["url"], e["size"]
    then = f"run again, or download it by hand and put it at {manual_hint(e)}"
    if log:
        log(f"downloading {e['name']} ({size:,} bytes) from {url} to {dest}")
    req = urllib.request.Request(url, headers={"User-Agent": f"charrnn/{__version__}"})
    try:
        with _atomic(dest) as out, urllib.request.urlopen(req, timeout=TIMEOUT) as resp, \
                _bar(size, e["name"], progress) as bar:
            digest, got = _stream(resp.read, out, size, bar)
            if got != size:
                got_s = f"stopped after {got:,} of" if got < size else "is not the expected file: more than"
                raise CharrnnError(f"the download of {url} {got_s} {size:,} bytes and was deleted; {then}")
            if digest != e["sha256"]:
                raise CharrnnError(f"the download of {url} is corrupt (sha256 {digest}, expected {e['sha256']}) "
                                   f"and was deleted; {then}")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise CharrnnError(f"cannot download {e['name']} from {url} ({_reason(err)}); check the connection, "
                           f"or download it by hand and put it at {manual_hint(e)}") from None


def _extract(e: dict, zip_path: str, final: str, log) -> None:
    m = e["member"]
    if log:
        log(f"extracting {m['name']} from {zip_path}")
    try:
        with _atomic(final) as out, zipfile.ZipFile(zip_path) as z, z.open(m["name"]) as src:
            digest, got = _stream(src.read, out, m["size"])
            if (got, digest) != (m["size"], m["sha256"]):
                seen, want = (f"sha256 {digest}", f"sha256 {m['sha256']}") if got == m["size"] else \
                    (f"{got:,}{'+' * (got > m['size'])} bytes", f"{m['size']:,} bytes")
                raise CharrnnError(f"'{m['name']}' in '{zip_path}' is not the expected file ({seen}, expected "
                                   f"{want}); delete '{zip_path}' and run again")
    except KeyError:
        raise CharrnnError(f"'{zip_path}' has no member '{m['name']}'; delete it and run again") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise CharrnnError(f"cannot extract '{m['name']}' from '{zip_path}': {_reason(err)}; "
                           f"delete '{zip_path}' and run again") from None


# ----------------------------------------------------------------------------- small helpers

def _atomic(dest: str):
    return atomic_file(dest, DATA_FIX, suffix=".part")


def _stream(read, out, limit: int, bar=None) -> tuple[str, int]:
    """Copy read() to OUT, hashing; stops once past LIMIT bytes. Returns (sha256 hex digest, bytes)."""
    h, got = hashlib.sha256(), 0
    while got <= limit:
        chunk = read(CHUNK)
        if not chunk:
            break
        got += len(chunk)
        h.update(chunk)
        disk_op(lambda: out.write(chunk), out.name, "set CHARRNN_DATA to another directory")
        if bar is not None:
            bar.update(len(chunk))
    return h.hexdigest(), got


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        if not isinstance(err.reason, BaseException):
            return str(err.reason)
        err = err.reason
    if isinstance(err, TimeoutError):  # socket.timeout too
        return f"no data for {TIMEOUT}s"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    except OSError as err:
        raise CharrnnError(f"cannot read '{path}': {err.strerror}; check its permissions") from None
    return h.hexdigest()


def _marker(path: str) -> str:
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.verified")


def _marked(path: str, sha: str) -> bool:
    """True when a marker says this very file (same size and mtime) was verified to have hash SHA."""
    try:
        st = os.stat(path)
        with open(_marker(path), encoding="utf-8") as f:
            return json.load(f) == {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    except (OSError, ValueError):
        return False


def _mark(path: str, sha: str) -> None:
    try:
        st = os.stat(path)
        with _atomic(_marker(path)) as out:
            out.write(json.dumps({"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}).encode())
    except (OSError, CharrnnError):
        pass  # the marker only saves a rehash next time: never fail over it


def _bar(total: int, name: str, progress: bool):
    return progress_bar(total=total, desc=f"downloading {name}", unit="B", unit_scale=True, unit_divisor=1024,
                        disable=not show_progress(progress), dynamic_ncols=True)

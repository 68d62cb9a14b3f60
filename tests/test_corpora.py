"""Named corpora: download once from a local stand-in server, verify, extract, refuse bad files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from charrnn.data import named as corpora
from charrnn.data.corpus import split_text
from charrnn.errors import CharrnnError

from .conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200).encode()
MEMBER = ("anarchism originated as a term of abuse first used against early working class radicals " * 300).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, data)
    return buf.getvalue()


ZIPPED = make_zip("tiny8", MEMBER)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if self.path == "/stall":  # accept, then say nothing
            time.sleep(1)
            return
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.server.drop:  # promise the whole body, send half, hang up
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.requests, srv.drop = [], set()
    srv.files = {"/plain.txt": PLAIN, "/tiny8.zip": ZIPPED}
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture
def env(tmp_path, monkeypatch, server):
    """A test catalogue served by the local server; returns a function to rewrite it."""
    data = tmp_path / "data"
    monkeypatch.setenv("CHARRNN_DATA", str(data))
    monkeypatch.setenv("no_proxy", "*")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    entries = {
        "plain": {"description": "a small text", "url": f"{base}/plain.txt", "file": "plain.txt",
                  "size": len(PLAIN), "sha256": sha(PLAIN), "split": {"val_frac": 0.1, "test_frac": 0.0},
                  "tokenizer": "char"},
        "zipped": {"description": "a zipped text", "url": f"{base}/tiny8.zip", "file": "tiny8.zip",
                   "size": len(ZIPPED), "sha256": sha(ZIPPED),
                   "member": {"name": "tiny8", "size": len(MEMBER), "sha256": sha(MEMBER)},
                   "split": {"val_frac": 0.05, "test_frac": 0.05}, "tokenizer": "byte"},
    }
    path = tmp_path / "catalogue.json"

    def write(**changes):
        for name, change in changes.items():
            entries[name].update(change)
        path.write_text(json.dumps({"format": 1, "corpora": entries}))
        return data

    write()
    monkeypatch.setenv("CHARRNN_CATALOGUE", str(path))
    return write


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part")) if directory.exists() else []


def one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------------- downloading

def test_first_fetch_downloads_and_verifies_second_makes_no_request(env, server):
    data = env()
    logged = []
    path = corpora.fetch("plain", log=logged.append)
    assert path == str(data / "plain.txt") and Path(path).read_bytes() == PLAIN
    assert server.requests == ["/plain.txt"] and any(server.requests[0] in m for m in logged)
    assert json.loads((data / ".plain.txt.verified").read_text())["sha256"] == sha(PLAIN)
    assert corpora.status("plain") == "downloaded"
    assert corpora.fetch("plain") == path
    assert server.requests == ["/plain.txt"]  # no second request
    assert leftovers(data) == []
    umask = os.umask(0)
    os.umask(umask)
    assert Path(path).stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_the_marker_spares_a_rehash(env, monkeypatch):
    path = corpora.fetch("plain")
    monkeypatch.setattr(corpora, "_sha256_file", lambda p: pytest.fail(f"rehashed {p}"))
    assert corpora.fetch("plain") == path


def test_zip_is_verified_extracted_and_removed(env, server):
    data = env()
    path = corpora.fetch("zipped")
    assert path == str(data / "tiny8") and Path(path).read_bytes() == MEMBER
    assert not (data / "tiny8.zip").exists() and leftovers(data) == []
    assert corpora.fetch("zipped") == path and server.requests == ["/tiny8.zip"]


def test_checksum_mismatch_deletes_the_download_and_names_both_hashes(env, server):
    data = env(plain={"sha256": "0" * 64})
    with pytest.raises(CharrnnError) as e:
        corpora.fetch("plain")
    msg = one_line_error(e)
    assert "0" * 64 in msg and sha(PLAIN) in msg and "/plain.txt" in msg
    assert not (data / "plain.txt").exists() and leftovers(data) == []


def test_dropped_connection_leaves_no_partial_file(env, server):
    data = env()
    server.drop.add("/tiny8.zip")
    with pytest.raises(CharrnnError) as e:
        corpora.fetch("zipped")
    msg = one_line_error(e)
    assert f"{len(ZIPPED) // 2:,} of {len(ZIPPED):,} bytes" in msg
    assert f"http://127.0.0.1:{server.server_address[1]}/tiny8.zip" in msg
    assert str(data / "tiny8.zip") in msg and str(data / "tiny8") in msg  # where to put it by hand
    assert sorted(p.name for p in data.iterdir()) == []


def test_offline_names_the_url_and_where_to_put_the_file(env):
    url = f"http://127.0.0.1:{closed_port()}/plain.txt"
    data = env(plain={"url": url})
    with pytest.raises(CharrnnError) as e:
        corpora.fetch("plain")
    msg = one_line_error(e)
    assert f"cannot download plain from {url}" in msg and f"put it at {data / 'plain.txt'}" in msg
    assert not (data / "plain.txt").exists() and leftovers(data) == []


def test_http_error_is_one_line(env, server):
    env(plain={"url": f"http://127.0.0.1:{server.server_address[1]}/missing.txt"})
    with pytest.raises(CharrnnError) as e:
        corpora.fetch("plain")
    assert "HTTP 404" in one_line_error(e)


def test_a_stalled_server_times_out(env, server, monkeypatch):
    monkeypatch.setattr(corpora, "TIMEOUT", 0.2)
    data = env(plain={"url": f"http://127.0.0.1:{server.server_address[1]}/stall"})
    with pytest.raises(CharrnnError) as e:
        corpora.fetch("plain")
    assert "(no data for 0.2s)" in one_line_error(e) and leftovers(data) == []


def test_a_wrong_member_in_a_valid_zip_leaves_no_text(env, server):
    bad = make_zip("tiny8", MEMBER[:-1] + b"!")
    server.files["/tiny8.zip"] = bad
    data = env(zipped={"size": len(bad), "sha256": sha(bad)})
    with pytest.raises(CharrnnError) as e:
        corpora.fetch("zipped")
    msg = one_line_error(e)
    assert sha(MEMBER) in msg and sha(MEMBER[:-1] + b"!") in msg
    assert not (data / "tiny8").exists() and leftovers(data) == []


# ----------------------------------------------------------------------------- files placed by hand

def test_hand_placed_files_are_accepted_when_their_hash_matches(env, server):
    data = env()
    data.mkdir()
    (data / "plain.txt").write_bytes(PLAIN)
    (data / "tiny8.zip").write_bytes(ZIPPED)
    assert corpora.status("plain") == "unverified"
    assert corpora.fetch("plain") == str(data / "plain.txt")
    assert Path(corpora.fetch("zipped")).read_bytes() == MEMBER  # the placed zip is extracted
    (data / "tiny8").unlink()
    (data / ".tiny8.verified").unlink()
    (data / "tiny8").write_bytes(MEMBER)  # the unzipped file placed by hand
    assert corpora.fetch("zipped") == str(data / "tiny8")
    assert server.requests == []


@pytest.mark.parametrize("content, expect", [(b"x" * len(PLAIN), "sha256"), (PLAIN[:-5], "bytes")],
                         ids=["same-size", "short"])
def test_hand_placed_wrong_files_are_refused_and_kept(env, server, content, expect):
    data = env()
    data.mkdir()
    (data / "plain.txt").write_bytes(content)
    with pytest.raises(CharrnnError) as e:
        corpora.fetch("plain")
    msg = one_line_error(e)
    assert str(data / "plain.txt") in msg and "is not the plain corpus" in msg and "delete it" in msg
    if expect == "sha256":
        assert sha(content) in msg and sha(PLAIN) in msg
    else:
        assert f"{len(PLAIN) - 5:,} bytes, expected {len(PLAIN):,}" in msg
    assert (data / "plain.txt").read_bytes() == content and server.requests == []


def test_the_marker_is_tied_to_the_file_it_verified(env, server):
    data = env()
    path = Path(corpora.fetch("plain"))
    tampered = PLAIN[:-1] + b"?"
    path.write_bytes(tampered)  # same size, new content, new mtime: the marker no longer vouches for it
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert corpora.status("plain") == "unverified"
    with pytest.raises(CharrnnError) as e:
        corpora.fetch("plain")
    assert sha(tampered) in one_line_error(e) and server.requests == ["/plain.txt"]


# ----------------------------------------------------------------------------- directories and catalogue

def test_data_dir_follows_charrnn_data_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("CHARRNN_DATA", str(tmp_path / "mine"))
    assert corpora.data_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("CHARRNN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert corpora.data_dir() == str(tmp_path / "xdg" / "charrnn")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert corpora.data_dir() == str(tmp_path / "home" / ".cache" / "charrnn")


def test_charrnn_data_decides_where_fetch_writes(env, tmp_path, monkeypatch):
    env()
    monkeypatch.setenv("CHARRNN_DATA", str(tmp_path / "elsewhere"))
    assert corpora.fetch("plain") == str(tmp_path / "elsewhere" / "plain.txt")
    assert corpora.entry("plain")["path"] == str(tmp_path / "elsewhere" / "plain.txt")


def test_builtin_catalogue_has_the_standard_corpora(monkeypatch):
    monkeypatch.delenv("CHARRNN_CATALOGUE", raising=False)
    cat = corpora.catalogue()
    assert set(cat) == {"enwik8", "text8", "tinyshakespeare"} and corpora.is_named("enwik8")
    assert not corpora.is_named("corpus.txt")
    for name, tok in (("enwik8", "byte"), ("text8", "char")):
        e = corpora.entry(name)
        assert e["url"] == f"http://mattmahoney.net/dc/{name}.zip" and e["member"]["name"] == name
        assert e["text_size"] == 100_000_000 and e["tokenizer"] == tok
        assert e["split"] == {"val_frac": 0.05, "test_frac": 0.05}
    ts = corpora.entry("tinyshakespeare")
    assert ts["size"] == 1_115_394 and ts["tokenizer"] == "char" and ts["split"] == {"val_frac": 0.1, "test_frac": 0}
    assert ts["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    if (SHARED / "tinyshakespeare.txt").exists():
        assert sha((SHARED / "tinyshakespeare.txt").read_bytes()) == ts["sha256"]


def test_the_standard_splits_come_out_exactly():
    train, val, test = split_text(range(100_000_000), 0.05, 0.05)  # enwik8 and text8
    assert (len(train), len(val), len(test)) == (90_000_000, 5_000_000, 5_000_000)
    assert train[-1] == 89_999_999 and val[0] == 90_000_000 and test[0] == 95_000_000
    train, val, test = split_text(range(1_115_394), 0.1, 0.0)  # tinyshakespeare, as nanoGPT
    assert (len(train), len(val), len(test)) == (1_003_854, 111_540, 0)


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON"),
    ('{"format": 2, "corpora": {}}', "not a format-1 catalogue"),
    ('{"format": 1, "corpora": {"x": {"url": "u", "file": "../x", "size": 1, "sha256": "%s", '
     '"split": {"val_frac": 0.1, "test_frac": 0}, "tokenizer": "char"}}}' % ("a" * 64), "not a plain file name"),
    ('{"format": 1, "corpora": {"x": {"url": "u"}}}', "lacks 'file'"),
])
def test_a_broken_catalogue_is_one_clear_line(tmp_path, monkeypatch, text, problem):
    (tmp_path / "c.json").write_text(text)
    monkeypatch.setenv("CHARRNN_CATALOGUE", str(tmp_path / "c.json"))
    with pytest.raises(CharrnnError) as e:
        corpora.catalogue()
    assert problem in one_line_error(e) and str(tmp_path / "c.json") in str(e.value)


# ----------------------------------------------------------------------------- the command

def test_corpora_command_lists_and_fetches(env, server, cli):
    data = env()
    r = cli("corpora", "--json")
    assert r.code == 0
    listing = json.loads(r.out)
    assert listing["data_dir"] == str(data)
    rows = {row["name"]: row for row in listing["corpora"]}
    assert set(rows) == {"plain", "zipped"} and not rows["plain"]["downloaded"]
    assert rows["zipped"]["size"] == len(MEMBER) and rows["zipped"]["tokenizer"] == "byte"
    assert rows["zipped"]["path"] == str(data / "tiny8") and rows["zipped"]["split"]["test_frac"] == 0.05
    r = cli("corpora", "--fetch", "plain")
    assert r.code == 0 and r.out.strip() == str(data / "plain.txt") and "downloading plain" in r.err
    rows = {row["name"]: row for row in json.loads(cli("corpora", "--json").out)["corpora"]}
    assert rows["plain"]["downloaded"] and rows["plain"]["status"] == "downloaded"
    table = cli("corpora").out
    assert "90/10/0" in table and "downloaded" in table and "not downloaded" in table and str(data) in table
    r = cli("corpora", "--fetch", "nope")
    assert r.code == 2 and r.err.startswith("error: unknown corpus 'nope'") and r.err.count("\n") == 1


@pytest.mark.integration
def test_the_corpora_modules_do_not_import_torch():
    code = "import sys, charrnn.data.named, charrnn.cli.corpora; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_training_on_a_named_corpus_fetches_it_with_its_split_and_tokenizer(env, server, cli, tmp_path):
    from .conftest import TINY_MODEL

    ck = tmp_path / "ck"
    r = cli("train", "zipped", "--checkpoint-dir", ck, *TINY_MODEL, "--max-steps", 3)
    assert r.code == 0, r.err
    cfg = json.loads((ck / "tiny8" / "config.json").read_text())
    assert (cfg["tokenizer"], cfg["val_frac"], cfg["test_frac"]) == ("byte", 0.05, 0.05)
    assert cfg["corpus"] == str(env() / "tiny8") and len(server.requests) == 1
    r = cli("train", "plain", "--checkpoint-dir", ck, *TINY_MODEL, "--max-steps", 3, "--val-frac", 0.2)
    assert r.code == 0, r.err
    cfg = json.loads((ck / "plain" / "config.json").read_text())
    assert (cfg["tokenizer"], cfg["val_frac"], cfg["test_frac"]) == ("char", 0.2, 0.0)  # explicit flags win
    r = cli("train", "enwik9", "--checkpoint-dir", ck)
    assert r.code != 0 and "no named corpus 'enwik9'; the named corpora are plain, zipped" in r.err

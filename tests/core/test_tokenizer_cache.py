"""The local copy of a remote (``gs://``) tokenizer: keyed by the remote files, private, checked before use.

A fake remote filesystem stands in for the bucket: ``FileSystems.match`` and ``FileSystems.open`` are what
``seqpack.tokenizer`` calls, so they are replaced by ones that serve files from a dict.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.filesystems import FileSystems

from seqpack import tokenizer_cache as tokenizer_module
from seqpack.tokenizer import fingerprint, load_tokenizer

URL = "gs://some-bucket/tokenizer"


class FakeRemote:
    """A bucket in memory: ``files`` maps a name under ``URL`` to (bytes, modification time; 0 = not reported)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, float]] = {}
        self.opened: list[str] = []

    def fill_from(self, directory: Path, updated: float) -> None:
        self.files = {p.name: (p.read_bytes(), updated) for p in sorted(directory.iterdir()) if p.is_file()}

    def match(self, patterns: list[str], limits: list[int] | None = None) -> list[MatchResult]:
        assert patterns == [URL + "/*"]
        metadata = [FileMetadata(f"{URL}/{name}", len(data), updated) for name, (data, updated) in self.files.items()]
        return [MatchResult(patterns[0], metadata)]

    def open(self, path: str, *args: object, **kwargs: object) -> io.BytesIO:
        self.opened.append(path)
        return io.BytesIO(self.files[path.rsplit("/", 1)[-1]][0])


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeRemote]:
    fake = FakeRemote()
    monkeypatch.setattr(FileSystems, "match", staticmethod(fake.match))
    monkeypatch.setattr(FileSystems, "open", staticmethod(fake.open))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # an empty $TMPDIR for this test
    yield fake


def _load_fingerprint(spec: str = URL) -> str:
    return fingerprint(load_tokenizer(spec))


def _plant(directory: Path, source: Path) -> None:
    """What an attacker writes: a loadable tokenizer of their choice, both where the old cache kept its files and
    where the new one does, with a private mode and a manifest that vouches for it against the remote listing."""
    shutil.copytree(source, directory / "files")
    shutil.copytree(source, directory, dirs_exist_ok=True)
    recorded = {
        file.name: {"size": file.size, "updated": file.updated,
                    "sha256": hashlib.sha256((source / file.name).read_bytes()).hexdigest()}
        for file in tokenizer_module._list_remote(URL)
    }
    (directory / "manifest.json").write_text(json.dumps({"source": URL, "files": recorded}))
    directory.chmod(0o700)


def test_the_remote_tokenizer_is_loaded_and_its_cache_is_private(
    remote: FakeRemote, tokenizer_dir: Path
) -> None:
    remote.fill_from(tokenizer_dir, updated=1000.0)
    assert _load_fingerprint() == _load_fingerprint(str(tokenizer_dir))
    root = Path(tempfile.gettempdir()) / f"seqpack-tokenizers-{os.getuid()}"
    for directory in [root, *root.iterdir()]:
        info = directory.lstat()
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def test_an_unchanged_remote_is_copied_once(remote: FakeRemote, tokenizer_dir: Path) -> None:
    remote.fill_from(tokenizer_dir, updated=1000.0)
    _load_fingerprint()
    opened = len(remote.opened)
    _load_fingerprint()
    assert len(remote.opened) == opened


def test_a_directory_planted_at_the_old_cache_path_is_not_used(
    remote: FakeRemote, tokenizer_dir: Path, gpt2_like_tokenizer_dir: Path
) -> None:
    old = Path(tempfile.gettempdir()) / f"seqpack-tokenizer-{hashlib.sha256(URL.encode()).hexdigest()[:16]}"
    remote.fill_from(tokenizer_dir, updated=1000.0)
    _plant(old, gpt2_like_tokenizer_dir)
    assert _load_fingerprint() == _load_fingerprint(str(tokenizer_dir))


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o770])
def test_a_cache_root_others_can_reach_is_not_used(
    remote: FakeRemote, tokenizer_dir: Path, gpt2_like_tokenizer_dir: Path, mode: int
) -> None:
    """Another user created the predictable root first and planted an entry under the key they can compute."""
    remote.fill_from(tokenizer_dir, updated=1000.0)
    root = Path(tempfile.gettempdir()) / f"seqpack-tokenizers-{os.getuid()}"
    root.mkdir()
    key = tokenizer_module._listing_key(URL, tokenizer_module._list_remote(URL))
    assert key is not None
    _plant(root / key, gpt2_like_tokenizer_dir)
    root.chmod(mode)
    assert _load_fingerprint() == _load_fingerprint(str(tokenizer_dir))


def test_a_cache_root_owned_by_someone_else_is_not_used(
    remote: FakeRemote, tokenizer_dir: Path, gpt2_like_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.fill_from(tokenizer_dir, updated=1000.0)
    real_uid = os.getuid()
    root = Path(tempfile.gettempdir()) / f"seqpack-tokenizers-{real_uid + 1}"
    root.mkdir(mode=0o700)  # the attacker's own private root, at the path a user with uid + 1 would use
    key = tokenizer_module._listing_key(URL, tokenizer_module._list_remote(URL))
    _plant(root / str(key), gpt2_like_tokenizer_dir)
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)  # we are that user; the files belong to real_uid
    assert _load_fingerprint() == _load_fingerprint(str(tokenizer_dir))


def test_a_root_that_is_a_link_is_not_used(
    remote: FakeRemote, tokenizer_dir: Path, gpt2_like_tokenizer_dir: Path, tmp_path: Path
) -> None:
    remote.fill_from(tokenizer_dir, updated=1000.0)
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir(mode=0o700)
    key = tokenizer_module._listing_key(URL, tokenizer_module._list_remote(URL))
    _plant(elsewhere / str(key), gpt2_like_tokenizer_dir)
    (Path(tempfile.gettempdir()) / f"seqpack-tokenizers-{os.getuid()}").symlink_to(elsewhere)
    assert _load_fingerprint() == _load_fingerprint(str(tokenizer_dir))


def test_an_altered_cache_entry_is_copied_again(remote: FakeRemote, tokenizer_dir: Path,
                                                gpt2_like_tokenizer_dir: Path) -> None:
    remote.fill_from(tokenizer_dir, updated=1000.0)
    local = Path(tokenizer_module.copy_remote_dir(URL))
    (local / "tokenizer.json").write_bytes((gpt2_like_tokenizer_dir / "tokenizer.json").read_bytes())
    assert _load_fingerprint() == _load_fingerprint(str(tokenizer_dir))


@pytest.mark.parametrize("updated", [1000.0, 0.0], ids=["with-times", "without-times"])
def test_a_changed_remote_is_copied_again(
    remote: FakeRemote, tokenizer_dir: Path, gpt2_like_tokenizer_dir: Path, updated: float
) -> None:
    remote.fill_from(tokenizer_dir, updated=updated)
    assert _load_fingerprint() == _load_fingerprint(str(tokenizer_dir))
    remote.fill_from(gpt2_like_tokenizer_dir, updated=updated and updated + 60)
    assert _load_fingerprint() == _load_fingerprint(str(gpt2_like_tokenizer_dir))
    remote.fill_from(tokenizer_dir, updated=updated)
    assert _load_fingerprint() == _load_fingerprint(str(tokenizer_dir))

"""framework.safefs: every primitive refuses, or neutralises, what a hostile agent plants in its tree.

Each test builds an agent-writable tree under ``tmp_path/tree`` and a host file or directory
outside it (``tmp_path/host``) that a host-side step must never read, write or re-own.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from framework import safefs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file.txt").write_text("inside")
    return root


@pytest.fixture
def host(tmp_path: Path) -> Path:
    directory = tmp_path / "host"
    directory.mkdir(mode=0o700)
    (directory / "secret").write_text("host secret")
    return directory


@pytest.mark.parametrize("name", ["/etc/passwd", "../host/secret", "sub/../../host/secret"])
def test_names_leaving_the_root_are_refused(tree: Path, name: str) -> None:
    with pytest.raises(safefs.UnsafePath):
        safefs.read_bytes(tree, name)


def test_a_link_at_the_file_or_on_the_way_is_never_read(tree: Path, host: Path) -> None:
    (tree / "link").symlink_to(host / "secret")
    (tree / "dirlink").symlink_to(host)
    for name in ("link", "dirlink/secret"):
        with pytest.raises(safefs.UnsafePath):
            safefs.read_bytes(tree, name)
    assert safefs.read_text(tree, "sub/file.txt") == "inside"


def test_a_fifo_is_refused_without_blocking(tree: Path) -> None:
    os.mkfifo(tree / "fifo")
    with pytest.raises(safefs.UnsafePath, match="not a regular file"):
        safefs.read_bytes(tree, "fifo")


def test_read_bytes_past_its_limit_is_an_error(tree: Path) -> None:
    (tree / "big").write_bytes(b"x" * 101)
    assert safefs.read_bytes(tree, "big", limit=101) == b"x" * 101
    with pytest.raises(safefs.UnsafePath) as caught:
        safefs.read_bytes(tree, "big", limit=100)
    assert caught.value.errno == errno.EFBIG


def test_read_range_reads_from_an_offset(tree: Path) -> None:
    (tree / "log").write_bytes(b"0123456789")
    assert safefs.read_range(tree, "log", 3, 4) == b"3456"
    assert safefs.read_range(tree, "log", 20, 4) == b""


def test_replace_swaps_a_planted_link_instead_of_writing_through_it(tree: Path, host: Path) -> None:
    (tree / "CLAUDE.md").symlink_to(host / "secret")
    safefs.replace(tree, "CLAUDE.md", b"rendered", mode=0o640)
    assert (host / "secret").read_text() == "host secret"
    assert not (tree / "CLAUDE.md").is_symlink()
    assert (tree / "CLAUDE.md").read_bytes() == b"rendered"
    assert stat.S_IMODE((tree / "CLAUDE.md").stat().st_mode) == 0o640


def test_replace_uses_no_predictable_temporary_name(tree: Path, host: Path) -> None:
    # The names the old code (and the runner's) used, derived from the pid the agent can learn.
    for name in (f".CLAUDE.md.tmp-{os.getpid()}", f".CLAUDE.md.{os.getpid()}.tmp"):
        (tree / name).symlink_to(host / "secret")
    safefs.replace(tree, "CLAUDE.md", b"rendered")
    assert (host / "secret").read_text() == "host secret"
    leftovers = {p.name for p in tree.iterdir()} - {"sub", "CLAUDE.md"}
    assert all((tree / n).is_symlink() for n in leftovers)  # only the planted links remain


def test_replace_refuses_a_linked_directory_on_the_way(tree: Path, host: Path) -> None:
    (tree / ".claude").symlink_to(host)
    with pytest.raises(safefs.UnsafePath):
        safefs.replace(tree, ".claude/commands/x.md", b"agent text", create_dirs=True)
    assert sorted(p.name for p in host.iterdir()) == ["secret"]


def test_write_new_and_copy_in_never_write_through_an_existing_name(
    tree: Path, host: Path, tmp_path: Path
) -> None:
    (tree / "taken").symlink_to(host / "secret")
    with pytest.raises(FileExistsError):
        safefs.write_new(tree, "taken", b"agent")
    source = tmp_path / "diff"
    source.write_bytes(b"diff")
    assert safefs.copy_in(source, tree, "taken") is False
    assert safefs.copy_in(source, tree, "fresh") is True
    assert (tree / "fresh").read_bytes() == b"diff"
    assert (host / "secret").read_text() == "host secret"


def test_open_append_refuses_a_link_and_a_hard_link(tree: Path, host: Path) -> None:
    (tree / "stdout.1.log").symlink_to(host / "secret")
    with pytest.raises(safefs.UnsafePath):
        safefs.open_append(tree, "stdout.1.log")
    os.link(tree / "sub" / "file.txt", tree / "hard.log")
    with pytest.raises(safefs.UnsafePath) as caught:
        safefs.open_append(tree, "hard.log")
    assert caught.value.errno == errno.EMLINK
    fd = safefs.open_append(tree, "stdout.2.log")
    os.write(fd, b"line\n")
    os.close(fd)
    assert (tree / "stdout.2.log").read_bytes() == b"line\n"
    assert (host / "secret").read_text() == "host secret"


def test_copy_out_copies_only_a_regular_file_reached_through_no_link(
    tree: Path, host: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "store" / "copy"
    dest.parent.mkdir()
    assert safefs.copy_out(tree, "sub/file.txt", dest) == len("inside")
    assert dest.read_text() == "inside"
    (tree / "link.jsonl").symlink_to(host / "secret")
    with pytest.raises(safefs.UnsafePath):
        safefs.copy_out(tree, "link.jsonl", tmp_path / "store" / "leak")
    assert not (tmp_path / "store" / "leak").exists()
    with pytest.raises(safefs.UnsafePath):
        safefs.copy_out(tree, "sub/file.txt", tmp_path / "store" / "small", limit=2)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy"]


def test_open_path_gives_directories_and_files_and_refuses_links(tree: Path, host: Path) -> None:
    for name, kind in (("sub", stat.S_ISDIR), ("sub/file.txt", stat.S_ISREG)):
        fd = safefs.open_path(tree, name)
        try:
            assert kind(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    (tree / "data").symlink_to(host)
    os.mkfifo(tree / "fifo")
    for name in ("data", "data/secret", "fifo"):
        with pytest.raises(safefs.UnsafePath):
            safefs.open_path(tree, name)


def test_the_descriptor_is_the_object_checked_whatever_the_name_becomes(
    tree: Path, host: Path
) -> None:
    fd = safefs.open_path(tree, "sub")
    try:
        (tree / "sub").rename(tree / "sub.orig")
        (tree / "sub").symlink_to(host)
        assert os.listdir(f"/proc/self/fd/{fd}") == ["file.txt"]
    finally:
        os.close(fd)


needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chown needs root")


@needs_root
def test_chown_entry_refuses_a_link_and_leaves_its_target_alone(tree: Path, host: Path) -> None:
    (tree / "artifacts").symlink_to(host)
    with pytest.raises(safefs.UnsafePath):
        safefs.chown_entry(tree, "artifacts", 1000, 1000)
    assert host.stat().st_uid == os.getuid()
    safefs.chown_entry(tree, "sub", 1000, 1000)
    assert (tree / "sub").stat().st_uid == 1000


@needs_root
def test_chown_tree_re_owns_links_themselves_never_their_targets(tree: Path, host: Path) -> None:
    (tree / "sub" / "link").symlink_to(host / "secret")
    (tree / "sub" / "dirlink").symlink_to(host)
    safefs.chown_tree(tree, "", 1000, 1000)
    assert (tree / "sub" / "file.txt").stat().st_uid == 1000
    assert (tree / "sub" / "link").lstat().st_uid == 1000
    assert host.stat().st_uid == os.getuid()
    assert (host / "secret").stat().st_uid == os.getuid()


def test_chown_tree_refuses_a_tree_deeper_than_its_bound(tree: Path) -> None:
    deep = tree
    for _ in range(safefs.MAX_DEPTH + 2):
        deep = deep / "d"
    deep.mkdir(parents=True)
    with pytest.raises(safefs.UnsafePath, match="deep"):
        safefs.chown_tree(tree, "", os.getuid(), os.getgid())


def test_regular_files_lists_neither_links_nor_what_they_lead_to(tree: Path, host: Path) -> None:
    (tree / "sub" / "nested").mkdir()
    (tree / "sub" / "nested" / "model.pt").write_bytes(b"w")
    (tree / "sub" / "leak").symlink_to(host / "secret")
    (tree / "sub" / "hostdir").symlink_to(host)
    assert safefs.regular_files(tree, "sub") == ["file.txt", "nested/model.pt"]
    assert safefs.regular_files(tree, "sub", limit=1) == ["file.txt"]
    (tree / "linked").symlink_to(host)
    with pytest.raises(safefs.UnsafePath):
        safefs.regular_files(tree, "linked")


def test_regular_files_looks_at_a_bounded_number_of_names(tree: Path) -> None:
    for i in range(50):
        (tree / "sub" / f"f{i:02}").write_bytes(b"")
    assert len(safefs.regular_files(tree, "sub", max_entries=10)) == 10


def test_glob_matches_like_pathlib_but_through_no_link(tree: Path, host: Path) -> None:
    projects = tree / ".claude" / "projects"
    (projects / "slug").mkdir(parents=True)
    (projects / "slug" / "a.jsonl").write_text("{}")
    (projects / "slug" / "b.jsonl").symlink_to(host / "secret")
    (projects / "evil").symlink_to(host)
    (host / "c.jsonl").write_text("{}")
    assert safefs.glob(tree, ".claude/projects/*/*.jsonl") == [".claude/projects/slug/a.jsonl"]
    assert safefs.glob(tree, "missing/*.jsonl") == []


def test_listdir_stat_and_remove_act_on_the_link_itself(tree: Path, host: Path) -> None:
    (tree / "link").symlink_to(host / "secret")
    assert safefs.listdir(tree) == ["link", "sub"]
    info = safefs.stat_beneath(tree, "link")
    assert info is not None and stat.S_ISLNK(info.st_mode)
    assert safefs.stat_beneath(tree, "absent") is None
    assert not safefs.is_regular_file(tree, "link")
    assert safefs.is_regular_file(tree, "sub/file.txt")
    assert safefs.remove(tree, "link") is True
    assert safefs.remove(tree, "link") is False
    assert (host / "secret").read_text() == "host secret"


def test_the_root_itself_must_not_be_a_link(tmp_path: Path, host: Path) -> None:
    (tmp_path / "root-link").symlink_to(host)
    with pytest.raises(safefs.UnsafePath):
        safefs.listdir(tmp_path / "root-link")

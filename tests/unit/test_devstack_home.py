"""Where PostgreSQL's files go: beside the stack when the server's account can reach it, else a folder of their own
that only we can write to (root with a clone in a private folder)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from signoff.devstack.errors import DevStackError
from signoff.devstack.postgres import _own_shared_root, server_home, shared_root
from signoff.devstack.process import RunAs, reachable_by

OTHER = RunAs(uid=os.geteuid() + 4242, gid=os.getegid() + 4242, name="someone-else")


def test_a_reachable_workdir_keeps_the_data(tmp_path: Path) -> None:
    assert server_home(tmp_path / "postgres", RunAs()) == tmp_path / "postgres"  # our own account
    # pytest's own folder may be private (/tmp/pytest-of-root is 0700): one in the open temp folder.
    open_folder = Path(tempfile.mkdtemp())
    if not reachable_by(open_folder.parent, OTHER):
        open_folder.rmdir()
        pytest.skip(f"the temp folder {open_folder.parent} is private too")
    try:
        open_folder.chmod(0o755)
        assert server_home(open_folder / "postgres", OTHER) == open_folder / "postgres"
    finally:
        open_folder.rmdir()


def test_a_private_workdir_gets_a_stable_home_of_its_own(tmp_path: Path) -> None:
    private = tmp_path / "clone"
    private.mkdir(mode=0o700)
    home = server_home(private / ".signoff" / "dev" / "postgres", OTHER)
    assert home.parent == shared_root() and home.name.startswith("stack-")
    assert home == server_home(private / ".signoff" / "dev" / "postgres", OTHER)  # the same stack, the same data
    assert home != server_home(private / "another" / "postgres", OTHER)


def test_the_shared_root_is_made_ours_and_a_foreign_one_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "signoff-postgres"
    _own_shared_root(root)
    assert root.is_dir() and root.stat().st_mode & 0o777 == 0o711
    _own_shared_root(root)  # again: fine
    root.chmod(0o777)
    with pytest.raises(DevStackError, match="only we can write to"):
        _own_shared_root(root)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(DevStackError, match="only we can write to"):
        _own_shared_root(link)

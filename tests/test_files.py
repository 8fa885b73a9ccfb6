"""Files edgesr writes: the user's umask, atomic replacement, and the run-directory lock."""

import os
import stat

import numpy as np
import pytest

from edgesr.modelio import save_model
from edgesr.files import RunLock, RunLocked, atomic_write_text, remove_stale_temps
from edgesr.imaging import write_image
from edgesr.models import build_model

SPEC = {"type": "abpn", "scale": 2, "channels": 4, "n_body": 1}


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    art = save_model(tmp_path / "a", build_model(SPEC), name="a", arch=SPEC)
    assert _mode(art.path) == dir_mode
    assert _mode(art.path / "manifest.json") == file_mode and _mode(art.payload) == file_mode
    img = write_image(tmp_path / "sr.png", np.zeros((4, 4, 3), np.uint8))
    assert _mode(img) == file_mode
    assert _mode(atomic_write_text(tmp_path / "r.json", "{}")) == file_mode


def test_atomic_write_leaves_no_temporary_file_and_keeps_the_old_one_on_failure(tmp_path):
    target = atomic_write_text(tmp_path / "r.json", "old")
    with pytest.raises(ValueError):
        write_image(tmp_path / "r.json", np.zeros((4, 4), np.uint8))  # wrong shape: refused before writing
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_run_lock_refuses_a_second_writer_and_is_released(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLocked, match=r"another edgesr run is writing this run directory \(pid \d+"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released on exit
        pass


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".student.tmpab12", ".teacher.old", ".s.load", ".r.json.x1.tmp"):
        (tmp_path / name).mkdir() if "json" not in name else (tmp_path / name).write_text("")
    for keep in ("student", ".teacher_cache", ".edgesr.lock", "results.json"):
        (tmp_path / keep).mkdir() if "." not in keep[1:] else (tmp_path / keep).write_text("")
    assert sorted(remove_stale_temps(tmp_path)) == [".r.json.x1.tmp", ".s.load", ".student.tmpab12", ".teacher.old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".edgesr.lock", ".teacher_cache", "results.json", "student"]

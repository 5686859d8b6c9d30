"""Where mobileseg writes (mobileseg/outputs.py): what counts as ours, atomic files and folders with the
user's umask, locks between processes, and what killed runs leave behind."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from mobileseg.errors import ArtifactError
from mobileseg.artifact import write_manifest
from mobileseg.outputs import (
    MARKDOWN_MARK,
    check_destination,
    foreign_entries,
    locked,
    remove_dead_scratch,
    remove_leftovers,
    scratch_root,
    staging_folder,
    write_file,
    write_json_file,
    written_by_mobileseg,
)


def _artifact(folder, files=None):
    """A folder as mobileseg writes it: some files and a manifest that lists them."""
    folder.mkdir(parents=True)
    for name, text in (files or {"model.onnx": "bytes"}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    write_manifest(folder, {"artifacts": []})
    return folder


def test_what_counts_as_written_by_mobileseg(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobileseg.outputs import save_figure

    ours = tmp_path / "result.json"
    write_json_file(ours, {"schema": "mobileseg.latency/1"})
    save_figure(plt.figure(), tmp_path / "plot.png")
    plt.savefig(tmp_path / "theirs.png")
    (tmp_path / "table.md").write_text(MARKDOWN_MARK + "\n| a |\n")
    (tmp_path / "theirs.json").write_text(json.dumps({"schema": "other/1"}))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "notes.md").write_text("# my notes\n")
    assert written_by_mobileseg(ours) and written_by_mobileseg(tmp_path / "plot.png")
    assert written_by_mobileseg(tmp_path / "table.md")
    for name in ("theirs.png", "theirs.json", "list.json", "binary.json", "notes.md", "missing.json"):
        assert not written_by_mobileseg(tmp_path / name), name
    with zipfile.ZipFile(tmp_path / "weights.pt", "w") as archive:
        archive.writestr("weights/data.pkl", b"...format...mobileseg-vos-weights/1...")
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as archive:
        archive.writestr("model/data.pkl", b"...mobileseg.zoo.sinet SINet...")  # a user's pickled model
    assert written_by_mobileseg(tmp_path / "weights.pt") and not written_by_mobileseg(tmp_path / "model.pt")


def test_write_file_replaces_only_its_own_files_atomically(tmp_path):
    path = tmp_path / "new" / "deeper" / "result.json"
    write_json_file(path, {"schema": "mobileseg.test/1", "value": 1})
    write_json_file(path, {"schema": "mobileseg.test/1", "value": 2})
    assert json.loads(path.read_text())["value"] == 2
    theirs = tmp_path / "theirs.json"
    theirs.write_text('{"mine": true}')
    with pytest.raises(ArtifactError, match="was not written by mobileseg"):
        write_json_file(theirs, {"schema": "mobileseg.test/1"})
    assert theirs.read_text() == '{"mine": true}'
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(ArtifactError, match="is a file, not a folder"):
        write_file(tmp_path / "file" / "under" / "x.json", "{}")
    with pytest.raises(ValueError, match="schema"):
        write_json_file(tmp_path / "unmarked.json", {"value": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "new", "theirs.json"]  # no temporary files


def test_files_and_folders_get_the_users_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        with staging_folder(tmp_path / "artifact", force=False) as staging:
            (staging / "model.onnx").write_text("x")
            write_manifest(staging, {"artifacts": []})
        write_file(tmp_path / "plots" / "result.md", MARKDOWN_MARK + "\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "artifact").stat().st_mode & 0o777 == 0o750  # not the 0700 of a temporary folder
    assert (tmp_path / "plots").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "plots" / "result.md").stat().st_mode & 0o777 == 0o640


def test_which_folders_may_be_replaced(tmp_path):
    check_destination(tmp_path / "absent", force=False)
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", force=False)  # nothing in it to lose
    ours = _artifact(tmp_path / "ours", {"model.onnx": "x", "sub/weights.bin": "y"})
    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        check_destination(ours, force=False)
    check_destination(ours, force=True)
    (ours / "sub" / "README.txt").write_text("the user's")
    assert foreign_entries(ours) == ["sub/README.txt"]
    with pytest.raises(ArtifactError, match=r"holds files mobileseg did not write \(sub/README.txt\)"):
        check_destination(ours, force=True)
    (ours / "sub" / "README.txt").unlink()
    (ours / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(ArtifactError, match=r"did not write \(link\)"):
        check_destination(ours, force=True)
    theirs = tmp_path / "theirs"
    (theirs / "data").mkdir(parents=True)
    (theirs / "data" / "table.csv").write_text("1,2\n")
    (theirs / "manifest.json").write_text('{"schema": "someone-else/1", "files": {"data/table.csv": "x"}}')
    for force in (False, True):
        with pytest.raises(ArtifactError, match="is not a mobileseg artifact folder"):
            check_destination(theirs, force=force)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ArtifactError, match="is not a folder"):
        check_destination(tmp_path / "afile", force=True)
    (tmp_path / "alias").symlink_to(ours)
    with pytest.raises(ArtifactError, match="symbolic link"):
        check_destination(tmp_path / "alias", force=True)


def test_a_failed_write_leaves_nothing_and_removes_the_parents_it_made(tmp_path):
    out = tmp_path / "a" / "b" / "artifact"
    with pytest.raises(RuntimeError, match="conversion failed"):
        with staging_folder(out, force=False) as staging:
            (staging / "half.onnx").write_text("half")
            raise RuntimeError("conversion failed")
    assert list(tmp_path.iterdir()) == []


def test_a_writer_holds_the_folder_against_a_second_writer(tmp_path):
    out = tmp_path / "artifact"
    with locked(out):
        with pytest.raises(ArtifactError, match=rf"process {os.getpid()} \(mobileseg"):
            with locked(out):
                pass
    assert list(tmp_path.iterdir()) == []  # the lock file goes with its last holder


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mobileseg.outputs import locked, reading
    out, mode = Path(sys.argv[1]), sys.argv[2]
    with (reading(out) if mode == "read" else locked(out)):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
""")


def _hold(out, mode, seconds):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(out), mode, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_reader_waits_for_the_writer_and_a_writer_is_refused_while_read(tmp_path):
    out = tmp_path / "artifact"
    writer = _hold(out, "write", 1.5)
    started = time.perf_counter()
    with locked(out, shared=True):  # another process's writer: wait for it
        waited = time.perf_counter() - started
    assert waited > 0.5 and writer.wait() == 0
    reader = _hold(out, "read", 30)
    try:
        with pytest.raises(ArtifactError, match="is being written or read by"):
            with locked(out):
                pass
        with locked(out, shared=True):  # readers share
            pass
    finally:
        reader.kill()
        reader.wait()


KILLED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from mobileseg.outputs import scratch, staging_folder
    with staging_folder(Path(sys.argv[1]), force=False) as staging, scratch("export-") as folder:
        (staging / "model.onnx").write_text("half-written")
        (folder / "sample.npy").write_text("scratch")
        print(folder, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_what_a_killed_run_leaves_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "artifact"
    process = subprocess.run([sys.executable, "-c", KILLED, str(out)], capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL
    dead_scratch = Path(process.stdout.strip()).parent
    assert dead_scratch.is_dir()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert ".artifact.lock" in leftovers and any(".mobileseg-staging-" in n for n in leftovers)
    assert dead_scratch in remove_dead_scratch()  # what every run does before it makes its own scratch folder
    assert not dead_scratch.exists() and scratch_root().is_dir()
    with staging_folder(out, force=False) as staging:
        (staging / "model.onnx").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_a_retired_folder_whose_replacement_never_came_is_put_back(tmp_path):
    out = tmp_path / "artifact"
    _artifact(tmp_path / ".artifact.mobileseg-retired-123-0badcafe")  # killed between the two renames
    with locked(out):
        remove_leftovers(out)
    assert (out / "model.onnx").read_text() == "bytes" and sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]

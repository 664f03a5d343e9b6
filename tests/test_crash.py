"""Crash consistency: a write that replaces a result is all or nothing, whatever stops it.

Writers are killed with SIGKILL at each step of a write (hooks in a subprocess), the disk is filled or made
read-only (a small tmpfs, where this machine lets the tests mount one), and two processes race for the lock.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import engine
from engine.atomic import Staging
from engine.cli import cli
from engine.lock import LockError, StoreLock
from engine.methods._common import require_new, writing
from engine.sampler import draw_codes
from engine.store import Store, StoreError, StoreWriteError
from tests.conftest import PLANTED_SMALL, ROOT, run_cli

OLD = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
NEW = np.array([[0.0, 0.6, 0.8, 0.0]], np.float32)


def _store_with_result(path: Path) -> Store:
    store = Store.create(path, n=10, chunk=5, z_dim=4, attributes=["a"])
    store.write_direction("interfacegan", "age", OLD, {"space": "z", "val_accuracy": 0.9})
    store.write_table("boundary_cosine", np.eye(2), rows=["a", "b"], cols=["a", "b"])
    return store


# Each hook kills the writing process at one moment of ``write_direction`` (and of ``write_table``).
KILL_SCRIPT = """
import os, signal, sys
import numpy as np, zarr
import engine.atomic as atomic
from engine.store import Store

path, moment, what = sys.argv[1:4]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if moment == "values":            # the new array's metadata and attrs are written, its values are not
    zarr.Array.__setitem__ = die
elif moment == "install":         # complete in staging, not yet put in place
    atomic.Staging.install = die
elif moment == "between-renames": # a file system without an atomic exchange, killed between its two renames
    atomic.exchange = lambda a, b: False
    real, calls = os.rename, []
    def rename(a, b):
        calls.append(a)
        if len(calls) == 2:
            die()
        real(a, b)
    atomic.os.rename = rename
store = Store.open(path, mode="r+")
if what == "direction":
    store.write_direction("interfacegan", "age", np.array([[0.0, 0.6, 0.8, 0.0]], np.float32),
                          {"space": "z", "val_accuracy": 0.5})
else:
    store.write_table("boundary_cosine", np.full((2, 2), 7.0), rows=["a", "b"], cols=["a", "b"])
print("finished")
"""


def _kill_during_write(path: Path, moment: str, what: str) -> None:
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path), moment, what], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "finished" not in proc.stdout


@pytest.mark.parametrize("moment", ["values", "install"])
@pytest.mark.parametrize("what", ["direction", "table"])
def test_a_write_killed_before_it_is_in_place_leaves_the_old_result(tmp_path, moment, what):
    path = tmp_path / "s.zarr"
    _store_with_result(path)
    _kill_during_write(path, moment, what)
    reader = Store.open(path)
    values, attrs = reader.read_direction("interfacegan/age")
    np.testing.assert_array_equal(values, OLD)
    assert attrs["val_accuracy"] == 0.9
    np.testing.assert_array_equal(reader.read_table("boundary_cosine")[0], np.eye(2))
    assert Staging(path).root.exists()            # the dead writer's staging is still there...
    with pytest.warns(UserWarning, match="interrupted writer"):
        with writing(path, purpose="test") as store:  # ...until the next writer tidies it away
            np.testing.assert_array_equal(store.read_direction("interfacegan/age")[0], OLD)
    assert not Staging(path).root.exists()


@pytest.mark.parametrize("what", ["direction", "table"])
def test_a_write_killed_between_two_renames_is_finished_by_the_next_writer(tmp_path, what):
    path = tmp_path / "s.zarr"
    _store_with_result(path)
    _kill_during_write(path, "between-renames", what)
    # A reader before the repair finds the result absent, never half-written or zero.
    reader = Store.open(path)
    if what == "direction":
        assert "interfacegan/age" not in reader.directions()
    else:
        assert "boundary_cosine" not in reader.tables()
    with pytest.warns(UserWarning, match="finished replacing"):
        with writing(path, purpose="test") as store:
            if what == "direction":
                values, attrs = store.read_direction("interfacegan/age")
                np.testing.assert_array_equal(values, NEW)
                assert attrs["val_accuracy"] == 0.5
            else:
                np.testing.assert_array_equal(store.read_table("boundary_cosine")[0], np.full((2, 2), 7.0))
    assert not Staging(path).root.exists()


def test_replacing_a_result_swaps_it_in_one_step(tmp_path):
    path = tmp_path / "s.zarr"
    store = _store_with_result(path)
    store.write_direction("interfacegan", "age", NEW, {"space": "z", "val_accuracy": 0.5})
    values, attrs = Store.open(path).read_direction("interfacegan/age")
    np.testing.assert_array_equal(values, NEW)
    assert attrs["val_accuracy"] == 0.5
    assert not Staging(path).root.exists()
    # Plain zarr still reads it: the swapped-in array is an ordinary member of the group.
    np.testing.assert_array_equal(zarr.open_group(str(path), mode="r")["directions/interfacegan/age"][:], NEW)


def test_creation_killed_half_way_leaves_nothing_to_trip_over(tmp_path):
    path = tmp_path / "s.zarr"
    script = ("import os, signal, sys, zarr\n"
              "from engine.store import Store\n"
              "calls = []\n"
              "real = zarr.Group.create_array\n"
              "def create_array(self, *a, **k):\n"
              "    calls.append(1)\n"
              "    if len(calls) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(self, *a, **k)\n"
              "zarr.Group.create_array = create_array\n"
              "Store.create(sys.argv[1], n=100, chunk=10, z_dim=4, attributes=['a'])\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists()
    # Neither --resume nor a fresh run is refused; both start the store.
    engine.sample(str(path), PLANTED_SMALL, n=20, chunk=10, progress=False, resume=True)
    assert Store.open(path).complete and not Staging(path).root.exists()


def test_a_damaged_store_says_so_and_overwrite_replaces_it(tmp_path):
    path = tmp_path / "s.zarr"
    engine.sample(str(path), PLANTED_SMALL, n=20, chunk=10, progress=False)
    meta = path / "zarr.json"
    meta.write_text(meta.read_text()[:40])                 # a truncated root zarr.json
    with pytest.raises(StoreError, match="damaged.*--overwrite"):
        engine.sample(str(path), PLANTED_SMALL, n=20, chunk=10, progress=False, resume=True)
    proc = run_cli("info", str(path))
    assert proc.returncode == 1 and "damaged" in proc.stderr and "Traceback" not in proc.stderr
    engine.sample(str(path), PLANTED_SMALL, n=20, chunk=10, progress=False, overwrite=True)
    assert Store.open(path).complete


def test_a_store_left_unfinished_by_an_older_version_can_be_overwritten(tmp_path):
    path = tmp_path / "s.zarr"
    group = zarr.open_group(str(path), mode="w")           # what an interrupted in-place creation left
    group.create_group("latents").create_array("z", shape=(20, 4), dtype="float32")
    with pytest.raises(StoreError, match="interrupted.*--overwrite"):
        Store.open(path)
    engine.sample(str(path), PLANTED_SMALL, n=20, chunk=10, progress=False, overwrite=True)
    assert Store.open(path).complete


def test_zarr_partial_files_of_a_killed_write_are_removed_by_the_next_writer(tmp_path, recwarn):
    path = tmp_path / "s.zarr"
    _store_with_result(path)
    leftover = path / "zarr.json.0123456789abcdef.partial"
    leftover.write_text("{")
    (path / "latents" / "z" / "c").mkdir(parents=True, exist_ok=True)
    (path / "latents" / "z" / "c" / "0.abcdef.partial").write_bytes(b"\0" * 16)
    Store.open(path).directions()                        # readers are not told about zarr's leftovers
    assert not [w for w in recwarn if "partial" in str(w.message)]
    with pytest.warns(UserWarning, match="2 more|partial"):
        with writing(path, purpose="test"):
            pass
    assert not list(path.rglob("*.partial"))


# ------------------------------------------------------------------------------------------ full / read-only disk
@contextmanager
def _tmpfs(folder: Path, size: str):
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("this machine does not let the tests mount a small tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path, leave: int) -> None:
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "ballast", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def test_a_full_disk_leaves_the_result_as_it_was_and_says_so(tmp_path):
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "s.zarr"
        _store_with_result(path)
        _fill(disk, leave=16 * 1024)
        store = Store.open(path, mode="r+")
        rows = np.random.default_rng(0).standard_normal((64, 4096))      # 1 MB that does not compress
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        with pytest.raises(StoreWriteError, match=r"^disk full while writing directions/interfacegan/age of .*; "
                                                  r"the store is unchanged; free space and run the command again"):
            store.write_direction("interfacegan", "age", rows, {"space": "z"})
        values, attrs = Store.open(path).read_direction("interfacegan/age")
        np.testing.assert_array_equal(values, OLD)
        assert attrs["val_accuracy"] == 0.9
        assert not Staging(path).root.exists()


def test_a_full_disk_during_sampling_keeps_committed_chunks_and_resumes(tmp_path):
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        path = disk / "s.zarr"
        reference = tmp_path / "reference.zarr"
        engine.sample(str(reference), PLANTED_SMALL, ["planted"], n=4000, chunk=500, progress=False)
        engine.sample(str(path), PLANTED_SMALL, ["planted"], n=4000, chunk=500, progress=False)
        group = zarr.open_group(str(path), mode="r+")
        for i in range(4, 8):                              # forget the last chunks, as if the run had stopped
            group["progress"][i] = 0
            for name in ("latents/z", "latents/w", "scores"):
                group[name][i * 500:(i + 1) * 500] = np.nan
        _fill(disk, leave=8 * 1024)
        proc = run_cli("sample", str(path), "-g", PLANTED_SMALL, "-p", "planted", "-n", "4000", "--chunk", "500",
                       "--resume", "-q")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "disk full while writing chunk" in proc.stderr and "--resume" in proc.stderr
        assert Store.open(path).progress()[:4].all()
        (disk / "ballast").unlink()
        run_cli("sample", str(path), "-g", PLANTED_SMALL, "-p", "planted", "-n", "4000", "--chunk", "500",
                "--resume", "-q", check=True)
        np.testing.assert_array_equal(zarr.open_group(str(path))["latents/z"][:],
                                      zarr.open_group(str(reference))["latents/z"][:])


def test_a_read_only_store_is_refused_before_any_computation(tmp_path):
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "s.zarr"
        _store_with_result(path).write_direction("interfacegan", "age_copy", NEW, {"space": "z"})
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(StoreWriteError, match="read-only file system; nothing was computed or written"):
            require_new(Store.open(path), ["directions/interfacegan/other"], overwrite=False)
        result = CliRunner().invoke(cli, ["condition", str(path), "--primary", "age", "--condition", "age_copy"])
        assert result.exit_code == 1 and "read-only" in result.output.lower()
        np.testing.assert_array_equal(Store.open(path).read_direction("interfacegan/age")[0], OLD)


# ------------------------------------------------------------------------------------------ the lock
def _contend(path: str, barrier, trials: int, stale_record: str | None, log: str) -> None:
    for _ in range(trials):
        barrier.wait()
        try:
            with StoreLock(path):
                start = time.monotonic()
                time.sleep(0.002)
                end = time.monotonic()
            with open(log, "a") as f:
                f.write(f"{start} {end}\n")
        except LockError:
            pass
        barrier.wait()
        if stale_record is not None:
            Path(path + ".lock").write_text(stale_record)
        barrier.wait()


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-record"])
def test_two_processes_never_hold_the_lock_at_once(tmp_path, stale):
    path = str(tmp_path / "s.zarr")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = json.dumps({"host": os.uname().nodename, "pid": dead.pid, "purpose": "sample"}) if stale else None
    if record:
        Path(path + ".lock").write_text(record)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    log = str(tmp_path / "held.log")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workers = [context.Process(target=_contend, args=(path, barrier, 100, record, log)) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
    assert all(w.exitcode == 0 for w in workers)
    spans = sorted(tuple(map(float, line.split())) for line in Path(log).read_text().splitlines())
    assert len(spans) >= 100                               # every trial had a holder
    overlaps = sum(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    assert overlaps == 0


def test_a_lock_file_left_empty_or_naming_a_reused_pid_does_not_block(tmp_path):
    path = str(tmp_path / "s.zarr")
    Path(path + ".lock").write_text("")                    # killed between creating and writing the file
    with StoreLock(path):
        pass
    # A record naming a live process that is not a writer (a reused pid) does not hold the lock either.
    Path(path + ".lock").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getppid()}))
    with pytest.warns(UserWarning, match="stale lock"):
        with StoreLock(path) as lock:
            with pytest.raises(LockError, match=f"pid {os.getpid()}"):
                StoreLock(path).acquire()
            assert lock.held
    assert not Path(path + ".lock").exists()


# ------------------------------------------------------------------------------------------ validation first
def test_bad_sampling_requests_fail_before_anything_is_written(tmp_path):
    path = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        engine.sample(str(path), PLANTED_SMALL, n=10, seed=-1, progress=False)
    with pytest.raises(ValueError, match="chunks of at least"):
        engine.sample(str(path), PLANTED_SMALL, n=10**12, progress=False)
    assert not path.exists() and not Path(str(path) + ".lock").exists()
    # A chunk far beyond n draws and stores only the n rows (not chunk x z_dim values).
    store = engine.sample(str(path), PLANTED_SMALL, n=10, chunk=10_000_000, progress=False)
    assert store.chunk == 10 and store.array("latents/z").chunks == (10, 128)
    np.testing.assert_array_equal(store.array("latents/z")[:], draw_codes(0, 0, 10_000_000, 128, rows=10))


def test_drawing_part_of_a_chunk_gives_that_part_of_the_full_draw():
    full = draw_codes(3, 5, 1000, 64)
    for rows in (1, 17, 999, 1000):
        np.testing.assert_array_equal(draw_codes(3, 5, 1000, 64, rows=rows), full[:rows])


# ------------------------------------------------------------------------------------------ one-line errors
def test_a_spec_module_that_fails_to_import_is_one_line(tmp_path):
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text("def make(:\n    pass\n")
    (package / "raising.py").write_text("raise RuntimeError('no GPU here')\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    for module, expected in (("mymodels.broken", "SyntaxError: "), ("mymodels.raising", "RuntimeError: no GPU here")):
        proc = run_cli("sample", str(tmp_path / "s.zarr"), "-g", f"{module}:make", "-n", "4", env=env)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("Error: --generator") and expected in proc.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_an_unplanned_exception_is_reported_as_a_bug_with_its_traceback_saved(tmp_path, monkeypatch):
    import engine.summary

    def broken(store):
        raise KeyError("progress")

    monkeypatch.setattr(engine.summary, "summarize", broken)
    store = tmp_path / "s.zarr"
    Store.create(store, n=10, chunk=5, z_dim=4)
    result = CliRunner().invoke(cli, ["info", str(store)])
    assert result.exit_code == 70
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: a bug in latent-engine (KeyError") and "LATENT_ENGINE_DEBUG=1" in line
    saved = Path(line.split("the traceback is in ")[1].split(";")[0])
    assert "KeyError" in saved.read_text() and "Traceback" in saved.read_text()
    saved.unlink()


def test_memory_error_is_one_line(tmp_path, monkeypatch):
    import engine.summary

    def exhausted(store):
        raise MemoryError()

    monkeypatch.setattr(engine.summary, "summarize", exhausted)
    store = tmp_path / "s.zarr"
    Store.create(store, n=10, chunk=5, z_dim=4)
    result = CliRunner().invoke(cli, ["info", str(store)])
    assert result.exit_code == 1 and "out of memory" in result.output and "--batch" in result.output


def test_library_errors_name_parameters_and_the_cli_names_flags(planted_store):
    from engine.methods.interfacegan import boundaries

    with pytest.raises(ValueError, match=r"^ratio must be in \(0, 0.5\]; got 0.9$"):
        boundaries(planted_store.path, ratio=0.9)
    result = CliRunner().invoke(cli, ["boundaries", planted_store.path, "--ratio", "0.9"])
    assert result.exit_code == 1 and result.output.strip() == "Error: --ratio must be in (0, 0.5]; got 0.9"
    result = CliRunner().invoke(cli, ["sample", str(Path(planted_store.path).parent / "x.zarr"), "-g", "planted",
                                      "-n", "10", "--invalid-option"])
    assert result.exit_code == 2                          # click's usage error, as the README says


def test_a_store_reached_through_a_symlink_has_one_lock_and_stages_beside_the_real_folder(tmp_path):
    real = tmp_path / "disk" / "s.zarr"
    real.parent.mkdir()
    _store_with_result(real)
    link = tmp_path / "link.zarr"
    link.symlink_to(real)
    with StoreLock(str(link)):
        with pytest.raises(LockError, match="being written by another process"):
            StoreLock(str(real)).acquire()
    assert Staging(link).root == Staging(real).root == real.with_name("s.zarr.staging")
    Store.open(link, mode="r+").write_direction("interfacegan", "age", NEW, {"space": "z"})
    np.testing.assert_array_equal(Store.open(real).read_direction("interfacegan/age")[0], NEW)
    assert link.is_symlink()


def test_a_failed_second_rename_puts_the_old_result_back(tmp_path, monkeypatch):
    import errno

    import engine.atomic as atomic

    path = tmp_path / "s.zarr"
    store = _store_with_result(path)
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)       # a file system without RENAME_EXCHANGE
    real, calls = os.rename, []

    def rename(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error", str(b))
        real(a, b)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(StoreWriteError, match="the store is unchanged"):
        store.write_direction("interfacegan", "age", NEW, {"space": "z"})
    monkeypatch.undo()
    np.testing.assert_array_equal(Store.open(path).read_direction("interfacegan/age")[0], OLD)
    assert not Staging(path).root.exists()


def test_an_import_that_fails_half_way_leaves_the_existing_store_as_it_was(tmp_path, monkeypatch):
    from engine.interop import import_interfacegan

    rng = np.random.default_rng(0)
    np.save(tmp_path / "z.npy", rng.standard_normal((600, 4)).astype(np.float32))
    np.save(tmp_path / "smile_scores.npy", rng.standard_normal(600).astype(np.float32))
    path = tmp_path / "s.zarr"
    before = import_interfacegan(tmp_path / "z.npy", tmp_path / "smile_scores.npy", path, chunk=100)
    codes = before.array("latents/z")[:]
    real, written = Store.write_chunk, []

    def fail_on_the_fourth(self, index, arrays):
        written.append(index)
        if len(written) == 4:
            raise OSError(28, "No space left on device", "chunk")
        real(self, index, arrays)

    monkeypatch.setattr(Store, "write_chunk", fail_on_the_fourth)
    with pytest.raises(StoreWriteError, match=r"^disk full while writing the new store .*; the existing store is "
                                              r"unchanged; free space and run the command again"):
        import_interfacegan(tmp_path / "z.npy", tmp_path / "smile_scores.npy", path, chunk=50, overwrite=True)
    monkeypatch.undo()
    after = Store.open(path)
    assert after.complete and after.chunk == 100 and not Staging(path).root.exists()
    np.testing.assert_array_equal(after.array("latents/z")[:], codes)

"""Writing results over what is not a regular file: links, devices, pipes, folders, ``-``."""

import io
import os
import stat
import subprocess
import sys
import threading

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from pyro_lvae.cli import main
from pyro_lvae.errors import CheckpointError
from pyro_lvae.io import atomic_save, atomic_write_text, save_figure, write_csv


def _figure():
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    return fig


#: each atomic writer, and a check that a file holds what it wrote
WRITERS = {
    "text": (lambda p: atomic_write_text("a,b\n1,2\n", p),
             lambda p: open(p).read() == "a,b\n1,2\n"),
    "csv": (lambda p: write_csv([{"a": 1, "b": 2}], p), lambda p: open(p).read() == "a,b\n1,2\n"),
    "torch": (lambda p: atomic_save({"w": torch.arange(3)}, p),
              lambda p: torch.load(p, weights_only=True)["w"].tolist() == [0, 1, 2]),
    "figure": (lambda p: save_figure(_figure(), p),
               lambda p: open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny fitted table model (a few steps: the outputs, not the fit, are under test)."""
    folder = tmp_path_factory.mktemp("outputs")
    pd.DataFrame({"x": [0.1 * i for i in range(20)], "c": ["a", "b"] * 10}).to_csv(
        folder / "data.csv", index=False)
    assert main(["tabular", "fit", str(folder / "data.csv"), "--out", str(folder / "m"),
                 "--steps", "3", "--hidden", "4", "--blocks", "1", "--latent-dim", "2",
                 "--device", "cpu", "--quiet"]) == 0
    return folder / "m"


@pytest.mark.parametrize("kind", list(WRITERS))
@pytest.mark.parametrize("exists", [True, False], ids=["to-a-file", "to-no-file-yet"])
def test_a_link_stays_a_link_and_its_target_gets_the_content(tmp_path, kind, exists):
    write, holds = WRITERS[kind]
    target = tmp_path / "real" / "out.png"
    target.parent.mkdir()
    if exists:
        target.write_text("old")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    write(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.is_file() and holds(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]  # no temporary left


def test_a_named_pipe_is_written_through_not_replaced(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()), daemon=True)
    reader.start()
    atomic_write_text("a,b\n1,2\n", fifo)
    reader.join(timeout=10)
    assert received == ["a,b\n1,2\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_link_to_a_device_is_written_through_and_kept(tmp_path, kind):
    # a link of our own to /dev/null, as /dev/stdout is one to /proc/self/fd/1: an atomic
    # rename would replace the link (and, written to directly, the device itself)
    link = tmp_path / "null.png"
    link.symlink_to(os.devnull)
    WRITERS[kind][0](link)
    assert link.is_symlink() and os.readlink(link) == os.devnull
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


@pytest.mark.parametrize("folder", ["plain", "link"])
def test_a_folder_is_refused(tmp_path, folder):
    target = tmp_path / "d"
    target.mkdir()
    if folder == "link":
        (tmp_path / "l").symlink_to(target)
        target = tmp_path / "l"
    with pytest.raises(CheckpointError, match="is a folder"):
        atomic_write_text("x", target)
    assert target.is_dir() and list(target.iterdir()) == []


def test_sample_to_dash_prints_the_rows_on_stdout_and_messages_on_stderr(
        model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tabular", "sample", str(model), "-n", "7", "-o", "-", "--seed", "0"]) == 0
    out, err = capsys.readouterr()
    rows = pd.read_csv(io.StringIO(out))
    assert list(rows.columns) == ["x", "c"] and len(rows) == 7
    assert "wrote 7 rows" in err and "wrote" not in out
    assert list(tmp_path.iterdir()) == []


def test_sample_through_a_link_to_stdout_reaches_the_pipe(model, tmp_path):
    # what `-o /dev/stdout` does, with a link of our own: the rows reach the reading process
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    proc = subprocess.run([sys.executable, "-m", "pyro_lvae.cli", "tabular", "sample",
                           str(model), "-n", "5", "-o", str(link)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "x,c" and len(proc.stdout.splitlines()) >= 6
    assert link.is_symlink()


@pytest.mark.parametrize("name", ["x.parquet", "x.xlsx", "x.json"])
def test_sample_refuses_a_format_it_cannot_write_before_any_work(tmp_path, capsys, name):
    # the model folder does not exist: the output is refused first, and nothing is written
    code = main(["tabular", "sample", str(tmp_path / "no-model"), "-n", "5",
                 "-o", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert code == 2 and ".csv" in err and "CSV" in err and name in err
    assert list(tmp_path.iterdir()) == []


def test_sample_refuses_a_folder_before_any_work(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    code = main(["tabular", "sample", str(tmp_path / "no-model"), "-n", "5",
                 "-o", str(tmp_path / "d")])
    assert code == 2 and "is a folder" in capsys.readouterr().err
    assert list((tmp_path / "d").iterdir()) == []


def test_bench_refuses_an_output_it_cannot_write_before_timing(tmp_path, capsys):
    assert main(["bench", "--quick", "--device", "cpu", "--out", str(tmp_path / "b.json")]) == 2
    assert ".md" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_writing_to_dev_stdout_appends_to_a_redirected_file(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("earlier line\n")
    code = ("from pyro_lvae.io import atomic_write_text; "
            "atomic_write_text('new line\\n', '/dev/stdout')")
    with open(log, "a") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, check=True)
    assert log.read_text() == "earlier line\nnew line\n"

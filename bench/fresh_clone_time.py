"""Sum the wall time of a command timed by ``bench/fresh_clone.sh``, over its segments, without its pauses.

A segment runs from its ``command start`` stamp to its ``command end`` stamp, or, for a segment that was
killed, to the next segment's ``previous segment last alive`` heartbeat (within 30 s of the kill). A segment
killed before heartbeats existed has neither: its length is read from its training progress lines
(completed epochs' ``steps in ...`` plus the last partial epoch's elapsed time), a lower bound marked so.
Time between ``paused (SIGSTOP) T`` and ``continued (SIGCONT) T`` stamps (the machine lent to another
benchmark) does not count. Writes ``OUT.md`` and ``OUT.json``: the segments and the total, install included.

    .venv/bin/python bench/fresh_clone_time.py bench/results/cifar10-cpu/fresh-clone.log \\
        --out bench/results/cifar10-cpu/fresh-clone-time
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

if not __package__:  # run as `python bench/fresh_clone_time.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import header, provenance_md, publish, rel  # noqa: E402

STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")
DURATION = re.compile(r"(\d+) h (\d+) min|(?:(\d+) min )?(\d+) s\b")  # as robustopt._progress writes them
EPOCH_DONE = re.compile(r"^epoch \d+/\d+: (\d+)/\1 steps in (.+?), loss")
EPOCH_PARTIAL = re.compile(r"^epoch \d+/\d+: \d+/\d+ steps \(\d+%\), (.+?), loss")


def stamp_of(line: str) -> datetime:
    """The UTC time stamped in a line of the log."""
    found = STAMP.search(line)
    if not found:
        raise ValueError(f"no time stamp in log line {line!r}")
    return datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%SZ")


def seconds_of(text: str) -> int:
    """Seconds of a duration as the progress lines write it ("2 h 10 min", "4 min 59 s", "31 s")."""
    found = DURATION.search(text)
    if not found:
        raise ValueError(f"no duration in {text!r}")
    h, hm, m, s = (int(g or 0) for g in found.groups())
    return 3600 * h + 60 * (hm + m) + s


@dataclass
class Segment:
    start: datetime
    end: datetime | None = None
    progress: float = 0.0  # completed epochs' durations: the lower bound of a segment without an end stamp
    partial: float = 0.0   # elapsed time of the epoch running at the last progress line
    pauses: list[tuple[datetime, datetime]] = field(default_factory=list)  # (stopped, continued)

    @property
    def paused(self) -> float:
        return sum((resumed - stopped).total_seconds() for stopped, resumed in self.pauses)

    @property
    def seconds(self) -> float:
        if self.end is None:
            return self.progress + self.partial
        return (self.end - self.start).total_seconds() - self.paused


def read_segments(text: str) -> tuple[int | None, list[Segment]]:
    """The install time (None if the log has none) and the command's segments, in order."""
    install, segments, paused_at = None, [], None
    for line in text.splitlines():
        if line.startswith("install took "):
            install = seconds_of(line)
        elif line.startswith("command start"):
            segments.append(Segment(start=stamp_of(line)))
            if install is None and "(install took" in line:
                install = seconds_of(line.split("(install took", 1)[1])
        elif line.startswith("previous segment last alive") and segments and segments[-1].end is None:
            segments[-1].end = stamp_of(line)  # a killed segment's end (a finished one has its end stamp)
        elif line.startswith("command end") and segments:
            segments[-1].end = stamp_of(line)
        elif line.startswith("paused (SIGSTOP)"):
            paused_at = stamp_of(line)
        elif line.startswith("continued (SIGCONT)") and paused_at is not None and segments:
            segments[-1].pauses.append((paused_at, stamp_of(line)))
            paused_at = None
        elif segments and (done := EPOCH_DONE.match(line)):
            segments[-1].progress += seconds_of(done.group(2))
            segments[-1].partial = 0.0
        elif segments and (running := EPOCH_PARTIAL.match(line)):
            segments[-1].partial = seconds_of(running.group(1))
    return install, segments


def hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s:,} s ({s // 3600} h {s % 3600 // 60} min)"


def timing(text: str) -> dict:
    """The timing of a fresh_clone.sh log: install, segments (start, end, paused, counted), total, finished."""
    install, segments = read_segments(text)
    if not segments:
        raise ValueError("no 'command start' stamp: is this a log written by bench/fresh_clone.sh?")
    ends = re.findall(r"^command end: exit status (\d+)", text, re.M)
    return {
        "install_seconds": install,
        "segments": [{"start_utc": f"{seg.start:%Y-%m-%dT%H:%M:%SZ}",
                      "end_utc": f"{seg.end:%Y-%m-%dT%H:%M:%SZ}" if seg.end else None,
                      "paused_seconds": seg.paused, "pauses": len(seg.pauses), "seconds": seg.seconds}
                     for seg in segments],
        "total_seconds": (install or 0) + sum(seg.seconds for seg in segments),
        "finished": bool(ends),
        "exit_status": int(ends[-1]) if ends else None,  # the last segment's
    }


def markdown(report: dict) -> str:
    t = report["timing"]
    rows = [f"# Wall time of a command timed from a fresh clone ({report['log']})", "",
            "| part | from (UTC) | to (UTC) | paused | counted |", "|---|---|---|---|---|"]
    if t["install_seconds"] is not None:
        rows.append(f"| clone and install | | | | {t['install_seconds']} s |")
    for i, seg in enumerate(t["segments"], 1):
        end = seg["end_utc"] or "(no end stamp: from its progress lines, a lower bound)"
        rows.append(f"| segment {i} | {seg['start_utc']} | {end} | {round(seg['paused_seconds']):,} s "
                    f"({seg['pauses']} pauses) | {hms(seg['seconds'])} |")
    rows.append(f"| **total** | | | | **{hms(t['total_seconds'])}**{'' if t['finished'] else ' (not finished)'} |")
    if t["exit_status"]:
        rows.append(f"| the command failed: exit status {t['exit_status']} (see the end of the log) | | | | |")
    return "\n".join(rows + [""] + provenance_md(report))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", type=Path, help="a log written by bench/fresh_clone.sh")
    p.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    report = header("fresh-clone-time")
    report["log"] = rel(args.log)
    report["timing"] = timing(args.log.read_text())
    publish(args.out, report, markdown, t0)


if __name__ == "__main__":
    main()

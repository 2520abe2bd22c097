"""What a leaderboard refresh cost, per model and threat, from the committed entries' provenance: wall
seconds, CPU seconds (summed over the tasks, wherever they ran; absent in entries computed before the
executors counted it) and the number of tasks (stored parts), as the markdown tables of leaderboards/README.md.

    python perf/refresh_cost.py mnist fashion-mnist
"""
from __future__ import annotations

import argparse
import json

from robench.leaderboard import locate
from robench.leaderboard.spec import Spec
from robench.spec import ThreatSpec


def labels(threats: list[str]) -> dict[str, str]:
    """Threat text -> a short label: its name, with the parameters that tell apart threats of one name."""
    specs = {text: ThreatSpec.parse(text) for text in threats}
    out = {}
    for text, spec in specs.items():
        twins = [other.params for other in specs.values() if other.name == spec.name]
        differ = [k for k, v in spec.params.items() if any(p.get(k) != v for p in twins)]
        out[text] = spec.name + (f" ({', '.join(f'{k}={spec.params[k]}' for k in differ)})" if differ else "")
    return out


def board_table(name: str) -> str:
    folder = locate(name)
    spec = Spec.load(folder / "spec.toml")
    entries = {m: json.loads((folder / "entries" / f"{m}.json").read_text()) for m in sorted(spec.models)}
    label = labels(spec.threats)
    lines = [f"| threat | {' | '.join(entries)} |", "|---" * (len(entries) + 1) + "|"]
    wall_total, cpu_total = dict.fromkeys(entries, 0.0), dict.fromkeys(entries, 0.0)
    for threat in spec.threats:
        cells = []
        for model, entry in entries.items():
            record = next((r for r in entry["records"] if r["threat"] == threat), None)
            if record is None:
                cells.append("-")
                continue
            p = record["provenance"]
            wall, cpu = float(p.get("wall_seconds", 0)), p.get("cpu_seconds")
            wall_total[model] += wall
            cpu_total[model] += float(cpu or 0)
            cpu_text = "" if cpu is None else f" / {float(cpu):.0f} s CPU"
            cells.append(f"{wall:.0f} s{cpu_text} ({p.get('tasks', '?')})")
        lines.append(f"| {label[threat]} | {' | '.join(cells)} |")
    lines.append("| **total** | " + " | ".join(f"**{wall_total[m] / 60:.1f} min / {cpu_total[m] / 60:.1f} min CPU**"
                                             for m in entries) + " |")
    return "\n".join(lines) + (f"\n\n{len(entries)} models, {sum(wall_total.values()) / 60:.0f} min of wall time, "
                               f"{sum(cpu_total.values()) / 60:.0f} min of CPU time in all.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("boards", nargs="+", help="leaderboard names")
    for name in parser.parse_args().boards:
        print(f"{name}: wall / CPU time per Record (tasks)\n\n{board_table(name)}\n")


if __name__ == "__main__":
    main()

"""The leaderboard commands: `update` (compute what is missing or stale, write entries, re-render),
`submit` (evaluate a user's model under a leaderboard's exact protocol) and `verify` (recompute a random
sample of an entry and compare)."""
from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from robench.errors import RobenchError
from robench.leaderboard import claims
from robench.leaderboard.entries import (CONFIDENCES, OUTCOMES, Leaderboard, _unpack, check_entry_name, dump_entry,
                                         entry_path, make_entry, outcome_masks, record_problem, with_outcomes)
from robench.metrics import Accuracy, accuracies

#: `verify` fails an accuracy whose two-sided hypergeometric p-value is below this
P_THRESHOLD = 0.001

Loader = Callable[[str], Any]


def _zoo_loader(name: str, data_root: str | None = None, progress: bool = False) -> Any:
    from robench import zoo

    return zoo.get(name).load(data_root=data_root, progress=progress)


def update(name: str | Path, *, store: Any = None, device: str | None = None, data_root: str | None = None,
           loader: Loader | None = None, progress: bool = False, models: Sequence[str] | None = None,
           executor: Any = None, log: Callable[[str], None] = lambda s: None) -> Leaderboard:
    """Compute every missing or stale Record of the spec's models (stale: another protocol, an older
    threat version, or other weights) through the results store, write the entries and re-render.
    `executor` runs the shards (robench.get_executor: "ray" spreads them over Ray workers); an interrupted
    update resumes from the shards in the store.
    An entry that contradicts itself (see accuracy_problems) is refused before anything is computed."""
    from robench.evaluate import evaluate, model_fingerprint
    from robench.store import Store
    from robench.threats import build_threat
    from robench.files import atomic_write

    lb = Leaderboard.load(name)
    problems = lb.spec.problems()
    if problems:
        raise RobenchError(f"{lb.folder / 'spec.toml'}: " + "; ".join(problems))
    _refuse_inconsistent(lb)
    store = store if isinstance(store, Store) else Store(store)
    versions = lb.threat_versions()
    load = loader or (lambda m: _zoo_loader(m, data_root, progress))
    for model_name in models or lb.spec.models:
        if model_name not in lb.spec.models:
            raise RobenchError(f"model {model_name!r} is not in {lb.spec.name}'s spec; add it to models first.")
        entry = lb.entries.get(model_name)
        if entry and entry.get("source", {}).get("zoo") is None and loader is None:
            log(f"{model_name}: submitted entry, kept as is (re-run `robench leaderboard submit` to refresh)")
            continue
        model = load(model_name)
        sha = model_fingerprint(model)
        records = lb.records(model_name)
        keep = {t for m, t in claims.confidence_cells(lb) if m == model_name}
        lacking = {t for t in keep if t in records and CONFIDENCES not in records[t]}
        todo = [t for t in lb.spec.threats
                if t in lacking or record_problem(lb.spec, records.get(t), t, versions, sha)]
        if not todo and entry and entry.get("protocol") == lb.spec.protocol:
            log(f"{model_name}: up to date")
            continue
        old = sorted({str(r.get("provenance", {}).get("model_sha256"))[:12] for r in records.values()})
        if old and sha[:12] not in old:
            log(f"{model_name}: weights {sha[:12]} differ from the entry's {', '.join(old)} (trained on another "
                "CPU or torch build? see leaderboards/README.md): recomputing every record")
        for t in todo:
            why = record_problem(lb.spec, records.get(t), t, versions, sha) or "a claim on calibration needs its confidences"
            log(f"{model_name}: {t.split(':')[0]} ({why})")
        by_threat = dict(records)
        for count, group in _by_count(lb.spec, todo):
            built = [build_threat(t) for t in group]
            fresh = evaluate(model, built, dataset=lb.spec.dataset, split=lb.spec.split, n=count,
                             data_root=data_root, store=store, seed=lb.spec.seed, device=device,
                             model_name=model_name, progress=progress, with_outputs=True, executor=executor)
            by_threat.update({r.threat: with_outcomes(r, t, r.threat in keep) for r, t in zip(fresh, built)})
        for rec in by_threat.values():
            rec["model"] = model_name
            rec["provenance"]["model"] = model_name
        entry = make_entry(lb.spec, model_name, [by_threat[t] for t in lb.spec.threats],
                           {"zoo": model_name})
        text = dump_entry(entry)
        atomic_write(entry_path(lb.folder, model_name), text)
        lb.entries[model_name] = json.loads(text)  # render exactly what `check` will read back
    _refuse_inconsistent(lb)
    for path in lb.render_to_disk():
        log(f"wrote {path}")
    return lb


def _by_count(spec: Any, threats: Sequence[str]) -> list[tuple[int, list[str]]]:
    """`threats` grouped by the number of examples the spec evaluates them on (largest first)."""
    groups: dict[int, list[str]] = {}
    for t in threats:
        groups.setdefault(spec.n_of(t), []).append(t)
    return sorted(groups.items(), reverse=True)


def _refuse_inconsistent(lb: Leaderboard) -> None:
    for model in lb.spec.models:
        problems = lb.inconsistencies(model)
        if problems:
            raise RobenchError(f"entry {model} of {lb.spec.name} contradicts itself (edited by hand?), so it is not "
                               f"rendered: {'; '.join(problems)}. Restore entries/{model}.json, or delete it to "
                               "recompute it.")


def submit(name: str | Path, model: Any, model_name: str, *, source: dict[str, Any], out: str | Path | None = None,
           store: Any = None, device: str | None = None, data_root: str | None = None,
           progress: bool = False, executor: Any = None) -> Path:
    """Evaluate a user's model under the leaderboard's exact protocol and write its entry file (default
    ``<model_name>.json`` in the current folder), ready to add to entries/ with the name in the spec."""
    from robench.evaluate import evaluate
    from robench.threats import build_threat
    from robench.files import atomic_write

    check_entry_name(model_name)
    lb = Leaderboard.load(name)
    by_threat = {}
    for count, group in _by_count(lb.spec, lb.spec.threats):
        built = [build_threat(t) for t in group]
        records = evaluate(model, built, dataset=lb.spec.dataset, split=lb.spec.split, n=count, data_root=data_root,
                           store=store, seed=lb.spec.seed, device=device, model_name=model_name, progress=progress,
                           with_outputs=True, executor=executor)
        by_threat.update({r.threat: with_outcomes(r, t) for r, t in zip(records, built)})
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    entry = make_entry(lb.spec, model_name, [by_threat[t] for t in lb.spec.threats], {**source, "submitted": stamp})
    path = Path(out) if out else Path(f"{model_name}.json")
    atomic_write(path, dump_entry(entry))
    return path


def hypergeom_p(k: int, n: int, K: int, N: int) -> float:
    """Two-sided p-value of k correct among n examples drawn without replacement from N of which K are
    correct: the probability of a count no more likely than k (scipy.stats.hypergeom)."""
    import numpy as np
    from scipy.stats import hypergeom

    if not (0 <= K <= N and 0 <= n <= N):
        return 0.0
    dist = hypergeom(N, K, n)
    pmf = dist.pmf(np.arange(max(0, n - (N - K)), min(n, K) + 1))
    return float(min(1.0, pmf[pmf <= dist.pmf(k) * (1 + 1e-7)].sum()))


@dataclass
class Verdict:
    """One accuracy of the sample against the entry's: by the exact test of its count, or, for a
    deterministic threat's accuracy with per-example outcomes in the entry, example by example."""

    threat: str
    metric: str
    entry: Accuracy
    sample: Accuracy
    #: two-sided hypergeometric p-value of the sample's count under the entry's per-example outcomes
    p: float = 1.0
    #: examples (slice indices) whose outcome differs from the entry's; None where not compared one by one
    mismatches: list[int] | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches if self.mismatches is not None else self.p >= P_THRESHOLD

    @property
    def how(self) -> str:
        if self.mismatches is None:
            return f"exact test p={self.p:.3g}"
        if not self.mismatches:
            return f"same outcome on all {self.sample.n} examples"
        shown = ", ".join(map(str, self.mismatches[:10])) + (", ..." if len(self.mismatches) > 10 else "")
        return f"outcome differs on {len(self.mismatches)} examples: {shown}"


@dataclass
class Verification:
    verdicts: list[Verdict]
    indices: list[int]
    seed: int
    #: the model's weights fingerprint and the entry's (model_sha256 of its records)
    model_sha256: str
    entry_sha256: list[str]

    @property
    def weights_match(self) -> bool:
        return self.entry_sha256 == [self.model_sha256]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def verify(name: str | Path, model_name: str, *, n: int = 100, seed: int | None = None, device: str | None = None,
           data_root: str | None = None, loader: Loader | None = None, progress: bool = False,
           log: Callable[[str], None] = lambda s: None) -> Verification:
    """Recompute `n` randomly drawn examples of an entry (drawn from the examples every verified threat
    covers; per-example threats only; whole-slice threats such
    as bit flips are left out) with a fresh store, and compare each accuracy with the entry's: example by
    example where the entry has per-example outcomes of a deterministic threat and the weights are the
    entry's, else by the exact (hypergeometric) test of the count. Says through `log`, before evaluating,
    when the model's weights are not the entry's."""
    import numpy as np

    from robench.evaluate import evaluate, model_fingerprint
    from robench.store import Store
    from robench.threats import build_threat

    lb = Leaderboard.load(name)
    if model_name not in lb.entries:
        raise RobenchError(f"{lb.spec.name} has no entry for {model_name!r}; entries: {', '.join(lb.entries)}.")
    problems = lb.inconsistencies(model_name)
    if problems:
        raise RobenchError(f"entry {model_name} contradicts itself, so there is nothing to verify: "
                           + "; ".join(problems))
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
    rng = np.random.default_rng(seed)
    records = lb.records(model_name)
    threats = [build_threat(t) for t in lb.spec.threats if t in records]
    threats = [t for t in threats if t.shard_size is not None]
    if not threats:
        raise RobenchError(f"{model_name}'s entry has no per-example threat to verify.")
    population = min(lb.spec.n_of(t.canonical) for t in threats)  # examples every verified threat covers
    indices = sorted(rng.choice(population, size=min(n, population), replace=False).tolist())
    model = (loader or (lambda m: _zoo_loader(m, data_root, progress)))(model_name)
    sha = model_fingerprint(model)
    entry_sha = sorted({str(r.get("provenance", {}).get("model_sha256")) for r in records.values()})
    if entry_sha != [sha]:
        log(f"{model_name}: the weights differ from the entry's: model sha256 {sha[:16]}, entry "
            f"{', '.join(s[:16] for s in entry_sha)} (trained on another CPU or torch build? see "
            "leaderboards/README.md); comparing counts only, not example by example")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = evaluate(model, threats, dataset=lb.spec.dataset, split=lb.spec.split, indices=indices,
                         data_root=data_root, store=Store(Path(tmp) / "verify.sqlite"), seed=lb.spec.seed,
                         device=device, model_name=model_name, progress=progress, with_outputs=True)
    verdicts = []
    for record, threat in zip(fresh, threats):
        stored = records[record.threat]
        entry_acc = accuracies(stored["metrics"])
        masks = outcome_masks(threat, record.outputs or {}) if entry_sha == [sha] else {}
        for metric, value in accuracies(record.metrics).items():
            if metric not in entry_acc:
                continue
            want = entry_acc[metric]
            verdict = Verdict(record.threat, metric, want, value,
                              hypergeom_p(value.correct, value.n, want.correct, want.n))
            if metric in masks and metric in stored.get(OUTCOMES, {}):
                expected = _unpack(stored[OUTCOMES][metric], want.n)[indices]
                verdict.mismatches = [i for i, a, b in zip(indices, masks[metric], expected) if a != b]
            verdicts.append(verdict)
    return Verification(verdicts, indices, seed, sha, entry_sha)

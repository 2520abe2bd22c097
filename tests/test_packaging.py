import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_holds_every_module_under_robench_only(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), "--quiet"], check=True, capture_output=True)
    wheel = next(tmp_path.glob("robench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"robench/{p.relative_to(ROOT / 'robench').as_posix()}" for p in (ROOT / "robench").rglob("*.py")}
    for folder in ("attacks", "defenses", "corruptions", "leaderboards"):
        expected |= {f"robench/{folder}/{p.relative_to(ROOT / folder).as_posix()}"
                     for p in (ROOT / folder).rglob("*.py")}
    # package data: the leaderboard page template and the shipped benchmark files (the quickstart's)
    expected |= {f"robench/{p.relative_to(ROOT / 'robench').as_posix()}" for pattern in
                 ("leaderboard/templates/*.html", "benchmarks/*.toml") for p in (ROOT / "robench").glob(pattern)}
    assert "robench/leaderboard/templates/page.html" in expected and "robench/benchmarks/quickstart.toml" in expected
    assert expected <= names, sorted(expected - names)
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"attacks", "defenses", "corruptions", "leaderboards", "sources", "tests", "perf"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "robench = robench.cli:main" in text and "timm = robench.sources.timm_models:Timm" in text

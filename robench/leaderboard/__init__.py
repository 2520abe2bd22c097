"""Leaderboards: a folder with spec.toml (the protocol), entries/<model>.json (one entry per model: the
Records of every threat, with 95% intervals and provenance), and README.md, index.html and figures/*.svg
rendered from the entries.

One module per job: `spec` (where boards live, spec.toml), `entries` (the entry format, staleness,
consistency checks, `Leaderboard`), `views` (headline, detail and provenance tables, from each threat's
Report), `render` (README, HTML from templates/page.html, SVG figures) and `commands` (`update`, `submit`,
`verify`). `check` (Leaderboard.check) re-renders in memory and lists every difference from the
committed files.
"""
from robench.leaderboard.commands import (P_THRESHOLD, Verdict, Verification, hypergeom_p, submit, update,
                                          verify)
from robench.leaderboard.entries import (ENTRY_FORMAT, FIGURES, OUTCOMES, RENDERED, Leaderboard, _unpack,
                                         accuracy_problems, check_entry_name, dump_entry, entry_path, make_entry,
                                         outcome_masks, record_problem, with_outcomes)
from robench.leaderboard.render import render_figures, render_html, render_readme, svg_curves
from robench.leaderboard.spec import Spec, locate, names, root
from robench.leaderboard.views import Detail, details, headline, note, provenance_rows, show, sort_value, table

__all__ = ["ENTRY_FORMAT", "FIGURES", "OUTCOMES", "P_THRESHOLD", "RENDERED", "Detail", "Leaderboard", "Spec",
           "Verdict", "Verification", "accuracy_problems", "check_entry_name", "details", "dump_entry",
           "entry_path", "headline", "hypergeom_p", "locate", "make_entry", "names", "note", "outcome_masks",
           "provenance_rows", "record_problem", "render_figures", "render_html", "render_readme", "root", "show",
           "sort_value", "submit", "svg_curves", "table", "update", "verify", "with_outcomes"]

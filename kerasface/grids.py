"""Result grids: a recipe's comparison laid out as the paper's table (PaperConfig.grids).

flickr_depth's Table 3 is accuracy per branch point (rows) and attribute (columns); each cell is
one trained model. A grid names, per model key, its (row, column); the cell shows that model's
headline on the run's last evaluation split with the paper's number beside it
(PaperConfig.reported["<model>/<attribute>/*"]), and each grid is also drawn as a line plot (one
line per column, ours solid, the paper's dashed) so the best depth per attribute reads at a glance.
"""

from __future__ import annotations

from pathlib import Path

from kerasface.config import PaperConfig


def test_split(record: dict, task: str) -> str:
    """The split a grid cell shows: the last evaluated split labelled for the task, a test split
    when there is one (a unit is evaluated on every source; only its task's source counts)."""
    from kerasface.evaluate import evaluated_splits

    labelled = [s for s in evaluated_splits(record)
                if record[f"{s}_metrics"].get(task, {}).get("count", 1) and task in record[f"{s}_metrics"]]
    tests = [s for s in labelled if "test" in s.rpartition("/")[2]]
    return (tests or labelled or [""])[-1]


def grid_cells(cfg: PaperConfig, records: list[dict]) -> dict[str, dict]:
    """{grid: {"split", "rows", "columns", "ours": {row: {column: value}}, "paper": {...}}} from the
    units' records (unit.json), each on its task's test split (test_split: the columns of a grid
    may come from different datasets); a cell not evaluated is missing."""
    from kerasface.evaluate import evaluated_splits, headline, reported_for

    by_key = {r["model_key"]: r for r in records if r.get("fold") is None and evaluated_splits(r)}
    grids = {}
    for title, cells in cfg.grids.items():
        rows = list(dict.fromkeys(row for row, _ in cells.values()))
        columns = list(dict.fromkeys(column for _, column in cells.values()))
        ours, paper, splits = {}, {}, []
        for model_key, (row, column) in cells.items():
            record = by_key.get(model_key)
            task = cfg.models[model_key].tasks[0].name
            split = test_split(record, task) if record is not None else ""
            if split:
                ours.setdefault(row, {})[column] = headline(record[f"{split}_metrics"][task])
                splits.append(split)
            reported = reported_for(cfg, model_key, task, "*")
            if reported is not None:
                paper.setdefault(row, {})[column] = reported.value
        grids[title] = {"split": ", ".join(dict.fromkeys(splits)) or "not evaluated", "rows": rows,
                        "columns": columns, "ours": ours, "paper": paper}
    return grids


def _number(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%" if abs(value) <= 1 else f"{value:.3g}"


def grid_markdown(title: str, grid: dict) -> str:
    """One markdown table: a row per grid row, a column per grid column, "ours (paper)" cells; the
    best of each column (ours) in bold."""
    best = {}
    for column in grid["columns"]:
        values = [(grid["ours"].get(row, {}).get(column), row) for row in grid["rows"]]
        values = [v for v in values if v[0] is not None]
        if values:
            best[column] = max(values)[1]
    lines = [f"### {title} ({grid['split']} split; paper in brackets)", "",
             "| | " + " | ".join(grid["columns"]) + " |", "|---|" + "---|" * len(grid["columns"])]
    for row in grid["rows"]:
        cells = []
        for column in grid["columns"]:
            ours, paper = grid["ours"].get(row, {}).get(column), grid["paper"].get(row, {}).get(column)
            cell = _number(ours)
            cell = f"**{cell}**" if best.get(column) == row else cell
            cells.append(cell + (f" ({_number(paper)})" if paper is not None else ""))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_grid(title: str, grid: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerasface.evaluate import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(grid["rows"]))
    for i, column in enumerate(grid["columns"]):
        colour = f"C{i}"
        for source, style in (("ours", "-o"), ("paper", "--x")):
            values = [grid[source].get(row, {}).get(column) for row in grid["rows"]]
            if any(v is not None for v in values):
                ax.plot(x, [float("nan") if v is None else v for v in values], style, color=colour,
                        label=f"{column} ({source})")
    ax.set_xticks(list(x), grid["rows"])
    ax.set_ylabel("accuracy (test)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def write_grids(cfg: PaperConfig, records: list[dict], run_dir: Path) -> tuple[dict, str]:
    """Every grid of the config: (metrics.json entry, markdown for results.md); a PNG each."""
    grids = grid_cells(cfg, records)
    text = []
    for number, (title, grid) in enumerate(grids.items(), start=1):
        text.append(grid_markdown(title, grid))
        if grid["ours"]:
            plot_grid(title, grid, run_dir / f"grid{number}.png")
    return grids, "\n".join(text)

"""Scaling over world sizes: speedup, efficiency and where the time goes.

The classic HPC exercise ("1, 2 and 4 GPUs took 19.25 s, 18.46 s and 18.23 s: why?") needs the
training time split from start-up, and the ideal time next to the measured one. For strong scaling
the ideal time on N devices is the one-device time divided by N; what the run takes beyond that is
reported as the communication and synchronisation overhead (an estimate: it also holds any loss of
per-device efficiency from smaller batches).

A diverged run's time says nothing about scaling (it stopped early, or ran on NaNs), so its row is
flagged ``diverged`` and gets no speedup or efficiency; a diverged world-size-1 run leaves its whole
family without them, as there is nothing to measure against.

Numbers that cannot be right (a speedup above the world size, a time below the ideal) or cannot be
trusted (a busy machine, more ranks than cores) are flagged with the reason
(`convbench.report.plausibility`): the ``flags`` column names them, ``flag_reasons`` says why, the
Markdown section lists the reasons under the table, and the figure leaves such speedups out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convbench.report.identity import case_name, headline, mixes_sources, scaling_family
from convbench.report.names import Names
from convbench.report.plausibility import Flag, row_flags, throughput_flags


def _device_utilisation(record: dict[str, Any]) -> list[tuple[str, float]]:
    """(device name, mean utilisation %) per sampled device: GPU utilisation, or CPU percent."""
    devices = (record.get("telemetry") or {}).get("devices") or []
    several_hosts = len({device.get("host") for device in devices}) > 1  # a multi-node run
    found = []
    for device in devices:
        value = device.get("utilization_mean", device.get("cpu_percent_mean"))
        if value is not None:
            index = device.get("index")
            name = f"{device.get('name')}{'' if index is None else f':{index}'}"
            found.append((f"{device.get('host')}/{name}" if several_hosts else name, value))
    return found


def _utilisation(record: dict[str, Any]) -> float | None:
    values = [value for _, value in _device_utilisation(record)]
    return sum(values) / len(values) if values else None


def scaling_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per record of a family that has a world-size-1 run and at least one larger run.

    A family is one case on several world sizes, on one machine at one commit (`identity.scaling_family`).
    """
    families: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        families.setdefault(scaling_family(record), []).append(record)
    metric, mixed = headline(records), mixes_sources(records)
    rows = []
    for members in families.values():
        by_size = {m["world_size"]: m for m in members}
        if 1 not in by_size or len(by_size) < 2:
            continue
        baseline = by_size[1]
        base = baseline["timing"]["train_s"]
        base_diverged = bool(baseline.get("diverged"))
        for size in sorted(by_size):
            record = by_size[size]
            timing = record["timing"]
            train = timing["train_s"]
            strong = record["case"].get("scaling", "strong") == "strong"
            diverged = bool(record.get("diverged"))
            # weak scaling does N times the work in the same ideal time
            measured = train and not (diverged or base_diverged)
            speedup = (base / train) * (1 if strong else size) if measured else None
            ideal = base / size if strong else base
            flags = row_flags(record, baseline, speedup, train, ideal)
            rows.append({
                "group": record["group"],
                "case": case_name(record, mixed_sources=mixed),
                # the world-size-1 case the others are measured against
                "family": case_name(by_size[1], mixed_sources=mixed),
                "world_size": size,
                "diverged": diverged,
                "stalled": record.get("stalled"),  # None: recorded before the verdict existed
                **_flag_columns(flags),
                "scaling": "strong" if strong else "weak",
                "train_time_s": train,
                "ideal_time_s": ideal,
                "overhead_s": train - ideal,
                "startup_s": timing.get("startup_s", 0.0),
                "process_group_init_s": timing.get("process_group_init_s", 0.0),
                "eval_time_s": timing.get("eval_s"),
                "speedup": speedup,
                "efficiency": speedup / size if speedup is not None else None,
                "samples_per_s": record.get("samples_per_s"),
                "utilisation_mean": _utilisation(record),
                "utilisation_per_device": ", ".join(
                    f"{name} {value:.0f}%" for name, value in _device_utilisation(record)),
                metric.column: metric.value(record),
            })
    return rows


def _flag_columns(flags: list[Flag]) -> dict[str, str]:
    """The short names (empty: nothing found) and the reasons, for the table."""
    return {"flags": ", ".join(flag.name for flag in flags), "flag_reasons": "; ".join(map(str, flags))}


def flag_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per flagged row: which row, and why its speedup is not to be trusted."""
    return [f"{row['case']} (world size {row['world_size']}): {row['flag_reasons']}" for row in rows if row["flags"]]


#: The columns `convbench report` prints (the written tables have every one): enough to read the scaling
#: at a glance on a terminal; the rest (family, overhead, process-group start, utilisation per device) are
#: in tables/scaling.{csv,md,html}.
PRINTED_SCALING = ("case", "world_size", "scaling", "train_time_s", "ideal_time_s", "startup_s", "speedup",
                   "efficiency", "diverged", "stalled", "flags")
PRINTED_THROUGHPUT = ("case", "world_size", "samples_per_s", "round_cv", "rounds", "speedup", "efficiency",
                      "machine_busy", "flags")


def _write_section(rows: list[dict[str, Any]], out_dir: Path, name: str, title: str, names: Names,
                   printed: tuple[str, ...]) -> tuple[str, list[Path], Any]:
    """Write tables/<name>.{csv,md,html}; return the printed section, the paths and the DataFrame.

    The CSV has every column; the Markdown file every column but the long ``flag_reasons``, which it lists
    under the table instead, where they can be read; the printed section only the ``printed`` columns
    (a terminal is not 350 characters wide), with the same reasons under it."""
    import pandas as pd

    from convbench.report.formats import heading, markdown_text, to_csv, to_html, to_markdown

    table = pd.DataFrame(rows, dtype=object)  # None (not measured) stays apart from NaN: see formats
    tables = out_dir / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    stem = names.file("tables", name)
    written = [tables / f"{stem}.csv", tables / f"{stem}.md", tables / f"{stem}.html"]
    to_csv(table, written[0])
    written[2].write_text(to_html(table, title), encoding="utf-8")  # numbers rounded as in every table
    notes = ""
    if flagged := flag_notes(rows):
        notes = ("\n\nFlagged rows: their speedup and efficiency cannot be taken at face value (the figure "
                 "leaves them out).\n\n" + "\n".join(f"- {markdown_text(note)}" for note in flagged))
    whole = to_markdown(table.drop(columns=["flag_reasons"], errors="ignore"))
    written[1].write_text(f"{heading(2, title)}\n\n{whole}{notes}\n", encoding="utf-8")
    shown = to_markdown(table[[c for c in printed if c in table.columns]])
    return f"{heading(2, title)}\n\n{shown}{notes}", written, table


def write_scaling(rows: list[dict[str, Any]], out_dir: Path, names: Names) -> tuple[str, list[Path]]:
    """Write tables/scaling.{csv,md,html}; return the printed section and the paths (the figure is the
    ``scaling`` figure kind)."""
    if not rows:
        return "", []
    text, written, _ = _write_section(rows, out_dir, "scaling", "scaling over world sizes", names,
                                   PRINTED_SCALING)
    return text, written


def throughput_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Throughput per world size, with speedup and efficiency against world size 1 of the same case.

    ``round_cv`` is the rounds' standard deviation over their mean: rounds that differ by more than a
    few percent were disturbed, and ``machine_busy`` says whether other work shared the machine then
    (both empty for results written before convbench recorded them).
    """
    families: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        families.setdefault(scaling_family({**entry, "scale": None}), []).append(entry)
    mixed = mixes_sources(entries)
    rows = []
    for members in families.values():
        by_size = {m["world_size"]: m for m in members}
        base = by_size.get(1, {}).get("samples_per_s")
        for size in sorted(by_size):
            entry = by_size[size]
            speedup = entry["samples_per_s"] / base if base else None
            rounds = entry["round_s"]
            std = rounds.get("std")
            rows.append({
                "group": entry["group"], "case": case_name(entry, mixed_sources=mixed), "world_size": size,
                **_flag_columns(throughput_flags(speedup, size)),
                "samples_per_s": entry["samples_per_s"], "samples_per_s_per_device": entry["samples_per_s_per_device"],
                "round_mean_s": rounds["mean"], "round_std_s": std,
                "round_cv": std / rounds["mean"] if std is not None and rounds["mean"] else None,
                "rounds": entry["rounds"],
                "speedup": speedup, "efficiency": speedup / size if speedup is not None else None,
                "startup_s": entry.get("startup_s"),
                "machine_busy": (entry.get("machine_load") or {}).get("busy"),
            })
    return rows


def write_throughput(rows: list[dict[str, Any]], out_dir: Path, names: Names) -> tuple[str, list[Path]]:
    """Write tables/throughput.{csv,md,html}; return the printed section and the paths."""
    if not rows:
        return "", []
    text, written, _ = _write_section(rows, out_dir, "throughput", "throughput", names, PRINTED_THROUGHPUT)
    return text, written

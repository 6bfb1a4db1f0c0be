"""Scaling over world sizes: speedup, efficiency and where the time goes.

The classic HPC exercise ("1, 2 and 4 GPUs took 19.25 s, 18.46 s and 18.23 s: why?") needs the
training time split from start-up, and the ideal time next to the measured one. For strong scaling
the ideal time on N devices is the one-device time divided by N; what the run takes beyond that is
reported as the communication and synchronisation overhead (an estimate: it also holds any loss of
per-device efficiency from smaller batches).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IGNORED_FIELDS = ("world_size", "label", "scales")


def _family(record: dict[str, Any]) -> str:
    """Records that differ only in world size belong to one family."""
    case = {k: v for k, v in record["case"].items() if k not in IGNORED_FIELDS}
    return json.dumps([record["group"], record.get("scale"), case], sort_keys=True, default=str)


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
    """One row per record of a family that has a world-size-1 run and at least one larger run."""
    families: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        families.setdefault(_family(record), []).append(record)
    rows = []
    for members in families.values():
        by_size = {m["world_size"]: m for m in members}
        if 1 not in by_size or len(by_size) < 2:
            continue
        base = by_size[1]["timing"]["train_s"]
        for size in sorted(by_size):
            record = by_size[size]
            timing = record["timing"]
            train = timing["train_s"]
            strong = record["case"].get("scaling", "strong") == "strong"
            # weak scaling does N times the work in the same ideal time
            speedup = (base / train) * (1 if strong else size) if train else None
            ideal = base / size if strong else base
            rows.append({
                "group": record["group"],
                "case": record["case_id"],
                "family": by_size[1]["case_id"],  # the world-size-1 case the others are measured against
                "world_size": size,
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
                "final_accuracy": (record["final"].get("test_accuracy") if record["final"].get("test_accuracy")
                                   is not None else record["final"].get("val_accuracy")),
            })
    return rows


def _write_section(rows: list[dict[str, Any]], out_dir: Path, name: str, title: str) -> tuple[str, list[Path], Any]:
    """Write tables/<name>.{csv,md}; return the printed section, the paths and the DataFrame."""
    import pandas as pd

    from convbench.report.tables import to_markdown

    table = pd.DataFrame(rows)
    tables = out_dir / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    written = [tables / f"{name}.csv", tables / f"{name}.md"]
    table.to_csv(written[0], index=False)
    text = f"## {title}\n\n{to_markdown(table)}"
    written[1].write_text(text + "\n", encoding="utf-8")
    return text, written, table


def write_scaling(rows: list[dict[str, Any]], out_dir: Path, figures: bool = True) -> tuple[str, list[Path]]:
    """Write tables/scaling.{csv,md} and figures/scaling.png; return the printed section and the paths."""
    if not rows:
        return "", []
    text, written, table = _write_section(rows, out_dir, "scaling", "scaling over world sizes")
    if figures:
        import matplotlib.pyplot as plt

        path = out_dir / "figures" / "scaling.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = scaling_figure(table)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return text, written


def scaling_figure(table: Any) -> Any:
    """Speedup against world size, one line per case, with the ideal line (left); where the time of
    the first case goes at each world size (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    sizes = sorted(table["world_size"].unique())
    speed_ax.plot(sizes, sizes, linestyle="--", color="grey", label="ideal (strong scaling)")
    for family, rows in table.groupby("family", sort=False):
        rows = rows.sort_values("world_size")
        speed_ax.plot(rows["world_size"], rows["speedup"], marker="o", label=str(family))
    speed_ax.set_xlabel("world size (processes / devices)")
    speed_ax.set_ylabel("speedup over world size 1")
    speed_ax.set_xticks(sizes)
    speed_ax.set_title("speedup")
    speed_ax.grid(True, alpha=0.3)
    speed_ax.legend(fontsize="small")
    first_case = table["family"].iloc[0]
    rows = table[table["family"] == first_case].sort_values("world_size")
    labels = [str(s) for s in rows["world_size"]]
    ideal = rows["ideal_time_s"].clip(lower=0).to_numpy()
    overhead = (rows["train_time_s"] - rows["ideal_time_s"]).clip(lower=0).to_numpy()
    startup = rows["startup_s"].fillna(0).to_numpy()
    time_ax.bar(labels, ideal, label="ideal compute (time on 1 / N)")
    time_ax.bar(labels, overhead, bottom=ideal, label="communication and overhead (estimate)")
    time_ax.bar(labels, startup, bottom=ideal + overhead, label="start-up (processes, process group)")
    time_ax.set_xlabel("world size")
    time_ax.set_ylabel("seconds")
    time_ax.set_title(f"where the time goes: {first_case}")
    time_ax.legend(fontsize="small")
    return fig


def throughput_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Throughput per world size, with speedup and efficiency against world size 1 of the same case."""
    families: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        families.setdefault(_family({**entry, "scale": None}), []).append(entry)
    rows = []
    for members in families.values():
        by_size = {m["world_size"]: m for m in members}
        base = by_size.get(1, {}).get("samples_per_s")
        for size in sorted(by_size):
            entry = by_size[size]
            speedup = entry["samples_per_s"] / base if base else None
            rows.append({
                "group": entry["group"], "case": entry["case_id"], "world_size": size,
                "samples_per_s": entry["samples_per_s"], "samples_per_s_per_device": entry["samples_per_s_per_device"],
                "round_mean_s": entry["round_s"]["mean"], "rounds": entry["rounds"],
                "speedup": speedup, "efficiency": speedup / size if speedup is not None else None,
                "startup_s": entry.get("startup_s"),
            })
    return rows


def write_throughput(rows: list[dict[str, Any]], out_dir: Path) -> tuple[str, list[Path]]:
    """Write tables/throughput.{csv,md}; return the printed section and the paths."""
    if not rows:
        return "", []
    text, written, _ = _write_section(rows, out_dir, "throughput", "throughput")
    return text, written

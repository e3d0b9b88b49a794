"""One self-contained HTML page per run: every picture embedded, no script, no network.

Figures a reader may check against the run record carry `data-figure` (a dotted name)
and `data-value` (the value as recorded) beside their formatted text, which is what
the browser test compares.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime
from typing import Any

from tinycats.report import plots
from tinycats.report.gather import RunFacts

TRAIN_CURVES = (("loss", True), ("lr", False), ("grad_norm", True), ("img_per_s", False))
NOT_CURVES = {"step", "kind", "time", "steps", "eval_ms"}
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:flex;flex-wrap:wrap;gap:8px}.figs figure{margin:0}figcaption{font-size:12px;color:#59636e}
.status-completed{color:#1a7f37}.status-failed{color:#d1242f}.status-preempted,.status-running{color:#9a6700}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}img{max-width:100%}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def image(png: bytes, alt: str, caption: str | None = None, *, zoom: int = 1) -> str:
    """An embedded PNG; `zoom` draws it that many times larger, pixels kept sharp (the
    DiT's grids are 32 px a cat)."""
    data = base64.b64encode(png).decode("ascii")
    size = ""
    if zoom > 1:
        from PIL import Image

        width = Image.open(io.BytesIO(png)).width * zoom
        size = f' width="{width}" style="image-rendering:pixelated"'
    tag = f'<img alt="{esc(alt)}"{size} src="data:image/png;base64,{data}">'
    return f"<figure>{tag}<figcaption>{esc(caption)}</figcaption></figure>" if caption else tag


def figure(name: str, value: Any, text: str | None = None) -> str:
    """A value the test can find: `data-figure` names it, `data-value` holds it as recorded."""
    shown = text if text is not None else fmt(value)
    raw = json.dumps(value)
    return f'<span data-figure="{esc(name)}" data-value="{esc(raw)}">{esc(shown)}</span>'


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    """`rows` hold HTML already escaped (cells made by `esc`, `figure`, ...); a header of
    empty names (a key-value table) is left out."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if any(header) else ''}{body}</table>"


def render(facts: RunFacts, compare: list[RunFacts]) -> str:
    """The whole page of `facts`, with `compare`'s curves overlaid."""
    runs = [facts, *compare]
    sections = [
        _summary(facts),
        _attempts(facts.record),
        _curves(runs),
        _evaluations(facts),
        _grids(facts),
        _time(facts.lines),
        _checkpoints(facts),
        _config(facts),
        _environment(facts.record),
    ]
    if compare:
        sections.insert(1, _compare(runs))
    title = f"tinycats report: {facts.run_id}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{esc(facts.run_id)}</h1>"
        + "".join(s for s in sections if s)
        + f"<p><small>written {esc(datetime.now().isoformat(timespec='seconds'))} "
        "by <code>tinycats report</code></small></p></body></html>\n"
    )


def _summary(facts: RunFacts) -> str:
    r = facts.record
    config = r.get("config") or {}
    status = r.get("status", "?")
    rows = [
        ["task", esc(facts.task)],
        ["status", f'<b class="status-{esc(status)}">{figure("status", status)}</b>'],
        [
            "step",
            figure("step", r.get("step"))
            + f" / {esc((config.get('optim') or {}).get('max_steps', '?'))}",
        ],
        ["attempts", figure("attempts", r.get("attempts"))],
        ["started", esc(r.get("started_at", "-"))],
        ["ended", esc(r.get("ended_at", "-"))],
    ]
    for key, value in (r.get("metrics") or {}).items():
        rows.append([f"last {esc(key)}", figure(f"metrics.{key}", value)])
    if r.get("best_checkpoint"):
        rows.append(["best checkpoint", f"<code>{esc(r['best_checkpoint'])}</code>"])
    return "<h2>Summary</h2>" + table(["", ""], rows)


def _attempts(record: dict[str, Any]) -> str:
    """Each attempt (a start or a resume) with how it ended and why; cloud calls below."""
    current = {
        "attempts": record.get("attempts"),
        "attempt_started_at": record.get("attempt_started_at"),
        "ended_at": record.get("ended_at"),
        "status": record.get("status"),
        "host": record.get("host"),
        "reason": record.get("preempted_by") or record.get("error"),
    }
    attempts = [*record.get("history", []), current]
    rows, spans = [], []
    for i, a in enumerate(attempts, 1):
        reason = a.get("reason") or a.get("preempted_by") or a.get("error") or ""
        kind = "start" if i == 1 else "resume"
        rows.append(
            [
                str(i),
                kind,
                esc(a.get("attempt_started_at") or "-"),
                esc(a.get("ended_at") or "-"),
                esc(a.get("status") or "-"),
                esc(a.get("host") or "-"),
                esc(reason),
            ]
        )
        start, end = _epoch(a.get("attempt_started_at")), _epoch(a.get("ended_at"))
        if start is not None:
            spans.append((start, end if end is not None else start, a.get("status") or "?"))
    out = "<h2>Attempts</h2>" + table(
        ["#", "", "started", "ended", "status", "host", "reason"], rows
    )
    if spans:
        out += image(plots.attempts(spans), "attempts timeline")
    calls = (record.get("cloud") or {}).get("calls") or []
    if calls:
        out += "<h3>Cloud calls</h3>" + table(
            ["call", "GPU", "seconds", "outcome", "est. USD"],
            [
                [
                    esc(c.get("call_id")),
                    esc(c.get("gpu")),
                    esc(c.get("seconds")),
                    esc(c.get("outcome")),
                    esc(fmt(c.get("estimated_usd"))),
                ]
                for c in calls
            ],
        )
    return out


def _epoch(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def _curves(runs: list[RunFacts]) -> str:
    named = [(f.run_id, f.lines) for f in runs]
    figures = []
    for key, log_y in TRAIN_CURVES:
        png = plots.curve(named, key, "train", log_y=log_y)
        if png:
            figures.append(image(png, f"{key} curve"))
    eval_keys = sorted(
        {k for f in runs for line in f.lines if line.get("kind") == "eval" for k in line}
        - NOT_CURVES
    )
    for key in eval_keys:
        png = plots.curve(named, key, "eval", log_y=False)
        if png:
            figures.append(image(png, f"{key} curve"))
    return '<h2>Curves</h2><div class="figs">' + "".join(figures) + "</div>"


def _evaluations(facts: RunFacts) -> str:
    """`tinycats eval`'s figures per split (top-1/top-3 for the classifier, sample quality
    for the DiT), with per-class accuracy and the confusion matrix when reported."""
    evals = facts.record.get("eval") or {}
    if not evals:
        return ""
    out = "<h2>Evaluation</h2>"
    for split, figures in evals.items():
        rows = []
        for key, value in figures.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                text = f"{100 * value:.1f}%" if key in ("top1", "top3") else None
                rows.append([esc(key), figure(f"eval.{split}.{key}", value, text)])
            elif isinstance(value, str | bool):
                rows.append([esc(key), esc(value)])
        out += f"<h3>{esc(split)}</h3>" + table(["", ""], rows)
        report = facts.evals.get(split)
        if report and report.get("confusion"):
            out += '<div class="figs">'
            out += image(plots.per_class(report["per_class"]), "per-class accuracy")
            out += image(plots.confusion(report["confusion"], report["classes"]), "confusion")
            out += "</div>"
    return out


def _grids(facts: RunFacts) -> str:
    """The preview grids over training (at most eight, the latest always), then the latest."""
    if not facts.grids:
        return ""
    chosen = facts.grids
    if len(chosen) > 8:
        stride = (len(chosen) - 1) / 7
        chosen = [facts.grids[round(i * stride)] for i in range(8)]
    steps, latest = [s for s, _ in chosen], facts.grids[-1]
    figures = "".join(
        image(path.read_bytes(), f"preview grid at step {step}", f"step {step}", zoom=2)
        for step, path in chosen[:-1]
    )
    out = f"<h2>Preview grids</h2><p>steps {esc(', '.join(map(str, steps)))}</p>"
    out += f'<div class="figs">{figures}</div><h3>Latest (step {latest[0]})</h3>'
    return out + image(latest[1].read_bytes(), f"preview grid at step {latest[0]}", zoom=3)


def time_totals(lines: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent waiting for data, computing steps, stalled on checkpoints, evaluating."""
    train = [x for x in lines if x.get("kind") == "train"]
    data = sum(x.get("data_ms", 0.0) * x.get("steps", 1) for x in train) / 1000
    step = sum(x.get("step_ms", 0.0) * x.get("steps", 1) for x in train) / 1000
    return {
        "data wait": round(data, 3),
        "compute": round(step - data, 3),
        "checkpoint stall": round(sum(x.get("checkpoint_ms", 0.0) for x in train) / 1000, 3),
        "evaluation": round(
            sum(x.get("eval_ms", 0.0) for x in lines if x.get("kind") == "eval") / 1000, 3
        ),
    }


def _time(lines: list[dict[str, Any]]) -> str:
    totals = time_totals(lines)
    whole = sum(totals.values()) or 1.0
    rows = [
        [esc(k), figure(f"time.{k}", v, f"{v:.1f} s"), f"{100 * v / whole:.0f}%"]
        for k, v in totals.items()
    ]
    return (
        "<h2>Where the time went</h2>"
        + table(["", "seconds", "share"], rows)
        + image(plots.time_split(totals), "time split")
    )


def _checkpoints(facts: RunFacts) -> str:
    rows = [
        [
            figure(f"checkpoint.{c.step}", c.step),
            esc(datetime.fromtimestamp(c.time).isoformat(timespec="seconds")),
            f"{c.size_bytes / 2**20:.2f} MiB",
            f"<code>{esc(c.sha256[:12])}</code>",
            esc(", ".join(f"{k} {fmt(v)}" for k, v in c.metrics.items())),
            esc(", ".join(c.kept_by) or "to prune"),
        ]
        for c in facts.checkpoints
    ]
    header = ["step", "written", "size", "model sha256", "metrics", "kept by"]
    return "<h2>Checkpoints</h2>" + table(header, rows)


def _config(facts: RunFacts) -> str:
    rows = [
        [f"<code>{esc(k)}</code>", esc(json.dumps(d)), esc(json.dumps(v))]
        for k, d, v in facts.config_changes
    ]
    config = json.dumps(facts.record.get("config") or {}, indent=2)
    return (
        "<h2>Config</h2><p>What differs from the defaults of this tinycats version:</p>"
        + table(["key", "default", "this run"], rows)
        + f"<details><summary>resolved config</summary><pre>{esc(config)}</pre></details>"
    )


def _environment(record: dict[str, Any]) -> str:
    rows = [[esc(k), esc(v)] for k, v in (record.get("versions") or {}).items()]
    rows.append(["device", figure("device", record.get("device"))])
    for key in ("gpu", "host", "git_commit"):
        rows.append([esc(key), esc(record.get(key) or "-")])
    return "<h2>Environment</h2>" + table(["", ""], rows)


def _compare(runs: list[RunFacts]) -> str:
    keys = sorted({k for f in runs for k in (f.record.get("metrics") or {})})
    rows = []
    for f in runs:
        metrics = f.record.get("metrics") or {}
        losses = [x["loss"] for x in f.lines if x.get("kind") == "train" and "loss" in x]
        rows.append(
            [
                esc(f.run_id),
                esc(f.record.get("status")),
                esc(f.record.get("step")),
                esc(fmt(losses[-1] if losses else None)),
                *(esc(fmt(metrics.get(k))) for k in keys),
            ]
        )
    header = ["run", "status", "step", "last loss", *keys]
    return "<h2>Compared runs</h2>" + table(header, rows)

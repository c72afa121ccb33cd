"""Throughput at the default settings, this version against an earlier one, per CPU kind.

Used by ``throughput.py`` (sections ``defaults``, ``levers`` and ``profile``). Every
measurement runs in a fresh Python process started by :func:`run_child`, which imports
``gexbert_sc`` either from this checkout or from an earlier version's source extracted from
git (:func:`version_tree`), and reads a CPU kind from the environment:

- ``native``: the machine as it is;
- ``avx2``: torch's own kernels, oneDNN and MKL limited to AVX2
  (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``)
  and bf16 declared absent (``GEXBERT_CPU_BF16=0``): the code paths and instruction sets of a
  CPU without AVX-512, on this machine's cores, caches and memory.

A child measures its own matmul peaks (the ISA limits change them), then at the package
defaults: training steps on zeisel_shallow's 2,404 training samples × 500 genes (the
scoreboard's default-training case; steps timed after a warm-up, validation excluded), the
embedding of 1,024 zeisel cells (4,000 genes) and the restoration of every gene of 128 of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import StepTimer, markdown_table, silence_libraries, training_flops

#: Environment of each CPU kind (added to the parent's).
CPU_KINDS = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "GEXBERT_CPU_BF16": "0",
    },
}
#: Samples embedded and restored at inference.
EMBED_SAMPLES, RESTORE_SAMPLES = 1024, 128
#: Profiler categories: the first whose key is in an op's name (lower case) takes it.
CATEGORIES = {
    "attention kernel": ("scaled_dot_product",),
    "matmul": ("addmm", "aten::mm", "bmm", "matmul", "linear"),
    "optimizer": ("adam",),
    "indexing and context choice": (
        "index", "embedding", "topk", "sort", "gather", "scatter", "where", "nonzero",
    ),
    "elementwise, normalisation and copies": (
        "gelu", "norm", "add", "mul", "sub", "div", "copy", "cat", "fill", "exp", "log",
        "_to_copy", "clamp", "sum", "mean",
    ),
    "linear algebra (profile fit)": ("linalg",),
}  # fmt: skip


# ----------------------------------------------------------------------------- processes
def version_tree(ref: str, repo: Path) -> Path:
    """Extract ``gexbert_sc/`` at git ``ref`` of ``repo`` into a temporary directory.

    Returns the directory to put first on ``PYTHONPATH`` so that ``import gexbert_sc``
    loads that version.
    """
    target = Path(tempfile.mkdtemp(prefix=f"gexbert_{ref[:12]}_"))
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", ref, "gexbert_sc"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(target, filter="data")
    return target


def run_child(script: Path, params: dict, tree: Path | None, cpu_kind: str) -> list[dict]:
    """Run ``script --child params`` in a fresh process; return the rows it printed.

    ``tree`` (an earlier version's source, or ``None`` for this checkout) goes first on
    ``PYTHONPATH``; the CPU kind's variables are added to the environment.
    """
    env = {**os.environ, **CPU_KINDS[cpu_kind]}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(script), "--child", json.dumps(params)],
        env=env,
        capture_output=True,
        text=True,
        cwd=script.parent,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("ROWS ")]
    if done.returncode != 0 or not lines:
        msg = f"child {params} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(lines[-1][5:])


# ----------------------------------------------------------------------------- levers
def switch_off(lever: str) -> None:
    """Undo one of this version's throughput levers in the running process (ablation)."""
    import torch

    import gexbert_sc.module._attention as attention

    if lever == "fused AdamW":
        fused = torch.optim.AdamW

        def unfused(params, **kwargs):
            return fused(params, **{**kwargs, "fused": False})

        torch.optim.AdamW = unfused
    elif lever == "fp32 attention kernel":
        attention.cpu_has_amx = lambda: True  # the kernel then runs in the autocast dtype
    elif lever == "chunked feed-forward":
        attention.FFN_CHUNK_ELEMENTS = 2**62
    elif lever == "[CLS]-only shortcut":
        general = attention.MultiHeadAttention.forward

        def forward(self, query, memory, key_padding=None):
            if memory.shape[1] == 1 and key_padding is None:  # an all-valid mask: no shortcut
                key_padding = memory.new_zeros(memory.shape[:2], dtype=torch.bool)
            return general(self, query, memory, key_padding)

        attention.MultiHeadAttention.forward = forward
    else:
        msg = f"unknown lever {lever!r}"
        raise ValueError(msg)


def compile_blocks(model) -> None:
    """``torch.compile`` (inductor) every encoder and decoder block of ``model``."""
    import torch

    module = model.module
    for block in [*module.encoder, *module.decoder]:
        block.forward = torch.compile(block.forward, dynamic=False)


# ----------------------------------------------------------------------------- measurements
#: Training steps before the timed ones.
WARMUP_STEPS = 4


def training_data(fast: bool):
    """zeisel_shallow's training split (2,404 × 500), as the scoreboard trains at defaults."""
    from _common import split_samples
    from defaults import load

    adata = load("zeisel_shallow", fast=fast)
    rows, _ = split_samples(adata.n_obs, 0)
    return adata[rows].copy()


def inference_data(fast: bool):
    """The first cells of zeisel (4,000 genes; 300 genes in ``fast`` mode)."""
    import gexbert_sc

    adata = gexbert_sc.datasets.zeisel()
    n_obs = 64 if fast else EMBED_SAMPLES
    return adata[:n_obs, : 300 if fast else adata.n_vars].copy()


def _architecture(model) -> dict:
    module = model.module
    return {
        "d_model": module.d_model,
        "n_layers": len(module.encoder),
        "n_decoder_layers": len(module.decoder),
        "n_context": module.n_context,
    }


def add_flops(row: dict) -> None:
    """Add ``gflop_per_s`` to a child's row: FLOPs by this version's formulas, for any version.

    Training: 3 × the forward of ``[CLS]`` + ``n_context`` tokens, as many targets, and the
    ``[CLS]``-only pass as this version computes it (so an earlier version's rate counts the
    FLOPs that are needed, not those it spent). Inference: the tokens each sample was read
    through (``context_lengths``) and, for restoration, every gene as a query.
    """
    from gexbert_sc.module import decoder_flops, encoder_flops

    d, layers, dec = row["d_model"], row["n_layers"], row["n_decoder_layers"]
    if row["phase"] == "train":
        flops = training_flops(row["n_context"], row["n_vars"], d, layers, dec)
        flops *= row["samples_per_s"]
    else:
        lengths = row.pop("context_lengths")
        flops = sum(encoder_flops(1 + n, d, layers) for n in lengths)
        if row["phase"] == "restore":
            flops += sum(decoder_flops(row["n_vars"], 1 + n, d, dec) for n in lengths)
        flops *= row["samples_per_s"] / len(lengths)
    row["gflop_per_s"] = flops / 1e9
    row["mfu"] = row["gflop_per_s"] / row["peak_gflop_per_s"]


def _model_for_steps(adata):
    """A default GexBERT on ``adata`` that skips the fits after training (not timed here)."""
    import gexbert_sc

    gexbert_sc.GexBERT.setup_anndata(adata)
    model = gexbert_sc.GexBERT(adata)
    model._after_training = lambda: None
    return model


def measure_training(params: dict) -> dict:
    """Samples/s of training steps at the defaults (optionally with a lever off or compiled)."""
    adata = training_data(params["fast"])
    model = _model_for_steps(adata)
    if params.get("compile"):
        compile_blocks(model)
    timer = StepTimer(params["seconds"], warmup=WARMUP_STEPS)
    batch_size = model._default_batch_size
    model.train(
        max_epochs=50,
        accelerator="cpu",
        precision=params["precision"],
        train_size=1.0,
        callbacks=[timer],
        enable_progress_bar=False,
    )
    return {
        "phase": "train",
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "batch_size": batch_size,
        "steps": len(timer.timed_ends()),
        "samples_per_s": batch_size / timer.median_seconds_per_step(),
        **_architecture(model),
    }


def measure_inference(params: dict) -> list[dict]:
    """Samples/s of the embedding and the all-gene restoration at the defaults."""
    adata = inference_data(params["fast"])
    model = _model_for_steps(adata)
    model.train(
        max_epochs=1, max_steps=1, batch_size=2, train_size=1.0, accelerator="cpu",
        enable_progress_bar=False,
    )  # fmt: skip
    precision = params["precision"]
    rows = np.arange(adata.n_obs)
    model.get_latent_representation(indices=rows[:64], precision=precision)  # warm-up
    start = time.perf_counter()
    model.get_latent_representation(indices=rows, precision=precision)
    embed_s = time.perf_counter() - start
    # tokens actually read: [CLS] + each sample's context (as the getters trim it)
    lengths = model.module.inference_context_lengths(
        next(iter(model.minibatches(adata, indices=rows, batch_size=len(rows))))["X"]
    )
    lengths = [int(n) for n in lengths]
    restore_rows = rows[: 16 if params["fast"] else RESTORE_SAMPLES]
    start = time.perf_counter()
    model.get_imputed_expression(
        indices=restore_rows, keep_observed=False, return_numpy=True, precision=precision
    )
    restore_s = time.perf_counter() - start
    base = {"n_vars": adata.n_vars, **_architecture(model)}
    return [
        {
            **base,
            "phase": "embed",
            "n_obs": len(rows),
            "samples_per_s": len(rows) / embed_s,
            "context_lengths": lengths,
        },
        {
            **base,
            "phase": "restore",
            "n_obs": len(restore_rows),
            "samples_per_s": len(restore_rows) / restore_s,
            "context_lengths": lengths[: len(restore_rows)],
        },
    ]


def profile_training(params: dict) -> list[dict]:
    """Seconds per training step by kind of operation (torch profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    adata = training_data(params["fast"])
    model = _model_for_steps(adata)
    train = {
        "precision": params["precision"], "train_size": 1.0, "accelerator": "cpu",
        "enable_progress_bar": False,
    }  # fmt: skip
    model.train(max_epochs=1, max_steps=2, **train)  # warm-up
    n_steps = 2 if params["fast"] else 8
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train(max_epochs=1, max_steps=n_steps, **train)
    wall = time.perf_counter() - start
    seconds = dict.fromkeys([*CATEGORIES, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        if not name.startswith("aten::") and "adam" not in name:
            continue  # Python-level ranges would count their ops twice
        matches = (c for c, keys in CATEGORIES.items() if any(k in name for k in keys))
        category = next(matches, "other")
        seconds[category] += event.self_cpu_time_total / 1e6 / n_steps
    seconds["outside torch ops (Python, Lightning, data)"] = max(
        0.0, wall / n_steps - sum(seconds.values())
    )
    return [{"phase": "profile", "category": c, "seconds_per_step": s} for c, s in seconds.items()]


def child(params: dict, peak: Callable[[str], float]) -> list[dict]:
    """One measurement in this process (``--child``): peaks, then the task's rows.

    ``peak(precision)`` measures this process's matmul peak in GFLOP/s.
    """
    import torch

    torch.manual_seed(0)
    silence_libraries()
    for lever in params.get("levers_off", []):
        switch_off(lever)
    peaks = {precision: peak(precision) for precision in ("32-true", "bf16-mixed")}
    if params["task"] == "train":
        rows = [measure_training(params)]
    elif params["task"] == "inference":
        rows = measure_inference(params)
    else:
        rows = profile_training(params)
    for row in rows:
        row["peak_gflop_per_s"] = peaks[params["precision"]]
        row["peak_fp32_gflop_per_s"] = peaks["32-true"]
    return rows


# ----------------------------------------------------------------------------- the run
#: The version compared against: 0.2 as it stood before the throughput work (issue 25).
BASELINE_REF = "80e7c90a660207aef9889d98555d116dfbd54104"
CURRENT = "this version"
LEVERS = ("fp32 attention kernel", "chunked feed-forward", "[CLS]-only shortcut", "fused AdamW")
COMPILED = "torch.compile (inductor) of the blocks"


def precisions_of(cpu_kind: str, bf16_native: bool) -> list[str]:
    """Training precisions measured on a CPU kind: what ``"auto"`` picks first, then fp32."""
    return ["bf16-mixed", "32-true"] if cpu_kind == "native" and bf16_native else ["32-true"]


def run(
    script: Path,
    sections: list[str],
    cpu_kinds: list[str],
    baseline_ref: str,
    repeats: int,
    fast: bool,
    seconds: float,
    bf16_native: bool,
) -> list[dict]:
    """Every child of the ``defaults``, ``levers`` and ``profile`` sections; their rows.

    Each repeat measures every version and lever once, in turn, so that a drift of the
    machine's speed during the run touches them alike; the profile and ``torch.compile``
    run once.
    """
    versions = {CURRENT: None}
    if baseline_ref != "none":
        versions[f"0.2 ({baseline_ref[:7]})"] = version_tree(baseline_ref, script.parent.parent)
    rows = []

    def measure(section: str, task: str, kind: str, version: str, precision: str, **extra):
        params = {"task": task, "precision": precision, "fast": fast, "seconds": seconds, **extra}
        label = extra.get("levers_off", [COMPILED] if extra.get("compile") else [""])[0]
        try:
            child_rows = run_child(script, params, versions[version], kind)
        except RuntimeError as error:
            if not extra.get("compile"):
                raise
            reason = str(error).strip().splitlines()[-1].split(". ")[0][:120]
            child_rows = [{"phase": "train", "failed": reason}]
            print(f"{section} {kind} {precision} {label}: failed: {reason}", flush=True)
        for row in child_rows:
            if "samples_per_s" in row:
                add_flops(row)
            rows.append(
                {"section": section, "cpu_kind": kind, "version": version, "precision": precision,
                 "lever_off": label, "repeat": extra.get("repeat", 0), **row}
            )  # fmt: skip
            if "samples_per_s" in row:
                value = f"{row['samples_per_s']:.1f} samples/s, MFU {row['mfu']:.0%}"
            elif "category" in row:
                value = f"{row['category']} {row['seconds_per_step']:.3f} s"
            else:
                continue
            print(f"{section} {kind} {version} {precision} {row['phase']} {label}: {value}",
                  flush=True)  # fmt: skip

    for repeat in range(repeats):
        for kind in cpu_kinds:
            for version in versions:
                for precision in precisions_of(kind, bf16_native):
                    if "defaults" in sections:
                        measure("defaults", "train", kind, version, precision, repeat=repeat)
                        measure("defaults", "inference", kind, version, precision, repeat=repeat)
                    if "profile" in sections and repeat == 0:
                        measure("profile", "profile", kind, version, precision)
        if "levers" not in sections:
            continue
        for kind in cpu_kinds:
            for precision in precisions_of(kind, bf16_native):
                for lever in LEVERS:
                    if lever == "fp32 attention kernel" and precision == "32-true":
                        continue  # the kernel is fp32 anyway
                    off = {"levers_off": [lever], "repeat": repeat}
                    measure("levers", "train", kind, CURRENT, precision, **off)
                if repeat == 0:
                    measure("levers", "train", kind, CURRENT, precision, compile=True)
    return rows


# ----------------------------------------------------------------------------- report
#: Goals of issue 25: (cpu kind, phase, precision) -> (speed-up over 0.2, MFU) at least.
GOALS = {
    ("native", "train", "bf16-mixed"): (3.0, 0.50),
    ("avx2", "train", "32-true"): (1.5, None),
    ("native", "embed", "32-true"): (None, 0.60),
    ("avx2", "embed", "32-true"): (None, 0.60),
}


def _paired_median_ratio(numerator, denominator) -> float:
    """Median over repeats of ``numerator / denominator`` (two Series indexed by repeat).

    Each repeat measures both within minutes of each other, so the ratio within a repeat is
    spared the drift of the machine's speed between repeats.
    """
    ratios = (numerator / denominator).dropna()
    return float(ratios.median()) if len(ratios) else np.nan


def summarise(table):
    """Per CPU kind, phase and precision: median samples/s and MFU of 0.2 and this version,
    and the speed-up (the median over repeats of the ratio within a repeat)."""
    import pandas as pd

    rates = table[table.section == "defaults"]
    keys = ["cpu_kind", "phase", "precision"]
    median = rates.groupby([*keys, "version"]).agg(
        samples_per_s=("samples_per_s", "median"), mfu=("mfu", "median")
    )
    wide = median.unstack("version")
    out = pd.DataFrame(index=wide.index)
    baseline = [v for v in rates.version.unique() if v != CURRENT]
    if baseline:
        out["samples_per_s_0.2"] = wide["samples_per_s"][baseline[0]]
        out["mfu_0.2"] = wide["mfu"][baseline[0]]
    out["samples_per_s"] = wide["samples_per_s"][CURRENT]
    out["mfu"] = wide["mfu"][CURRENT]
    if baseline:
        per_repeat = rates.pivot_table(
            index=[*keys, "repeat"], columns="version", values="samples_per_s"
        )
        out["speedup"] = [
            _paired_median_ratio(per_repeat.loc[key][CURRENT], per_repeat.loc[key][baseline[0]])
            for key in out.index
        ]
    return out.reset_index()


def lever_table(table):
    """Training samples/s with each lever switched off, against all on (this version).

    ``gain_of_lever``: the median over repeats of all-on / switched-off within a repeat.
    """
    import pandas as pd

    keys = ["cpu_kind", "precision"]
    current = table[(table.section == "defaults") & (table.version == CURRENT)]
    trained = current[current.phase == "train"]
    all_on = trained.groupby(keys).samples_per_s.median()
    levers = table[table.section == "levers"]
    if levers.empty:
        return pd.DataFrame()
    on_by_repeat = trained.set_index([*keys, "repeat"]).samples_per_s.sort_index()
    columns = {"samples_per_s": ("samples_per_s", "median")}
    if "failed" in levers:
        columns["failed"] = ("failed", "first")
    out = levers.groupby([*keys, "lever_off"], dropna=False).agg(**columns).reset_index()
    out["all_on"] = [all_on.get(tuple(r[k] for k in keys), np.nan) for _, r in out.iterrows()]
    gains = []
    for _, r in out.iterrows():
        off = levers[(levers.lever_off == r.lever_off)]
        off = off[(off.cpu_kind == r.cpu_kind) & (off.precision == r.precision)]
        if "samples_per_s" not in off or off.samples_per_s.isna().all():
            gains.append(np.nan)
            continue
        on = on_by_repeat.loc[(r.cpu_kind, r.precision)]
        gains.append(_paired_median_ratio(on, off.set_index("repeat").samples_per_s))
    out["gain_of_lever"] = gains
    return out


def profile_table(table):
    """Seconds per training step by kind of operation, 0.2 beside this version."""
    part = table[table.section == "profile"]
    if part.empty:
        return part
    return part.pivot_table(
        index=["cpu_kind", "precision", "category"], columns="version", values="seconds_per_step"
    ).reset_index()


def goal_lines(summary) -> list[str]:
    """Pass/fail line per goal of issue 25 that this run measured."""
    lines = []
    for (kind, phase, precision), (speedup, mfu) in GOALS.items():
        row = summary[
            (summary.cpu_kind == kind) & (summary.phase == phase) & (summary.precision == precision)
        ]
        if row.empty:
            continue
        row = row.iloc[0]
        checks = []
        if speedup is not None and "speedup" in row:
            text = f"speed-up {row.speedup:.2f}x (goal {speedup:g}x)"
            checks.append((text, row.speedup >= speedup))
        if mfu is not None:
            checks.append((f"MFU {row.mfu:.0%} (goal {mfu:.0%})", row.mfu >= mfu))
        for text, ok in checks:
            lines.append(f"{kind} {phase} {precision}: {text} -> {'PASS' if ok else 'FAIL'}")
    return lines


def markdown(summary, levers, profile) -> str:
    """The tables of the docs page."""

    def fmt(frame, columns: dict) -> str:
        shown = frame[[c for c in columns if c in frame]].rename(columns=columns)
        return markdown_table(shown)

    parts = [fmt(summary, {
        "cpu_kind": "CPU kind", "phase": "use", "precision": "precision",
        "samples_per_s_0.2": "0.2 samples/s", "samples_per_s": "samples/s",
        "speedup": "speed-up", "mfu_0.2": "0.2 MFU", "mfu": "MFU",
    })]  # fmt: skip
    if not levers.empty:
        parts.append(fmt(levers, {
            "cpu_kind": "CPU kind", "precision": "precision", "lever_off": "switched off",
            "samples_per_s": "samples/s", "all_on": "all on", "gain_of_lever": "gain of it",
            "failed": "failed",
        }))  # fmt: skip
    if not profile.empty:
        columns = {"cpu_kind": "CPU kind", "precision": "precision", "category": "operations"}
        columns.update({c: f"{c} s/step" for c in profile.columns if c not in columns})
        parts.append(fmt(profile, columns))
    return "\n\n".join(parts) + "\n"


def plot(summary, path: Path) -> None:
    """Samples/s of 0.2 and this version, per use, CPU kind and precision."""
    import matplotlib.pyplot as plt

    phases = list(dict.fromkeys(summary.phase))
    fig, axes = plt.subplots(1, len(phases), figsize=(4 * len(phases), 3.6), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=True):
        part = summary[summary.phase == phase]
        labels = [f"{k}\n{p}" for k, p in zip(part.cpu_kind, part.precision, strict=True)]
        x = np.arange(len(part))
        if "samples_per_s_0.2" in part:
            ax.bar(x - 0.2, part["samples_per_s_0.2"], 0.4, label="0.2")
        ax.bar(x + 0.2, part["samples_per_s"], 0.4, label=CURRENT)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(phase)
        ax.set_ylabel("samples/s")
    axes[0][0].legend()
    fig.suptitle("GexBERT at the default settings: this version against 0.2")
    fig.tight_layout()
    fig.savefig(path, dpi=120)

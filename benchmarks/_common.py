"""Harness shared by the benchmark scripts: options, output files, timing, memory, the split.

Importing it selects matplotlib's non-interactive ``Agg`` backend: the scripts write PNG files.
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from lightning.pytorch.callbacks import Callback

matplotlib.use("Agg")

RESULTS = Path(__file__).parent / "results"
#: The small GexBERT configuration the benchmarks train (other arguments at their defaults).
SMALL_MODEL = {"d_model": 64, "n_context": 128}
#: Counts per sample after library-size normalisation, before ``log1p``.
COUNTS_PER_SAMPLE = 1e4
#: Share of the samples in the training split.
TRAIN_FRACTION = 0.8
#: Panel size meaning "every gene".
ALL = "all"

T = TypeVar("T")


def benchmark_parser(description: str, fast_help: str) -> argparse.ArgumentParser:
    """Argument parser with the options of every benchmark: ``--fast`` and ``--tag``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fast", action="store_true", help=fast_help)
    parser.add_argument("--tag", default="", help="suffix of the output files (partial reruns)")
    return parser


def results_path(name: str, args: argparse.Namespace) -> Path:
    """``RESULTS / name`` with ``_fast`` (smoke run) and ``_<tag>`` inserted before the suffix."""
    path = Path(name)
    suffix = ("_fast" if args.fast else "") + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(exist_ok=True)
    return RESULTS / f"{path.stem}{suffix}{path.suffix}"


def timed(function: Callable[..., T], *args, **kwargs) -> tuple[T, float]:
    """``function(*args, **kwargs)`` and the wall seconds it took."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def split_samples(
    n_obs: int, seed: int = 0, *, n_used: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test rows: the first 80 % of a seeded permutation, and the rest.

    ``n_used`` keeps only the permutation's first ``n_used`` rows (a random subset, for smoke
    runs) before splitting.
    """
    order = np.random.default_rng(seed).permutation(n_obs)[:n_used]
    n_train = int(TRAIN_FRACTION * len(order))
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def dense(adata) -> np.ndarray:
    """``adata.X`` as a dense float32 array."""
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    return x.astype(np.float32)


def draw_panel(n_vars: int, size: int | str, seed: int) -> np.ndarray:
    """Sorted column indices of a random panel (all columns for ``"all"``)."""
    if size == ALL or size >= n_vars:
        return np.arange(n_vars)
    rng = np.random.default_rng([seed, size])
    return np.sort(rng.choice(n_vars, size, replace=False))


def only_panel(x: np.ndarray, panel: np.ndarray) -> np.ndarray:
    """Copy of ``x`` with the genes outside ``panel`` set to NaN (missing)."""
    masked = np.full_like(x, np.nan)
    masked[:, panel] = x[:, panel]
    return masked


def plot_methods(ax, part, x: str, y: str, dashed: tuple[str, ...] = ()) -> None:
    """One error-bar line per ``method`` of ``part``: ``y + "_mean"`` ± ``y + "_std"`` over ``x``.

    Methods in ``dashed`` are drawn dashed; the x axis is log2 (panel sizes).
    """
    for method, rows in part.groupby("method", sort=False):
        ax.errorbar(
            rows[x].astype(int),
            rows[f"{y}_mean"],
            yerr=rows[f"{y}_std"].fillna(0),
            label=method,
            linestyle="--" if method in dashed else "-",
            marker="o",
            markersize=3,
            capsize=2,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("genes measured (panel size)")


def finish_figure(fig, legend_ax, path, fontsize: int = 7, loc: str = "lower right") -> None:
    """Legend on ``legend_ax`` at ``loc``; tight layout; save ``fig`` to ``path`` (PNG); close."""
    legend_ax.legend(fontsize=fontsize, loc=loc)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def silence_libraries() -> None:
    """Every warning and the INFO / WARNING logs of the training libraries off (child processes
    whose output is parsed)."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "gexbert_sc"):
        logging.getLogger(name).setLevel(logging.ERROR)


def synchronise(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on a CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize()


class StepTimer(Callback):
    """Times training steps after the first ``warmup`` and stops after ``seconds`` of them.

    Training stops once more than ``min_steps`` step ends are timed and they span ``seconds``.
    """

    def __init__(self, seconds: float, min_steps: int = 2, warmup: int = 1):
        self.seconds, self.min_steps, self.warmup, self.ends = seconds, min_steps, warmup, []

    def timed_ends(self) -> list[float]:
        """Clock readings at the end of the last warm-up step and of every timed step."""
        return self.ends[self.warmup - 1 :]

    def on_train_batch_end(self, trainer, *args) -> None:
        synchronise(trainer.lightning_module.device)
        self.ends.append(time.perf_counter())
        timed = self.timed_ends()
        if len(timed) > self.min_steps and timed[-1] - timed[0] >= self.seconds:
            trainer.should_stop = True

    def seconds_per_step(self) -> float:
        """Mean seconds of a timed step."""
        timed = self.timed_ends()
        return (timed[-1] - timed[0]) / (len(timed) - 1)

    def median_seconds_per_step(self) -> float:
        """Median seconds of a timed step (robust to a step slowed by something else)."""
        return float(np.median(np.diff(self.timed_ends())))


def training_flops(n_context: int, n_vars: int, d_model: int, n_layers: int, n_decoder: int):
    """FLOPs of one training sample: 3 × the forward of ``[CLS]`` + the context, as many
    restoration targets, and the ``[CLS]``-only pass (docs/performance.md, cost model)."""
    from gexbert_sc.module import bottleneck_flops, decoder_flops, encoder_flops

    tokens = 1 + min(n_context, n_vars)
    forward = encoder_flops(tokens, d_model, n_layers)
    forward += decoder_flops(tokens - 1, tokens, d_model, n_decoder)
    return 3 * (forward + bottleneck_flops(tokens - 1, d_model, n_decoder))


def quiet_training_logs() -> None:
    """Progress messages at INFO; Lightning's and scvi-tools' per-run chatter off."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def log_normalise(adata) -> None:
    """``log1p`` of counts per 10,000 (scanpy's ``normalize_total`` + ``log1p``), in place."""
    import scanpy as sc

    sc.pp.normalize_total(adata, target_sum=COUNTS_PER_SAMPLE)
    sc.pp.log1p(adata)


def log_normalised(loader: Callable[[], T]) -> Callable[[], T]:
    """``loader`` followed by :func:`log_normalise` of what it returns (a data set's loader)."""

    def load() -> T:
        adata = loader()
        log_normalise(adata)
        return adata

    return load


def add_summarise_option(parser: argparse.ArgumentParser) -> None:
    """``--summarise CSV ...``: run nothing, summarise and plot saved tables (parts of a run)."""
    parser.add_argument(
        "--summarise",
        nargs="+",
        metavar="CSV",
        help="run nothing: summarise and plot these tables together (parts of a run)",
    )


def read_parts(paths: list[str], text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """One table from the CSV parts of a run (``--summarise``); ``text_columns`` stay text."""
    dtype = dict.fromkeys(text_columns, str)
    return pd.concat([pd.read_csv(path, dtype=dtype) for path in paths], ignore_index=True)


def resident_mb() -> float | None:
    """Resident memory of this process now (MB; ``None`` off Linux)."""
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory (MB) of a block of code.

    The peak is ``VmHWM`` of ``/proc/self/status`` after resetting it through
    ``/proc/self/clear_refs`` on entry (Linux; elsewhere the process's ``ru_maxrss``).
    ``row()`` gives ``peak_rss_mb``, ``phase_mb`` (its increase over the resident memory on
    entry; memory freed earlier and reused is not counted) and, on a GPU, ``peak_gpu_mb``
    (``torch.cuda.max_memory_allocated`` of the block).
    """

    def __enter__(self) -> PeakMemory:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.start_mb = resident_mb() or 0.0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_mb("VmHWM")
        if peak is None:  # not Linux: the process's peak so far (macOS reports bytes)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            peak /= 1024 if platform.system() == "Darwin" else 1
        self.peak_mb = peak
        self.gpu_mb = (
            torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        )

    def row(self) -> dict:
        """The measured peaks as table columns."""
        return {
            "peak_rss_mb": self.peak_mb,
            "phase_mb": self.peak_mb - self.start_mb,
            "peak_gpu_mb": self.gpu_mb,
        }


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """``frame`` as a Markdown table (numbers to ``digits`` significant digits, NaN blank)."""

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, float | np.floating):
            return "" if np.isnan(value) else f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|---" * frame.shape[1] + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)

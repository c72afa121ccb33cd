"""Decide whether registered values are counts or already on a log scale."""

from __future__ import annotations

import logging
from typing import Any, Literal, NamedTuple, get_args

from gexbert_sc.data._matrix import ValueScan, scan_values

logger = logging.getLogger(__name__)

InputScale = Literal["auto", "counts", "log"]

#: Largest value a query of a log-scale model may hold when all its values are integers
#: (``log1p`` of normalised expression stays far below it; raw counts soon exceed it).
MAX_LOG_INTEGER = 30


def check_input_scale(input_scale: str) -> None:
    """Raise a :class:`ValueError` unless ``input_scale`` is one of :data:`InputScale`."""
    allowed = get_args(InputScale)
    if input_scale not in allowed:
        msg = f"`input_scale` must be one of {allowed}, got {input_scale!r}."
        raise ValueError(msg)


class ScaleDecision(NamedTuple):
    """What a set-up decided about the scale of its values, and why."""

    #: the ``input_scale`` asked for: ``"auto"``, ``"counts"`` or ``"log"``
    requested: str
    #: the scale the model reads the values on: ``"counts"`` or ``"log"``
    resolved: Literal["counts", "log"]
    #: one sentence saying which values decided it
    reason: str

    def as_dict(self) -> dict[str, str]:
        """Return the decision as a dict (as ``uns["gexbert"]["input_scale"]`` stores it)."""
        return self._asdict()

    def describe(self) -> str:
        """Return the one-line account that set-up logs."""
        return f"input_scale={self.requested!r} resolved to {self.resolved!r}: {self.reason}."


def resolve_input_scale(matrix: Any, input_scale: InputScale) -> Literal["counts", "log"]:
    """Resolve ``"auto"`` by looking at the data, and check an explicit choice against it.

    Values are counts when every observed value is a non-negative integer; anything else
    (negative or fractional values) is treated as already normalised and log-transformed.

    Parameters
    ----------
    matrix
        The registered expression matrix (NaN marks missing values).
    input_scale
        ``"auto"``, ``"counts"`` or ``"log"``.

    Returns
    -------
    ``"counts"`` or ``"log"``.

    Raises
    ------
    ValueError
        If ``input_scale="counts"`` but a value is negative or not an integer.
    """
    check_input_scale(input_scale)
    return decide_input_scale(scan_values(matrix), input_scale).resolved


def decide_input_scale(
    scan: ValueScan, input_scale: InputScale, layer: str | None = None
) -> ScaleDecision:
    """Resolve or check ``input_scale`` from a full scan of the values (see above).

    Parameters
    ----------
    scan
        :func:`~gexbert_sc.data._matrix.scan_values` of the registered matrix.
    input_scale
        ``"auto"``, ``"counts"`` or ``"log"``.
    layer
        The registered layer's name. With ``"auto"``, a layer whose name says it holds
        counts (it contains ``"count"``, as scvi-tools' ``layer="counts"`` convention) must
        hold counts.

    Returns
    -------
    The :class:`ScaleDecision`.

    Raises
    ------
    ValueError
        If values declared as counts (by ``input_scale="counts"``, or under ``"auto"`` by
        the layer's name) are negative or not integers.
    """
    not_counts = _why_not_counts(scan)
    named_counts = input_scale == "auto" and layer is not None and "count" in layer.lower()
    if not_counts is not None and named_counts:
        msg = (
            f"`layer={layer!r}` is named as counts, but it holds {not_counts}. Register the "
            "raw counts, or pass `input_scale='log'` if the layer holds log-normalised values."
        )
        raise ValueError(msg)
    if input_scale == "counts":
        if not_counts is not None:
            fix = (
                "counts must be whole numbers (round estimated counts with `np.rint`)"
                if scan.minimum >= 0
                else "counts must be non-negative"
            )
            msg = (
                f"`input_scale='counts'` but the data hold {not_counts}; {fix}. Pass "
                "`input_scale='log'` for normalised log-scale values."
            )
            raise ValueError(msg)
        return ScaleDecision(input_scale, "counts", "declared; every value is a count")
    if input_scale == "log":
        return ScaleDecision(input_scale, "log", "declared")
    if not_counts is None:
        reason = (
            "no observed value to decide from"
            if scan.n_finite == 0
            else f"every observed value is a non-negative integer (up to {scan.maximum:.6g})"
        )
        return ScaleDecision(input_scale, "counts" if scan.n_finite else "log", reason)
    if scan.maximum > 50:
        logger.warning(
            "Values are not integer counts but reach %.3g: if they are normalised but not "
            "log-transformed, run `sc.pp.log1p` first or pass `input_scale`.",
            scan.maximum,
        )
    return ScaleDecision(input_scale, "log", f"the data hold {not_counts}")


def _why_not_counts(scan: ValueScan) -> str | None:
    """Say which values are not counts (negative or fractional ones); ``None`` if all are."""
    if scan.n_finite and scan.minimum < 0:
        return f"negative values (min {scan.minimum:.3g})"
    if scan.first_fraction is not None:
        return f"values that are not integers (e.g. {scan.first_fraction:.6g})"
    return None


def check_query_values(matrix: Any, model_is_counts: bool, where: str) -> None:
    """Refuse a query with infinite values, or on another scale than the model's training data.

    A counts model refuses negative or fractional values (log-normalised data); a log-scale
    model refuses data whose values are all non-negative integers reaching more than
    :data:`MAX_LOG_INTEGER` (raw counts).

    Parameters
    ----------
    matrix
        The query's registered expression matrix (every value is scanned).
    model_is_counts
        Whether the model was trained on counts.
    where
        The matrix's name in the message, e.g. ``"adata.X"``.

    Raises
    ------
    ValueError
        Saying what was found and what the model expects.
    """
    scan = scan_values(matrix)
    if scan.n_infinite:
        msg = (
            f"`{where}` holds {scan.n_infinite} infinite values; expected finite values, "
            "with NaN marking missing ones."
        )
        raise ValueError(msg)
    if scan.n_finite == 0:
        return
    integers = scan.first_fraction is None
    if model_is_counts and (scan.minimum < 0 or not integers):
        found = (
            f"negative values (min {scan.minimum:.3g})"
            if scan.minimum < 0
            else f"values that are not integers (e.g. {scan.first_fraction:.6g})"
        )
        msg = (
            f"The model was trained on counts, but `{where}` holds {found}: it looks "
            "log-normalised. Pass the raw counts (e.g. a `counts` layer) the model expects."
        )
        raise ValueError(msg)
    if not model_is_counts and integers and scan.minimum >= 0 and scan.maximum > MAX_LOG_INTEGER:
        msg = (
            f"The model was trained on log-normalised values, but `{where}` holds integers "
            f"up to {scan.maximum:.3g}: it looks like raw counts. Normalise it as the training "
            "data were (e.g. `sc.pp.normalize_total` then `sc.pp.log1p`)."
        )
        raise ValueError(msg)

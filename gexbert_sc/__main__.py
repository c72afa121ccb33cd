"""Command line: ``python -m gexbert_sc {demo,train,embed,impute,predict}`` (``gexbert-sc``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("gexbert_sc")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gexbert-sc", description="GexBERT masked-expression transformer for AnnData."
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pretrain on pbmc68k_reduced, embed, impute, report")
    demo.add_argument("--output-dir", default="demo_output")
    demo.add_argument("--max-epochs", type=int, default=None)

    train = sub.add_parser("train", help="pretrain on an .h5ad and save the model")
    train.add_argument("input", help=".h5ad with expression in X or --layer")
    train.add_argument("--model-dir", required=True)
    train.add_argument("--layer", default=None)
    train.add_argument("--batch-key", default=None)
    train.add_argument("--labels-key", default=None)
    train.add_argument("--input-scale", choices=["auto", "counts", "log"], default="auto")
    train.add_argument("--max-epochs", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--d-model", type=int, default=128)
    train.add_argument("--n-layers", type=int, default=2)
    train.add_argument("--n-context", type=int, default=256)
    train.add_argument("--overwrite", action="store_true")

    for name, help_text in (
        ("embed", "write obsm['X_gexbert'] with a saved model"),
        ("impute", "write layers['gexbert_imputed'] with a saved model"),
        ("predict", "write obs['gexbert_prediction'] with a saved GexBERTClassifier"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("input", help=".h5ad to process")
        cmd.add_argument("--model-dir", required=True)
        cmd.add_argument("--output", required=True, help=".h5ad to write")
        cmd.add_argument("--key-added", default=None)
        cmd.add_argument(
            "--align", action="store_true", help="reorder genes to the model's; absent → NaN"
        )
        cmd.add_argument("--overwrite", action="store_true", help="replace an existing --output")
        if name == "impute":
            cmd.add_argument(
                "--all-entries", action="store_true", help="restore observed entries too"
            )
    return parser


def _check_paths(args: argparse.Namespace) -> None:
    """Check the command's paths before any data are read or any model is trained."""
    if args.command == "demo":
        return
    source = Path(args.input)
    if not source.is_file():
        msg = f"input {str(source)!r} does not exist (or is not a file)."
        raise FileNotFoundError(msg)
    if source.suffix != ".h5ad":
        msg = f"input {str(source)!r} is not an .h5ad file; convert it with anndata first."
        raise ValueError(msg)
    if args.command == "train":
        if Path(args.model_dir).exists() and not args.overwrite:
            msg = f"--model-dir {args.model_dir!r} exists; pass --overwrite to replace it."
            raise FileExistsError(msg)
        return
    if not Path(args.model_dir).is_dir():
        msg = f"--model-dir {args.model_dir!r} is not a directory written by `gexbert-sc train`."
        raise FileNotFoundError(msg)
    output = Path(args.output)
    if output.suffix != ".h5ad":
        msg = f"--output {str(output)!r} must end with .h5ad."
        raise ValueError(msg)
    if output.exists() and not args.overwrite:
        msg = f"--output {str(output)!r} exists; pass --overwrite to replace it."
        raise FileExistsError(msg)


def _demo(args: argparse.Namespace) -> None:
    from gexbert_sc._demo import run_demo

    report = run_demo(
        args.output_dir, max_epochs=args.max_epochs, enable_progress_bar=not args.no_progress
    )
    print(report.format())


def _train(args: argparse.Namespace) -> None:
    import anndata as ad

    from gexbert_sc import GexBERT

    adata = ad.read_h5ad(args.input)
    GexBERT.setup_anndata(
        adata,
        layer=args.layer,
        batch_key=args.batch_key,
        labels_key=args.labels_key,
        input_scale=args.input_scale,
    )
    model = GexBERT(adata, d_model=args.d_model, n_layers=args.n_layers, n_context=args.n_context)
    model.train(
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        enable_progress_bar=not args.no_progress,
    )
    model.save(args.model_dir, overwrite=args.overwrite)
    print(f"saved model to {args.model_dir}")


def _apply(args: argparse.Namespace) -> None:
    import anndata as ad

    from gexbert_sc import GexBERT, GexBERTClassifier, data, tl

    adata = ad.read_h5ad(args.input)
    model_cls = GexBERTClassifier if args.command == "predict" else GexBERT
    model = model_cls.load(args.model_dir, adata=False)
    if args.align:
        adata = data.align_genes(adata, model)
    kwargs = {} if args.key_added is None else {"key_added": args.key_added}
    if args.command == "embed":
        tl.embed(adata, model, **kwargs)
    elif args.command == "predict":
        tl.predict(adata, model, **kwargs)
    else:
        tl.impute(adata, model, keep_observed=not args.all_entries, **kwargs)
    adata.write_h5ad(args.output)
    print(f"wrote {args.output}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    The exit status: 0 on success, 2 on bad input (the error is printed).
    """
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    handlers = {
        "demo": _demo,
        "train": _train,
        "embed": _apply,
        "impute": _apply,
        "predict": _apply,
    }
    try:
        _check_paths(args)
        handlers[args.command](args)
    except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"gexbert-sc {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

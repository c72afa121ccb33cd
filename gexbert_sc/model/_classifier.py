"""GexBERTClassifier: one classifier, built on a pretrained GexBERT, that reads any gene panel."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax
from scvi.data.fields import LabelsWithUnlabeledObsField

from gexbert_sc._constants import REGISTRY_KEYS
from gexbert_sc.data._fields import anndata_fields
from gexbert_sc.data._input_scale import InputScale
from gexbert_sc.data._validation import check_obs_key
from gexbert_sc.model._panel_head import (
    MAX_ADAPTED_PANELS,
    MAX_REFERENCE_SAMPLES,
    fit_panel_head,
    panel_features,
)
from gexbert_sc.model._task import GexBERTTaskModel, SamplesRead
from gexbert_sc.model.base import check_target
from gexbert_sc.model.base._importance_targets import ClassProbability
from gexbert_sc.module import GexBERTClassifierModule

if TYPE_CHECKING:
    from typing import Self

    from anndata import AnnData

    from gexbert_sc.model.base import GexBERTBase
    from gexbert_sc.train import Precision

#: The unlabelled category registered when the user names none (never a real label).
DEFAULT_UNLABELED = "gexbert_unlabeled"
ClassWeight = Literal["balanced"] | None

logger = logging.getLogger(__name__)


class GexBERTClassifier(GexBERTTaskModel):
    """Classify samples from any panel of genes, with a head on a pretrained GexBERT.

    Build it with :meth:`from_gexbert_model` (as ``SCANVI.from_scvi_model``). Training keeps a
    random panel of each sample's observed genes at every step (*panel dropout*: panel sizes
    log-uniform from ``min_panel_genes`` to all genes; see :doc:`/classification`), so that
    the one classifier serves whole profiles and small panels alike; :meth:`predict` reads
    whatever genes a sample has (align a panel with :func:`gexbert_sc.data.align_genes`:
    genes it did not measure are missing, never zero).

    Parameters
    ----------
    adata
        AnnData set up with :meth:`setup_anndata`.
    registry
        Registry of the pretrained or saved model (:meth:`from_gexbert_model` and
        :meth:`load` pass it): no statistics are fitted and the weights are loaded after.
    n_hidden
        Width of the head's hidden layer.
    head_dropout
        Dropout in the head.
    min_panel_genes
        Smallest panel kept by panel dropout.
    freeze_encoder
        Train the head only, on the frozen pretrained embedding; ``False`` fine-tunes the
        encoder too, at ``encoder_lr_scale`` times the head's learning rate.
    encoder_lr_scale
        Learning rate of the encoder relative to the head's when it is fine-tuned.
    class_weight
        ``"balanced"`` weighs each class inversely to its number of labelled samples (as
        scikit-learn's ``class_weight="balanced"``); ``None`` weighs samples equally.
    seed
        Seed of the head's initialisation and of training.
    **architecture
        The pretrained model's hyper-parameters (:class:`~gexbert_sc.GexBERT`'s defaults for
        those not given).
    """

    _module_cls = GexBERTClassifierModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        n_hidden: int = 128,
        head_dropout: float = 0.1,
        min_panel_genes: int = 16,
        freeze_encoder: bool = False,
        encoder_lr_scale: float = 0.3,
        class_weight: ClassWeight = "balanced",
        seed: int | None = None,
        **architecture: Any,
    ):
        if class_weight not in ("balanced", None):
            msg = f"`class_weight` must be 'balanced' or None, got {class_weight!r}."
            raise ValueError(msg)
        self._class_weight = class_weight
        super().__init__(
            adata,
            registry,
            n_hidden=n_hidden,
            head_dropout=head_dropout,
            min_panel_genes=min_panel_genes,
            freeze_encoder=freeze_encoder,
            encoder_lr_scale=encoder_lr_scale,
            seed=seed,
            **architecture,
        )
        self.init_params_ = self._get_init_params(locals())

    def _task_module_kwargs(self) -> dict[str, Any]:
        """Return the number of classes and the class weights, from the registered labels."""
        weights = None
        if self._class_weight == "balanced" and self.adata is not None:
            codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY).ravel()
            counts = np.bincount(codes[codes < self.n_classes], minlength=self.n_classes)
            balanced = counts.sum() / (self.n_classes * np.maximum(counts, 1))
            weights = torch.from_numpy(np.where(counts > 0, balanced, 0.0))
        return {"n_classes": self.n_classes, "class_weights": weights}

    # ------------------------------------------------------------------ labels
    @property
    def unlabeled_category(self) -> Any:
        """The category of unlabelled samples (not a class)."""
        return self._field_state(REGISTRY_KEYS.LABELS_KEY)["unlabeled_category"]

    @property
    def classes(self) -> pd.Index:
        """The classes the model predicts, in the order of :meth:`predict`'s columns."""
        mapping = self._registered_categories(REGISTRY_KEYS.LABELS_KEY)
        return pd.Index([c for c in mapping if c != self.unlabeled_category])

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str,
        unlabeled_category: Any = DEFAULT_UNLABELED,
        layer: str | None = None,
        batch_key: str | None = None,
        missing_layer: str | None = None,
        input_scale: InputScale = "auto",
        **kwargs: Any,
    ) -> None:
        """Set up an AnnData for a classifier (:meth:`from_gexbert_model` calls this).

        Parameters
        ----------
        adata
            AnnData with the pretrained model's genes, in its order.
        labels_key
            ``obs`` column of the labels.
        unlabeled_category
            Label value of samples without a label; they take no part in the loss.
        layer, batch_key, missing_layer, input_scale
            As in :meth:`gexbert_sc.GexBERT.setup_anndata`.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (used by ``load``).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        fields, scale = anndata_fields(
            adata,
            layer=layer,
            batch_key=batch_key,
            labels_key=labels_key,
            missing_layer=missing_layer,
            input_scale=input_scale,
            labels_field=LabelsWithUnlabeledObsField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category
            ),
        )
        cls._register(adata, fields, setup_method_args, kwargs, scale)

    @classmethod
    def from_gexbert_model(
        cls,
        gexbert_model: GexBERTBase,
        labels_key: str | None = None,
        unlabeled_category: Any = None,
        adata: AnnData | None = None,
        **classifier_kwargs: Any,
    ) -> Self:
        """Build a classifier on a pretrained model, as ``SCANVI.from_scvi_model`` does.

        The pretrained weights and statistics are loaded; the head is new. ``adata`` is set
        up with the pretrained model's expression arguments and ``labels_key``.

        Parameters
        ----------
        gexbert_model
            A trained :class:`~gexbert_sc.GexBERT`.
        labels_key
            ``obs`` column of the labels; default: the ``labels_key`` registered when the
            pretrained model was set up.
        unlabeled_category
            Label value of unlabelled samples (used in training only through the encoder;
            they take no part in the loss). ``None``: every sample is labelled.
        adata
            AnnData to train on, with the pretrained model's genes in its order; default:
            the pretrained model's.
        **classifier_kwargs
            Arguments of :class:`GexBERTClassifier` (``freeze_encoder``, ``n_hidden``, ...).

        Returns
        -------
        The untrained classifier.

        Raises
        ------
        ValueError
            Without a labels column, with labels that are missing (NaN), or with fewer than
            two classes among the labelled samples.
        """
        adata = cls._task_data(gexbert_model, adata)
        if labels_key is None:
            labels_key = gexbert_model.registry_["setup_args"].get("labels_key")
        if labels_key is None:
            msg = (
                "`labels_key` is required: the pretrained model was set up without one; pass "
                "the `obs` column holding the labels."
            )
            raise ValueError(msg)
        check_obs_key(adata, labels_key, "labels_key")
        _check_labels(adata.obs[labels_key], labels_key, unlabeled_category)
        cls._setup_on_pretrained(
            gexbert_model,
            adata,
            labels_key=labels_key,
            unlabeled_category=(
                DEFAULT_UNLABELED if unlabeled_category is None else unlabeled_category
            ),
        )
        return cls._from_pretrained(gexbert_model, adata, **classifier_kwargs)

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        *,
        panel_adapted: Literal["auto"] | bool = "auto",
        memory_budget: int | str | None = None,
        precision: Precision = "32-true",
    ) -> pd.Series | pd.DataFrame:
        """Predict the class of each sample from the genes it has.

        Parameters
        ----------
        adata
            AnnData with the model's genes in its order (NaN where a gene was not measured:
            align a panel with :func:`gexbert_sc.data.align_genes`); default: the training
            AnnData. Its labels column, if any, is not read.
        indices
            Samples to predict (default: all).
        soft
            Return class probabilities instead of labels.
        batch_size
            As in :meth:`get_latent_representation` (the result does not depend on it).
        panel_adapted
            Samples that lack some of the model's genes (a panel) are predicted by a head
            refitted, for their panel, on the labelled training samples read through that
            same panel: a logistic regression on the panel's values, beside the ``[CLS]``
            embedding where that scores better in a cross-validation on the training samples
            (:doc:`/design`, "Never below the first baseline"). Samples with every gene keep
            the trained head. The reference is the classifier's AnnData (the one it was
            trained on, or loaded with). ``"auto"`` adapts when the samples asked for hold at
            most ``16`` distinct panels and that AnnData holds labelled samples of at least 2
            classes (else it logs why and uses the trained head); ``True`` adapts to every
            panel; ``False`` uses the trained head only.
        memory_budget, precision
            As in :meth:`get_latent_representation`.

        Returns
        -------
        A categorical :class:`~pandas.Series` of predicted classes, or with ``soft`` a
        :class:`~pandas.DataFrame` of probabilities (classes as columns, rows sum to 1),
        indexed by the samples' names.

        Raises
        ------
        ValueError
            If ``panel_adapted`` is not ``"auto"``, ``True`` or ``False``, or is ``True``
            for a model without an AnnData or whose AnnData holds no labelled samples of
            2 classes.
        """
        if panel_adapted not in ("auto", True, False):
            msg = f"`panel_adapted` must be 'auto', True or False, got {panel_adapted!r}."
            raise ValueError(msg)
        if panel_adapted is True and self.adata is None:
            msg = (
                "`panel_adapted=True` needs the classifier's training AnnData (the reference "
                "read through each panel); load the model with its `adata` or pass "
                "`panel_adapted=False`."
            )
            raise ValueError(msg)
        batch_size = self._resolve_batch_size(batch_size, memory_budget)
        read = self._read_samples(
            adata, indices, batch_size, precision, with_panels=panel_adapted is not False
        )
        proba = softmax(read.head, axis=1)
        if panel_adapted is not False and self.adata is not None:
            self._adapt_to_panels(
                proba, read, (adata, indices), panel_adapted, batch_size, precision
            )
        proba = pd.DataFrame(proba, index=self._sample_names(adata, indices), columns=self.classes)
        if soft:
            return proba
        labels = self.classes[proba.to_numpy().argmax(axis=1)]
        return pd.Series(pd.Categorical(labels, categories=self.classes), index=proba.index)

    def _adapt_to_panels(
        self,
        proba: np.ndarray,
        read: SamplesRead,
        samples: tuple[AnnData | None, Sequence[int] | None],
        panel_adapted: Literal["auto"] | bool,
        batch_size: int,
        precision: Precision,
    ) -> None:
        """Overwrite ``proba`` of the samples that have a panel with the panel-adapted head's.

        ``samples`` are the ``(adata, indices)`` that ``read`` read; each panel's samples
        are read again for their panel's values only.
        """
        partial = [i for i, panel in enumerate(read.panels) if panel.any() and not panel.all()]
        if panel_adapted == "auto" and len(partial) > MAX_ADAPTED_PANELS:
            logger.info(
                "%d distinct gene panels among the samples (more than %d): predicting with the "
                "trained head; pass `panel_adapted=True` to refit a head for each.",
                len(partial),
                MAX_ADAPTED_PANELS,
            )
            return
        reference, labels = self._labelled_reference()
        if len(np.unique(labels)) < 2:
            if panel_adapted is True:
                msg = (
                    "`panel_adapted=True` needs labelled samples of at least 2 classes in the "
                    f"classifier's AnnData, found {len(labels)} labelled samples of "
                    f"{len(np.unique(labels))} classes (was it loaded with unlabelled query "
                    "data?); load it with its training AnnData or pass `panel_adapted=False`."
                )
                raise ValueError(msg)
            logger.info(
                "The classifier's AnnData holds no labelled samples of 2 classes or more: "
                "predicting panels with the trained head."
            )
            return
        adata, indices = samples
        for i in partial:
            panel = read.panels[i]
            rows = np.flatnonzero(read.panel_of == i)
            genes = np.flatnonzero(panel)
            ref = self._read_samples(
                None, reference, batch_size, precision, genes_read=panel, values_of=genes
            )
            head = fit_panel_head(ref.z, ref.values, labels, self._class_weight, self.seed_)
            query_rows = rows if indices is None else np.asarray(indices)[rows]
            query = self._read_samples(adata, query_rows, batch_size, precision, values_of=genes)
            features = panel_features(query.z, query.values, head.with_embedding)
            adapted = np.zeros((len(rows), self.n_classes))
            adapted[:, head.pipeline.classes_] = head.pipeline.predict_proba(features)
            proba[rows] = adapted
            logger.info(
                "Panel of %d genes: head refitted on %d reference samples read through it (%s).",
                len(genes),
                len(reference),
                "embedding and panel" if head.with_embedding else "panel values alone",
            )

    def _labelled_reference(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the labelled training samples' indices and class codes.

        At most ``MAX_REFERENCE_SAMPLES``: a seeded random subset beyond.
        """
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY).ravel()
        labelled = np.flatnonzero(codes < self.n_classes)
        if len(labelled) > MAX_REFERENCE_SAMPLES:
            rng = np.random.default_rng(self.seed_)
            labelled = np.sort(rng.choice(labelled, MAX_REFERENCE_SAMPLES, replace=False))
        return labelled, codes[labelled].astype(np.int64)

    def _importance_target(
        self, target: str | None, adata: AnnData | None, rows: np.ndarray
    ) -> ClassProbability:
        """Explain the probability of each sample's predicted, labelled or a given class."""
        targets = ("predicted", "label", *map(str, self.classes))
        target = check_target(target, targets, "GexBERTClassifier")
        if target == "predicted":
            return ClassProbability()
        if target != "label":
            return ClassProbability(np.full(len(rows), list(targets[2:]).index(target)))
        labels_key = self.registry_["setup_args"]["labels_key"]
        data = self.adata if adata is None else adata
        check_obs_key(data, labels_key, "target='label' reads labels_key")
        labels = data.obs[labels_key].iloc[rows].astype(str)
        codes = pd.Index(self.classes.astype(str)).get_indexer(labels)
        if (codes < 0).any():
            unknown = sorted(set(labels[codes < 0]))
            msg = (
                f"`target='label'` explains each sample's class in `adata.obs[{labels_key!r}]`, "
                f"but {int((codes < 0).sum())} samples read have labels that are not classes "
                f"of the model ({unknown[:5]}); the classes are {list(self.classes)}."
            )
            raise ValueError(msg)
        return ClassProbability(codes)

    def _placeholder_obs(self) -> dict[str, Any]:
        return {self.registry_["setup_args"]["labels_key"]: self.unlabeled_category}


def _check_labels(labels: pd.Series, labels_key: str, unlabeled_category: Any) -> None:
    """Raise a :class:`ValueError` unless ``labels`` give at least two labelled classes."""
    if labels.isna().any():
        msg = (
            f"`adata.obs[{labels_key!r}]` has {int(labels.isna().sum())} missing labels (NaN); "
            "fill them with a category and pass it as `unlabeled_category`."
        )
        raise ValueError(msg)
    labelled = labels[labels != unlabeled_category] if unlabeled_category is not None else labels
    if len(labelled) == 0:
        msg = (
            f"Every sample of `adata.obs[{labels_key!r}]` is {unlabeled_category!r} "
            "(`unlabeled_category`): there is nothing to learn from."
        )
        raise ValueError(msg)
    classes = pd.unique(labelled.astype(str))
    if len(classes) < 2:
        msg = (
            f"`adata.obs[{labels_key!r}]` has {len(classes)} labelled class ({list(classes)}); "
            "a classifier needs at least 2."
        )
        raise ValueError(msg)

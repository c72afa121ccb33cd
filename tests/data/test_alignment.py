import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gexbert_sc.data import align_genes, check_var_names


def _adata(sparse: bool) -> ad.AnnData:
    x = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    adata = ad.AnnData(sp.csr_matrix(x) if sparse else x)
    adata.var_names = ["a", "b", "c", "d"]
    adata.layers["mask"] = np.zeros((3, 4), dtype=bool)
    return adata


@pytest.mark.parametrize("sparse", [False, True])
def test_align_genes_reorders_drops_and_marks_missing(sparse):
    adata = _adata(sparse)
    aligned = align_genes(adata, ["c", "a", "z"])
    x = aligned.X.toarray() if sparse else aligned.X
    assert list(aligned.var_names) == ["c", "a", "z"]
    np.testing.assert_array_equal(x[:, 0], [3, 7, 11])
    np.testing.assert_array_equal(x[:, 1], [1, 5, 9])
    assert np.isnan(x[:, 2]).all()
    assert aligned.layers["mask"][:, 2].all() and not aligned.layers["mask"][:, :2].any()
    assert aligned.uns["gexbert_alignment"]["missing_genes"] == ["z"]
    assert aligned.uns["gexbert_alignment"]["n_dropped"] == 2


def test_align_genes_refuses_no_overlap():
    with pytest.raises(ValueError, match="shares no gene with the model's 2 genes"):
        align_genes(_adata(False), ["x", "y"])


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["b", "a", "c"], "holds the model's genes in another order"),
        (["a", "b"], "shares 2 of the model's 3 genes"),
        (["a", "b", "x", "y"], "shares 2 of the model's 3 genes .2 of its 4 genes are unknown"),
    ],
)
def test_check_var_names_explains_the_mismatch(names, message):
    with pytest.raises(ValueError, match=message):
        check_var_names(pd.Index(names), ["a", "b", "c"])
    check_var_names(pd.Index(["a", "b", "c"]), ["a", "b", "c"])

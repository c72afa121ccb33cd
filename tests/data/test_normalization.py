import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gexbert_sc.data._input_scale import resolve_input_scale
from gexbert_sc.data._normalization import to_input_scale, to_model_scale
from gexbert_sc.data._statistics import fit_expression_statistics


def test_full_profile_matches_normalize_total_log1p():
    """With every gene observed, the size factor is the library size (scanpy's recipe)."""
    counts = torch.tensor([[1.0, 3.0, 0.0, 6.0], [2.0, 2.0, 2.0, 2.0]])
    share = torch.full((4,), 0.25)
    y, factors = to_model_scale(counts, torch.ones_like(counts, dtype=torch.bool), share, True)
    expected = np.log1p(counts.numpy() / counts.numpy().sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(factors.numpy(), [10.0, 8.0])


def test_normalised_values_do_not_depend_on_hidden_genes():
    """Hiding genes leaves the normalised values of the observed genes unchanged."""
    rng = np.random.default_rng(0)
    share = torch.tensor(rng.dirichlet(np.ones(50)), dtype=torch.float32)
    counts = torch.poisson(share * 5000).expand(1, -1).clone()
    all_observed = torch.ones_like(counts, dtype=torch.bool)
    panel = all_observed.clone()
    panel[:, 10:] = False
    y_full, _ = to_model_scale(counts, all_observed, share, True)
    y_panel, _ = to_model_scale(counts, panel, share, True)
    # a library summed over the panel only would shift every value by log(5000/panel_total)
    np.testing.assert_allclose(y_panel[:, :10], y_full[:, :10], atol=0.35)
    naive = np.log1p(counts[:, :10] / counts[:, :10].sum() * 1e4)
    assert np.abs(naive - y_full[:, :10]).mean() > 3 * np.abs(y_panel - y_full)[:, :10].mean()


def test_input_scale_round_trip():
    counts = torch.tensor([[0.0, 5.0, 10.0]])
    y, factors = to_model_scale(
        counts, torch.ones_like(counts, dtype=torch.bool), torch.ones(3) / 3, True
    )
    np.testing.assert_allclose(to_input_scale(y, factors, True).numpy(), counts.numpy(), rtol=1e-5)
    logs = torch.tensor([[0.5, 1.5]])
    assert torch.equal(to_input_scale(logs, torch.ones(1), False), logs)


@pytest.mark.parametrize(
    ("values", "requested", "expected"),
    [
        (np.array([[0, 1, 7], [3, 0, 2]], dtype=float), "auto", "counts"),
        (np.array([[0, 1.5, 7], [3, 0, 2]]), "auto", "log"),
        (np.array([[-1.0, 1, 7], [3, 0, 2]]), "auto", "log"),
        (np.array([[0, 1, 7], [3, 0, 2]], dtype=float), "log", "log"),
    ],
)
def test_resolve_input_scale(values, requested, expected):
    assert resolve_input_scale(values, requested) == expected


def test_negative_counts_are_refused():
    with pytest.raises(ValueError, match="input_scale='counts'.*negative"):
        resolve_input_scale(np.array([[-1.0, 2.0]]), "counts")


def test_bin_edges_are_per_gene_quantiles_of_nonzero_values():
    rng = np.random.default_rng(0)
    values = np.c_[rng.uniform(0, 1, 1000), rng.uniform(10, 20, 1000)].astype(np.float32)
    values[:500, 0] = 0.0
    stats = fit_expression_statistics(values, None, False, 6, np.array(["a", "b"]), n_axes=2)
    assert stats.bin_edges.shape == (2, 4)
    assert np.all(np.diff(stats.bin_edges, axis=1) > 0)
    # gene a: quartiles of its non-zero values (uniform on (0, 1)), zeros excluded
    np.testing.assert_allclose(stats.bin_edges[0], [0.2, 0.4, 0.6, 0.8], atol=0.08)
    np.testing.assert_allclose(stats.bin_edges[1], [12, 14, 16, 18], atol=0.5)
    np.testing.assert_allclose(stats.gene_mean, values.mean(0), rtol=1e-5)


def test_never_observed_gene_is_refused():
    values = np.ones((5, 3), dtype=np.float32)
    values[:, 1] = np.nan
    with pytest.raises(ValueError, match="1 of 3 genes have no observed value.*g1"):
        fit_expression_statistics(values, None, False, 8, np.array(["g0", "g1", "g2"]), n_axes=2)


def test_principal_axes_match_pca_of_the_log_profiles():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(300, 3)) * [3.0, 2.0, 1.0]
    values = np.abs(scores @ rng.normal(size=(3, 40)) + rng.normal(scale=0.1, size=(300, 40)))
    names = np.array([f"g{i}" for i in range(40)])
    sparse = sp.csr_matrix(values)
    stats = fit_expression_statistics(sparse, None, False, 6, names, n_axes=5, max_cells=300)
    centred = values - values.mean(0)
    reference = np.linalg.svd(centred, full_matrices=False)[2][:3].T
    axes = stats.principal_axes[:, :3] / np.linalg.norm(stats.principal_axes[:, :3], axis=0)
    np.testing.assert_allclose(np.abs(np.sum(axes * reference, axis=0)), 1.0, atol=1e-4)
    # rescaled so that projections (× 1/sqrt(G), as in the module) have unit mean variance
    projected = centred @ stats.principal_axes / np.sqrt(40)
    assert projected.var(axis=0, ddof=1).mean() == pytest.approx(1.0, rel=1e-3)
    again = fit_expression_statistics(values, None, False, 6, names, n_axes=5, max_cells=300)
    np.testing.assert_allclose(again.principal_axes, stats.principal_axes, rtol=1e-4, atol=1e-5)


def test_principal_axes_beyond_the_rank_are_filled():
    values = np.abs(np.random.default_rng(1).normal(size=(6, 10)))
    stats = fit_expression_statistics(values, None, False, 6, np.arange(10), n_axes=8)
    assert stats.principal_axes.shape == (10, 8)
    assert np.isfinite(stats.principal_axes).all()

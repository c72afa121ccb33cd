"""pl.kaplan_meier: renders risk groups with the log-rank p; bad input gives clear errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import make_survival_adata  # noqa: E402

from gexbert_sc import pl  # noqa: E402
from gexbert_sc.pl._survival import risk_groups  # noqa: E402


@pytest.fixture
def cohort():
    adata = make_survival_adata(n_obs=120, n_vars=5)
    adata.obs["gexbert_risk"] = adata.obs["log_hazard"]
    return adata


def test_curves_of_the_risk_groups_with_logrank_p(cohort, tmp_path):
    ax = pl.kaplan_meier(cohort, time_key="time", event_key="event", show=False)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["low risk (n=60)", "high risk (n=60)"]
    # the true hazard separates the groups: a small log-rank p in the title
    pvalue = float(ax.get_title().split("p = ")[1])
    assert pvalue < 1e-3
    plt.close(ax.figure)
    path = tmp_path / "km.png"
    pl.kaplan_meier(cohort, time_key="time", event_key="event", n_groups=3, save=path)
    assert path.stat().st_size > 0
    plt.close("all")


def test_risk_groups_are_equal_sized_by_increasing_risk(cohort):
    groups = risk_groups(cohort.obs["gexbert_risk"], 3)
    assert list(groups.categories) == ["risk group 1", "risk group 2", "risk group 3"]
    assert np.bincount(groups.codes).tolist() == [40, 40, 40]
    risk = cohort.obs["gexbert_risk"].to_numpy()
    assert risk[groups.codes == 0].max() < risk[groups.codes == 2].min()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"risk_key": "score"}, KeyError, "`risk_key='score'`"),
        ({"time_key": "os"}, KeyError, "`time_key='os'`"),
        ({"n_groups": 1}, ValueError, "`n_groups` must be an integer from 2"),
    ],
)
def test_bad_arguments_are_refused(cohort, kwargs, error, match):
    arguments = {"time_key": "time", "event_key": "event", "show": False, **kwargs}
    with pytest.raises(error, match=match):
        pl.kaplan_meier(cohort, **arguments)


def test_missing_risks_are_refused(cohort):
    cohort.obs.loc[cohort.obs_names[0], "gexbert_risk"] = np.nan
    with pytest.raises(ValueError, match="numeric risks without NaN"):
        pl.kaplan_meier(cohort, time_key="time", event_key="event", show=False)

import inspect

import pytest

import gexbert_sc.pl
from gexbert_sc.utils import doc_params

PLOTS = [getattr(gexbert_sc.pl, name) for name in gexbert_sc.pl.__all__]


@pytest.mark.parametrize("plot", PLOTS, ids=lambda f: f.__name__)
def test_every_plot_documents_ax_show_save_once_and_has_no_placeholder_left(plot):
    doc = inspect.getdoc(plot)
    assert "{" + "ax_show_save}" not in doc
    for parameter in ("ax", "show", "save"):
        assert doc.count(f"\n{parameter}\n") == 1, parameter
    assert "\nReturns\n-------\nThe matplotlib ``Axes``, unless the figure was shown." in doc


def test_doc_params_fills_only_named_placeholders_and_refuses_a_missing_one():
    @doc_params(block="filled")
    def documented():
        """Text {block}, and a dict {"a": 1} left alone."""

    assert documented.__doc__ == 'Text filled, and a dict {"a": 1} left alone.'
    with pytest.raises(ValueError, match=r"has no \{other\} placeholder"):

        @doc_params(other="x")
        def undocumented():
            """No placeholder."""

"""General utilities below every other layer: checks, CPU flags, atomic dirs, manifests."""

from gexbert_sc.utils._arguments import (
    check_fraction,
    check_positive_integers,
    is_finite_number,
    is_integer,
)
from gexbert_sc.utils._atomic import atomic_directory, recover_replaced, replace_directory
from gexbert_sc.utils._cpu import cpu_flags, cpu_has_amx
from gexbert_sc.utils._docs import doc_params
from gexbert_sc.utils._manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    read_manifest,
    verify_files,
    write_manifest,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "atomic_directory",
    "check_fraction",
    "check_positive_integers",
    "cpu_flags",
    "cpu_has_amx",
    "doc_params",
    "is_finite_number",
    "is_integer",
    "read_manifest",
    "recover_replaced",
    "replace_directory",
    "verify_files",
    "write_manifest",
]

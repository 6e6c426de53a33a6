"""Sphinx configuration of the sklearn-unfold documentation.

Build with ``make -C docs html`` (warnings are errors). Environment switches:

* ``SPHINX_GALLERY_PLOT=0`` builds the example gallery without running the examples (CI);
  the default, ``1``, runs every ``examples/plot_*.py`` and embeds its figures.
* ``SPHINX_GALLERY_FILENAME_PATTERN`` (a regular expression on the example paths) runs only
  the matching examples, e.g. ``plot_baselines`` for a fast subset; the others are rendered
  without running.
* ``SKLEARN_UNFOLD_INTERSPHINX=1`` links to the Python, NumPy, scikit-learn and PyTorch
  documentation through intersphinx. It fetches inventories from the network, so it is off by
  default: the default build never touches the network.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import sklearn_unfold  # noqa: E402

# -- project -------------------------------------------------------------------------------------
project = "sklearn-unfold"
author = "the sklearn-unfold developers"
copyright = "the sklearn-unfold developers"  # noqa: A001
release = sklearn_unfold.__version__
version = ".".join(release.split(".")[:2])

# -- extensions ----------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off", "")


if _flag("SKLEARN_UNFOLD_INTERSPHINX", "0"):
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
    }

# Without intersphinx, references to other projects' objects cannot resolve; the nitpicky build
# (-n) would report each of them. References inside sklearn_unfold are still all checked.
nitpick_ignore_regex = []
if "sphinx.ext.intersphinx" not in extensions:
    nitpick_ignore_regex.append(
        (r"py:.*", r"(sklearn|torch|numpy|np|scipy|matplotlib|joblib|safetensors)(\..*)?"))
# ``UnrolledNetwork.n_active`` is a plain instance attribute (described in the class text).
nitpick_ignore = [("py:attr", "n_active")]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.json",
                    "auto_examples/*.md5", "sg_execution_times.rst"]
root_doc = "index"
default_role = "literal"
pygments_style = "sphinx"
math_number_all = False

# -- autodoc / autosummary / numpydoc ------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"
autodoc_inherit_docstrings = False  # a method without a docstring does not borrow torch's
autodoc_member_order = "bysource"
autodoc_mock_imports: list[str] = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# -- sphinx-gallery ------------------------------------------------------------------------------
_plot_gallery = _flag("SPHINX_GALLERY_PLOT", "1")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": os.environ.get("SPHINX_GALLERY_FILENAME_PATTERN", r"/plot_"),
    "ignore_pattern": r"__init__\.py",
    "plot_gallery": _plot_gallery,
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 1,
    "doc_module": ("sklearn_unfold",),
    "reference_url": {"sklearn_unfold": None},
    "backreferences_dir": None,
}

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"sklearn-unfold {release}"
html_static_path = ["_static"]
html_theme_options = {
    "description": "Deep unfolding for scikit-learn",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_show_sourcelink = False

# Plots are rendered without a display.
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", category=UserWarning,
                        message="Matplotlib is currently using agg")


# -- hooks ---------------------------------------------------------------------------------------
def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document only the members written in sklearn_unfold.

    Class pages use ``:inherited-members:`` so that an estimator shows ``fit``, ``predict`` and
    ``staged_predict`` defined on its private base classes; the methods inherited from
    scikit-learn, PyTorch or ``object`` (``get_params``, ``score``, ``nn.Module.forward`` …) are
    left out: their docstrings belong to those projects.
    """
    if skip or what != "class":
        return skip
    target = obj.fget if isinstance(obj, property) else obj
    module = getattr(target, "__module__", None)
    if module is None:
        return None
    if not module.startswith("sklearn_unfold"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)

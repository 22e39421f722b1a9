"""The validation studies that chose the workflow's defaults, as functions on trained models,
crop stores and tables (the studies' workflow, ``workflow/studies``, runs them as jobs):

- :mod:`~gradcamo.studies.design`: a study model's ``train`` section and the grid of maps
  (no torch: the studies' workflow reads it when it builds its jobs);
- :mod:`~gradcamo.studies.variants`: the crops a study derives from a workflow run's (the
  cell-context stores, the shortcut-free counterparts of the test wells);
- :mod:`~gradcamo.studies.attribution`: which attribution method and layer make Grad-CAMO
  agree with the counterfactual audit (docs/validation.md);
- :mod:`~gradcamo.studies.evidence`: where Grad-CAMO starts to mean something
  (``profile.min_evidence``) and the model randomisation check;
- :mod:`~gradcamo.studies.penalty`: does a penalised model look at the cell
  (``train.attention_penalty``, docs/regulariser.md);
- :mod:`~gradcamo.studies.provenance`: the line that dates every table the docs show.

A study model is named by its variant of the mini dataset (``clean``, ``confounded``: the
same cells, debris correlated with treatment outside them), its context (``full``, ``cell``:
``crops.context: cell``, the context replaced by the plate's neutral fill), its training
setting and its seed.
"""

#: The attribution study's three kinds of model: (variant, context).
KINDS = {"clean": ("clean", "full"), "confounded": ("confounded", "full"), "cell": ("confounded", "cell")}


def kind_of(variant: str, context: str) -> str | None:
    """The attribution study's name of a (variant, context) pair, ``None`` if it has none."""
    return {pair: kind for kind, pair in KINDS.items()}.get((variant, context))

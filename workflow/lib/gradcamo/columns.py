"""Names of the profile-table columns that the profile and aggregate stages share.

A module of its own, without imports, because the two stages run in different environments
(PyTorch for :mod:`gradcamo.profiles`, the analysis stack for :mod:`gradcamo.aggregate`).
"""

#: Grad-CAMO: the share of a cell's Grad-CAM attention on the cell itself.
GRADCAMO_COLUMN = "Metadata_GradCAMO"
#: The other shares of the attention (keys as in :func:`gradcamo.gradcam.attention_shares`);
#: with Grad-CAMO they sum to 1.
ATTENTION_COLUMNS = {
    "neighbours": "Metadata_Attribution_NeighbourShare",
    "background": "Metadata_Attribution_BackgroundShare",
}
#: The Grad-CAMO a uniform map would get: the cell's share of its crop's voxels.
UNIFORM_COLUMN = "Metadata_GradCAMO_Uniform"
#: The Grad-CAMO of the cell's mask on another cell's map (the next cell of its well): what a
#: map scores for looking at the centre of a crop, where every crop has its cell, without
#: knowing which cell. The shuffled baseline of saliency research's centre bias.
SHUFFLED_COLUMN = "Metadata_GradCAMO_Shuffled"
#: The evidence the map shares out (:func:`gradcamo.gradcam.attribution_evidence`): p(crop) -
#: p(baseline crop) of the explained class. Grad-CAMO is NaN where it is below
#: ``profile.min_evidence``.
EVIDENCE_COLUMN = "Metadata_AttributionEvidence"
#: Why a cell's Grad-CAMO is NaN (:data:`UNDEFINED_REASONS`); empty (null) where it is defined.
UNDEFINED_COLUMN = "Metadata_GradCAMO_Undefined"
#: Whether a cell was in its well's attribution sample (``profile.attribution_cells_per_well``):
#: only those carry a map, Grad-CAMO, its baselines and the audit; every cell has its
#: embedding and prediction.
SAMPLED_COLUMN = "Metadata_AttributionSampled"
#: The reasons, in the order they are checked.
UNDEFINED_REASONS = {
    "not_sampled": "not in the well's attribution sample (profile.attribution_cells_per_well)",
    "no_attention": "the map is zero everywhere",
    "baseline_is_class": (
        "too little evidence: the empty baseline crop is itself predicted as the explained class"
    ),
    "low_evidence": "too little evidence: the crop hardly raises the explained class over the empty baseline",
}
#: The counterfactual audit (:mod:`gradcamo.audit`): drops of the target class's probability
#: when the cell, or its context, is replaced by the neutral fill.
AUDIT_RELIANCE_COLUMNS = {
    "cell": "Metadata_CellReliance",
    "context": "Metadata_ContextReliance",
}
#: The classes predicted from the cell alone (context replaced) and the context alone.
AUDIT_PREDICTION_COLUMNS = {
    "from_cell": "Metadata_PredictedFromCell",
    "from_context": "Metadata_PredictedFromContext",
}
#: Per channel, the mean background intensity of a crop (the leak check's input).
BACKGROUND_PREFIX = "Metadata_BackgroundMean_"


def background_column(channel: str) -> str:
    """The profile column of a channel's background mean."""
    return f"{BACKGROUND_PREFIX}{channel}"

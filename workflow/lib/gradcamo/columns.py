"""Names of the profile-table columns that the profile and aggregate stages share.

A module of its own, without imports, because the two stages run in different environments
(PyTorch for :mod:`gradcamo.profiles`, the analysis stack for :mod:`gradcamo.aggregate`).
"""

#: Grad-CAMO: the share of a cell's Grad-CAM attention on the cell itself.
GRADCAMO_COLUMN = "Metadata_GradCAMO"
#: The other shares of the attention (keys as in :func:`gradcamo.gradcam.attention_shares`);
#: with Grad-CAMO they sum to 1.
ATTENTION_COLUMNS = {
    "neighbours": "Metadata_GradCAM_NeighbourShare",
    "background": "Metadata_GradCAM_BackgroundShare",
}
#: The Grad-CAMO a uniform map would get: the cell's share of its crop's voxels.
UNIFORM_COLUMN = "Metadata_GradCAMO_Uniform"

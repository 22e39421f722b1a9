"""gradcamo: interpretable single-cell morphological profiles from 3D Cell Painting.

One module per concern; none of them knows about Snakemake:

- :mod:`gradcamo.errors`       -- the one exception type for bad input.
- :mod:`gradcamo.io`           -- TIFF z-stacks (ZCYX) and label images (ZYX), atomic writes.
- :mod:`gradcamo.synthetic`    -- the seeded mini 3D Cell Painting dataset generator.
- :mod:`gradcamo.qc`           -- per-site, per-channel image quality metrics.
- :mod:`gradcamo.segmentation` -- Cellpose 3 segmentation, training and scoring.
- :mod:`gradcamo.crops`        -- single-cell 3D crops, masks and the cell table.
- :mod:`gradcamo.store`        -- the per-well crop store (random access per cell).
- :mod:`gradcamo.split`        -- well-disjoint train/val/test split.
- :mod:`gradcamo.model`        -- MONAI 3D EfficientNet built for the crop shape; checkpoints.
- :mod:`gradcamo.training`     -- the training loop (resumable, seeded).
- :mod:`gradcamo.gradcam`      -- one-pass embedding + 3D Grad-CAM + Grad-CAMO.
- :mod:`gradcamo.aggregate`    -- well profiles and sphering.
- :mod:`gradcamo.evaluation`   -- mean average precision with copairs.
- :mod:`gradcamo.figures`      -- PNG figures.
"""

__version__ = "0.1.0"

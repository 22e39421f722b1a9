"""gradcamo: interpretable single-cell morphological profiles from 3D Cell Painting.

One module per concern; none of them knows about Snakemake:

- :mod:`gradcamo.errors`       -- the one exception type for bad input.
- :mod:`gradcamo.config`       -- the configuration outside Snakemake: schema defaults, renamed keys.
- :mod:`gradcamo.wells`        -- well names (one spelling; row/column to name).
- :mod:`gradcamo.io`           -- label images (ZYX), writing z-stacks, atomic writes.
- :mod:`gradcamo.readers`      -- one reader per input layout (OME-TIFF, per-channel files,
  Opera Phenix, ImageXpress, CellVoyager, LoadData, pattern, OME-Zarr), one interface.
- :mod:`gradcamo.sites`        -- a labelled site as the array-level stages receive it.
- :mod:`gradcamo.samples`      -- the sample sheet and the config's semantic checks.
- :mod:`gradcamo.sheet`        -- the sample-sheet builder (``gradcamo-sheet``).
- :mod:`gradcamo.synthetic`    -- the seeded mini 3D Cell Painting dataset generator.
- :mod:`gradcamo.qc`           -- per-site, per-channel image quality metrics.
- :mod:`gradcamo.segmentation` -- Cellpose 3 segmentation, training and scoring.
- :mod:`gradcamo.normalization` -- per-plate (control-well) or per-site intensity percentiles.
- :mod:`gradcamo.context`      -- the neutral fill: a crop's cell or its context replaced.
- :mod:`gradcamo.crops`        -- single-cell 3D crops, masks and the cell table.
- :mod:`gradcamo.store`        -- the per-well crop store (random access per cell).
- :mod:`gradcamo.split`        -- well-disjoint train/val/test split.
- :mod:`gradcamo.model`        -- MONAI 3D EfficientNet built for the crop shape; checkpoints.
- :mod:`gradcamo.devices`      -- the device, float precision and determinism of a job.
- :mod:`gradcamo.data`         -- crop stores as a PyTorch dataset and loader; seeded augmentation.
- :mod:`gradcamo.train_settings` -- the ``train`` config section, read and checked.
- :mod:`gradcamo.prediction`   -- eval-mode logits; batch-norm statistics refreshed for evaluation.
- :mod:`gradcamo.validation_audit` -- the per-epoch audit of validation cells; the best-epoch score.
- :mod:`gradcamo.training`     -- the training loop (seeded, early-stopped) and its outputs.
- :mod:`gradcamo.resume`       -- fingerprint, resume state and progress of training.
- :mod:`gradcamo.metrics`      -- classification metrics of a split.
- :mod:`gradcamo.attribution_methods` -- the maps by name; the smoothing's sigmas (torch-free).
- :mod:`gradcamo.gradcam`      -- one-pass embedding + 3D attribution maps + Grad-CAMO.
- :mod:`gradcamo.audit`        -- the counterfactual audit: the cell, or its context, replaced.
- :mod:`gradcamo.profiles`     -- a well's profile table from its crop store.
- :mod:`gradcamo.aggregate`    -- single-cell tables and well profiles.
- :mod:`gradcamo.sphering`     -- ZCA sphering on control profiles.
- :mod:`gradcamo.summary`      -- the run's summary; :mod:`gradcamo.audit_summary`, its audit.
- :mod:`gradcamo.evaluation`   -- mean average precision with copairs.
- :mod:`gradcamo.figures`      -- PNG figures.
- :mod:`gradcamo.studies`      -- the validation studies' logic (attribution, evidence, penalty),
  run as jobs by the studies' workflow (``workflow/studies``).
"""

__version__ = "0.2.0"

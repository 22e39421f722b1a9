"""A plate's mask review: results/segmentation/review/{plate}.png (a page of the report)."""

import pandas as pd
from gradcamo.figures import save_figure
from gradcamo.logs import log_to
from gradcamo.mask_review import choose_sites, mask_review_figure, review_site, site_title
from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
images = ImageSettings.from_dict(sm.params.images)
review = sm.params.review
qc = pd.read_parquet(sm.input.qc)
chosen = choose_sites(qc, review["review_sites"], review["review_seed"])
scores = pd.read_parquet(sm.input.scores[0]) if sm.input.scores else None
records = {(r["well"], int(r["site"])): r for r in sm.params.sites}
reader = open_reader(images, sm.input.index)
channels = list(images.channels)
cytoplasm = channels.index(sm.params.cytoplasm_channel)
nucleus = channels.index(sm.params.nucleus_channel) if sm.params.nucleus_channel else None
reviewed = []
for row in chosen.itertuples(index=False):
    record = records[(row.well, int(row.site))]
    (source,) = labelled_sites(reader, [Site.from_record(record)], [record["labels"]])
    zstack, labels = source.arrays()
    score = None
    if scores is not None:
        hit = scores[(scores.plate == row.plate) & (scores.well == row.well) & (scores.site == row.site)]
        score = float(hit.ap50.iloc[0]) if len(hit) else None
    reviewed.append(
        review_site(
            f"{row.well}/{row.site}",
            zstack,
            labels,
            site_title(row, score),
            cytoplasm,
            nucleus,
            review["review_planes"],
        )
    )
    log.info("site %s/%s: planes %s", row.well, row.site, reviewed[-1].planes)
figure = mask_review_figure(sm.wildcards.plate, reviewed, len(qc), int(qc.flagged.sum()))
save_figure(figure, sm.output[0], dpi=110)
log.info("reviewed %d of %d sites (%d flagged)", len(reviewed), len(qc), int(qc.flagged.sum()))

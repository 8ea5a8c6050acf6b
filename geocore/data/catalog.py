"""The benchmark and training datasets `geocore data fetch` knows: plain data, one frozen row per dataset.

Each :class:`DatasetEntry` says what the dataset is, where its files come from upstream (the public URLs the
papers' and their successors' READMEs link), how large they are, their licence and citation, and how the files
become the one layout every geocore command reads (:mod:`geocore.data.fetched`)::

    <data dir>/<name>/<name>.csv   IMG_ID,LAT,LON[,AUTHOR,S3_Label,S16_Label,S365_Label]  (read_benchmark_csv)
    <data dir>/<name>/images/      one file per IMG_ID
    <data dir>/<name>/.complete    written last: which parts are complete

A dataset has up to two parts, ``metadata`` (the ground-truth table, plus any side files kept as they are) and
``images`` (archives unpacked into ``images/``). Sizes are bytes; ``size_verified`` / ``url_verified`` say
whether the figure or the address was read from the source's own page, or is an estimate / taken from a
third-party README. No source here publishes checksums, so every ``sha256`` is None and `geocore data fetch`
records each file's SHA-256 on first download and checks it on every later one (``checksums.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from geocore.errors import InputError

Role = Literal["table", "side", "archive", "split"]
PartName = Literal["metadata", "images"]
PARTS: tuple[PartName, ...] = ("metadata", "images")

GB = 1_000_000_000
MB = 1_000_000


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset.

    ``name`` is its path below a mirror's root (``--from``) and below ``url``'s base upstream; ``role`` says what
    fetch does with it: ``table`` → converted into ``<name>.csv``; ``side`` → kept as it is beside it; ``archive``
    (zip or tar, any compression) → unpacked into ``images/``; ``split`` → one piece of an archive cut into
    numbered pieces (``name`` holds ``{:02d}``; pieces are found in order until the first one missing).
    """

    name: str
    url: str
    role: Role
    size: int | None = None  # bytes (the total of all pieces for `split`)
    sha256: str | None = None  # published by the source; None: recorded on first download
    url_verified: bool = False
    size_verified: bool = False


@dataclass(frozen=True)
class TableFormat:
    """How the upstream table becomes ``IMG_ID,LAT,LON``: the ID column's value through ``id_template`` (e.g.
    ``"{}.jpg"`` for an ID without extension) after each ``(old, new)`` of ``id_replace`` is applied."""

    id_template: str = "{}"
    id_replace: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the catalog (see the module docstring)."""

    name: str
    title: str
    what: str
    n_images: int
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    homepage: str
    table: TableFormat = field(default_factory=TableFormat)
    notes: str = ""

    def part_files(self, part: PartName) -> tuple[RemoteFile, ...]:
        """The files of `part`: ``metadata`` = table and side files, ``images`` = archives and split pieces."""
        roles = ("table", "side") if part == "metadata" else ("archive", "split")
        return tuple(f for f in self.files if f.role in roles)

    @property
    def parts(self) -> tuple[PartName, ...]:
        """The parts this dataset has (a dataset whose images are only a URL list has no ``images`` part)."""
        return tuple(p for p in PARTS if self.part_files(p))

    def part_size(self, part: PartName) -> int:
        """Bytes to download for `part` (catalog figures; unknown sizes count as 0)."""
        return sum(f.size or 0 for f in self.part_files(part))


_GEOEST_TF = "https://raw.githubusercontent.com/TIBHannover/GeoEstimation/original_tf/meta/"
_GEOEST_PT = "https://github.com/TIBHannover/GeoEstimation/releases/download/pytorch/"
_TRANSLOCATOR = "http://www.cis.jhu.edu/~shraman/TransLocator/Datasets/"
_OSV = "https://huggingface.co/datasets/osv5m/osv5m/resolve/main/"
_MP16PRO = "https://huggingface.co/datasets/Jia-py/MP16-Pro/resolve/main/"

_FLICKR = ("photos from Flickr, each under its owner's licence (mostly Creative Commons); for research use. "
           "Ground-truth table: GeoEstimation (Müller-Budack et al.), GPL-3.0")
_CITE_VO = ("N. Vo, N. Jacobs, J. Hays. Revisiting IM2GPS in the Deep Learning Era. ICCV 2017. "
            "Table: E. Müller-Budack, K. Pustu-Iren, R. Ewerth. Geolocation Estimation of Photos using a "
            "Hierarchical Model and Scene Classification. ECCV 2018")
_CITE_OSV = ("G. Astruc, N. Dufour, I. Siglidis et al. OpenStreetView-5M: The Many Roads to Global Visual "
             "Geolocation. CVPR 2024")
_OSV_LICENCE = "CC BY-SA 4.0 (images from Mapillary, metadata by the OSV-5M authors)"


def _osv(split: str, n_images: int, n_zips: int, table_size: int, images_size: int | None) -> DatasetEntry:
    zips = tuple(RemoteFile(f"images/{split}/{i:02d}.zip", f"{_OSV}images/{split}/{i:02d}.zip", "archive",
                            size=None if images_size is None else images_size // n_zips, url_verified=split == "test")
                 for i in range(n_zips))
    return DatasetEntry(
        name=f"osv5m-{split}",
        title=f"OpenStreetView-5M, {split} split",
        what=(f"{n_images:,} street-view images from Mapillary, {split} split of OSV-5M "
              + ("(the benchmark's test set)" if split == "test" else "(training; 98 zips, one per ~50K images)")),
        n_images=n_images,
        files=(RemoteFile(f"{split}.csv", f"{_OSV}{split}.csv", "table", size=table_size, url_verified=True,
                          size_verified=True), *zips),
        licence=_OSV_LICENCE,
        citation=_CITE_OSV,
        homepage="https://huggingface.co/datasets/osv5m/osv5m",
        table=TableFormat(id_template="{}.jpg"),
        notes=("zip count and sizes of the image zips not checked against the Hub here"
               + ("" if split == "test" else "; 98 train zips per third-party download scripts")),
    )


CATALOG: dict[str, DatasetEntry] = {e.name: e for e in (
    DatasetEntry(
        name="im2gps3k",
        title="Im2GPS3k",
        what="2,997 Flickr photos: the test set GeoCLIP, TransLocator and GeoDecoder report first",
        n_images=2997,
        files=(
            RemoteFile("im2gps3k_places365.csv", _GEOEST_TF + "im2gps3k_places365.csv", "table", size=435_645,
                       url_verified=True, size_verified=True),
            RemoteFile("im2gps3k_rgb_images.tar.gz", _TRANSLOCATOR + "im2gps3k_rgb_images.tar.gz", "archive",
                       size=450 * MB, url_verified=True),
        ),
        licence=_FLICKR,
        citation=_CITE_VO,
        homepage="https://github.com/lugiavn/revisiting-im2gps",
        notes="images: the TransLocator authors' archive (the MediaFire im2gps3ktest.zip has no direct link); "
              "its size is an estimate",
    ),
    DatasetEntry(
        name="im2gps",
        title="Im2GPS",
        what="237 Flickr photos (Hays & Efros), the oldest of the benchmarks",
        n_images=237,
        files=(
            RemoteFile("im2gps_places365.csv", _GEOEST_TF + "im2gps_places365.csv", "table", size=39_788,
                       url_verified=True, size_verified=True),
            RemoteFile("im2gps_rgb_images.tar.gz", _TRANSLOCATOR + "im2gps_rgb_images.tar.gz", "archive",
                       size=40 * MB, url_verified=True),
        ),
        licence=_FLICKR,
        citation="J. Hays, A. A. Efros. IM2GPS: estimating geographic information from a single image. CVPR 2008",
        homepage="http://graphics.cs.cmu.edu/projects/im2gps/",
        notes="images: the TransLocator authors' archive; its size is an estimate",
    ),
    DatasetEntry(
        name="yfcc4k",
        title="YFCC4k",
        what="4,536 photos from YFCC100M (Vo et al.): many with few cues (food, people, indoors)",
        n_images=4536,
        files=(
            RemoteFile("yfcc4k_places365.csv", "https://huggingface.co/Jia-py/G3-checkpoint/resolve/main/"
                       "yfcc4k_places365.csv", "table", size=2_580_000, url_verified=True, size_verified=True),
            RemoteFile("yfcc4k_rgb_images.tar.gz", _TRANSLOCATOR + "yfcc4k_rgb_images.tar.gz", "archive",
                       size=700 * MB, url_verified=True),
        ),
        licence="photos from YFCC100M (Flickr, Creative Commons licences of their owners; Yahoo Webscope terms); "
                "for research use",
        citation=_CITE_VO + "; B. Thomee et al. YFCC100M: The New Data in Multimedia Research. CACM 2016",
        homepage="https://github.com/lugiavn/revisiting-im2gps",
        notes="table: the copy the G3 authors publish on the Hugging Face Hub (GeoEstimation has none for "
              "YFCC4k); images: the TransLocator authors' archive, size an estimate",
    ),
    DatasetEntry(
        name="yfcc26k",
        title="YFCC26k (YFCC25600)",
        what="25,600 YFCC100M photos, GeoEstimation's validation set; the images are a list of Flickr URLs",
        n_images=25600,
        files=(
            RemoteFile("yfcc25600_places365.csv", _GEOEST_PT + "yfcc25600_places365.csv", "table", size=4 * MB,
                       url_verified=True),
            RemoteFile("yfcc25600_urls.csv", _GEOEST_PT + "yfcc25600_urls.csv", "side", size=3 * MB,
                       url_verified=True),
        ),
        licence="photos from YFCC100M (Flickr, Creative Commons licences of their owners); table: GeoEstimation, "
                "GPL-3.0",
        citation="J. Theiner, E. Müller-Budack, R. Ewerth. Interpretable Semantic Photo Geolocation. WACV 2022",
        homepage="https://github.com/TIBHannover/GeoEstimation",
        notes="metadata only: the photos are downloaded one by one from the URLs in yfcc25600_urls.csv "
              "(GeoEstimation's download_images.py); many have gone. Evaluate with --images FOLDER",
    ),
    _osv("test", 210_122, 5, 116 * MB, 4_500 * MB),
    _osv("train", 4_894_685, 98, 2_920 * MB, 100 * GB),
    DatasetEntry(
        name="mp16-pro",
        title="MP16-Pro",
        what="MP-16 (4.65M Flickr photos, 4.12M still available) with place names: the training set of "
             "GeoCLIP, TransLocator, GeoDecoder and G3",
        n_images=4_120_000,
        files=(
            RemoteFile("metadata/MP16_Pro_filtered.csv", _MP16PRO + "metadata/MP16_Pro_filtered.csv", "table",
                       size=800 * MB, url_verified=True),
            RemoteFile("mp-16-images{:02d}", _MP16PRO + "mp-16-images{:02d}", "split", size=600 * GB),
        ),
        licence="photos from YFCC100M / MP-16 (Flickr, Creative Commons licences of their owners); the MP16-Pro "
                "authors ask for academic research use only",
        citation="P. Jia et al. G3: An Effective and Adaptive Framework for Worldwide Geolocalization Using Large "
                 "Multi-Modality Models. NeurIPS 2024; MP-16: M. Larson et al. The Benchmarking Initiative for "
                 "Multimedia Evaluation: MediaEval 2016. IEEE MultiMedia 2017",
        homepage="https://huggingface.co/datasets/Jia-py/MP16-Pro",
        table=TableFormat(id_replace=(("/", "_"),)),
        notes="images: one tar cut into pieces mp-16-images00, 01, … (their count and total size are not "
              "checked here: fetch takes pieces in order until the first one missing); IMG_IDs have '/' "
              "replaced by '_' as in the archive",
    ),
)}


def get_entry(name: str) -> DatasetEntry:
    """The catalog row `name`; InputError naming the known ones otherwise."""
    entry = CATALOG.get(str(name).strip().lower())
    if entry is None:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(CATALOG)} (see `geocore data list`)")
    return entry

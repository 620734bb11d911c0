"""``ddncodec similar`` and ``ddncodec index``: near-duplicates found from a prefix of each
.ddn file, warnings for bad library files, exit codes, the index and its updates."""

from __future__ import annotations

import io
import json
import os
import shutil
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image, ImageEnhance

from ddncodec import codec, container, similar
from ddncodec.cli import main
from ddncodec.modelfile import CodecModel

DATA = Path(__file__).parent / "data"
PHOTOS = sorted([*(DATA / "bsds").glob("*.png"), *(DATA / "kodak").glob("*.png")])


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def hits(result: Result) -> list[dict[str, object]]:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def library(tiny_model: CodecModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test photos encoded with the tiny model (two layers each), in a folder tree."""
    folder = tmp_path_factory.mktemp("library")
    for photo in PHOTOS:
        place = folder / photo.parent.name / f"{photo.stem}.ddn"
        place.parent.mkdir(exist_ok=True)
        place.write_bytes(codec.encode(photo, tiny_model, 5).data)
    return folder


@pytest.fixture()
def copy(library: Path, tmp_path: Path) -> Path:
    """A copy of the library that a test may damage."""
    return Path(shutil.copytree(library, tmp_path / "library"))


def near_duplicate(photo: Path, folder: Path) -> Path:
    """``photo`` brightened by 10 % and re-compressed as a JPEG of quality 50."""
    buffer = io.BytesIO()
    ImageEnhance.Brightness(Image.open(photo).convert("RGB")).enhance(1.1).save(buffer, "JPEG", quality=50)
    path = folder / f"{photo.stem}-copy.jpg"
    path.write_bytes(buffer.getvalue())
    return path


def test_a_near_duplicate_ranks_first(library: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    for photo in (DATA / "kodak" / "kodim23_crop.png", DATA / "bsds" / "108073.png"):
        query = near_duplicate(photo, tmp_path)
        result = run("similar", query, library, "--model", tiny_model_path, "-n", "3")
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 3
        score, path = lines[0].split(maxsplit=1)
        assert path == str(library / photo.parent.name / f"{photo.stem}.ddn")
        assert float(score) > float(lines[1].split()[0])
        assert f"searched {len(PHOTOS)} files: 0 from the index, {len(PHOTOS)} read" in result.stderr


def test_a_ddn_query_reads_only_its_first_layers_and_never_lists_itself(library: Path, tiny_model_path: Path) -> None:
    query = library / "kodak" / "kodim05_crop.ddn"
    found = hits(run("similar", query, library, "--model", tiny_model_path, "--json", "-n", "50"))
    assert str(query) not in [h["path"] for h in found]
    assert len(found) == len(PHOTOS) - 1
    data = query.read_bytes()
    header, start = container.parse_header(data)
    assert similar.read_prefix(query, 1) == data[: start + header.lengths[0] + container.LAYER_CRC_BYTES]
    assert similar.read_prefix(query) == data  # the tiny model's files have fewer layers than a signature takes


def test_json_lists_path_and_score_best_first(library: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    query = near_duplicate(DATA / "bsds" / "12074.png", tmp_path)
    found = hits(run("similar", query, library / "bsds", library / "kodak", "--model", tiny_model_path, "--json"))
    assert len(found) == len(PHOTOS)  # fewer than the default -n 10
    assert all(set(h) == {"path", "score"} for h in found)
    scores = [h["score"] for h in found]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert found[0]["path"] == str(library / "bsds" / "12074.ddn")
    assert len(hits(run("similar", query, library, "--model", tiny_model_path, "--json", "-n", "2"))) == 2


def test_a_corrupt_library_file_is_skipped_with_one_warning(copy: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    damaged = copy / "bsds" / "100075.ddn"
    data = bytearray(damaged.read_bytes())
    data[-8] ^= 0xFF  # inside the last layer's stream: its checksum fails
    damaged.write_bytes(bytes(data))
    (copy / "bsds" / "notes.ddn").write_text("not a photo")
    foreign = copy / "kodak" / "foreign.ddn"  # made with the tiny model plus a detail filter: another fingerprint
    shutil.copy(DATA / "golden" / "filtered_detail_q8.ddn", foreign)
    query = near_duplicate(DATA / "kodak" / "kodim23_crop.png", tmp_path)
    result = run("similar", query, copy, "--model", tiny_model_path, "--json", "-n", "50")
    found = hits(result)
    assert found[0]["path"] == str(copy / "kodak" / "kodim23_crop.ddn")
    assert len(found) == len(PHOTOS) - 1
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings[:2] == [  # in the order of the walk: sorted
        f"ddncodec: warning: {damaged}: corrupt .ddn file (checksum mismatch in layer 1) (skipped)",
        f"ddncodec: warning: {copy / 'bsds' / 'notes.ddn'}: not a .ddn file (wrong magic bytes) (skipped)",
    ]
    assert len(warnings) == 3
    assert warnings[2].startswith(f"ddncodec: warning: {foreign}: this .ddn file was made with another model")
    assert "Traceback" not in result.output


def test_exit_2_only_for_a_corrupt_query(copy: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    query = tmp_path / "broken.ddn"
    query.write_bytes((copy / "bsds" / "134008.ddn").read_bytes()[:-3])
    (copy / "bsds" / "145053.ddn").write_bytes(query.read_bytes())  # the same damage in the library: skipped
    result = run("similar", query, copy, "--model", tiny_model_path)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"ddncodec: error: {query}: .ddn file is truncated: "
        + result.stderr.split(".ddn file is truncated: ", 1)[1].strip()
    ]
    image = tmp_path / "broken.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert run("similar", image, copy, "--model", tiny_model_path).exit_code == 2
    missing = run("similar", tmp_path / "missing.png", copy, "--model", tiny_model_path)
    assert missing.exit_code == 1 and missing.stderr.count("\n") == 1
    assert run("similar", near_duplicate(PHOTOS[0], tmp_path), copy, "--model", tiny_model_path).exit_code == 0


def test_the_index_updates_incrementally(
    copy: Path, tiny_model: CodecModel, tiny_model_path: Path, tmp_path: Path
) -> None:
    index = tmp_path / "photos.idx"
    first = run("index", copy, "-o", index, "--model", tiny_model_path)
    assert first.exit_code == 0, first.stderr
    assert f"{index}: {len(PHOTOS)} files, {len(PHOTOS)} read" in first.stderr
    records = similar.load_index(index)
    assert set(records) == {os.path.abspath(p) for p in copy.rglob("*.ddn")}

    # Unchanged files are not read again: damage one behind the index's back (same size and time).
    sneaky = copy / "bsds" / "105019.ddn"
    stat = sneaky.stat()
    sneaky.write_bytes(b"DDN" + bytes(stat.st_size - 3))
    os.utime(sneaky, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (copy / "bsds" / "113044.ddn").unlink()
    new = copy / "kodak" / "again.ddn"
    new.write_bytes(codec.encode(DATA / "bsds" / "113044.png", tiny_model, 3).data)
    changed = copy / "kodak" / "kodim05_crop.ddn"
    changed.write_bytes(codec.encode(DATA / "kodak" / "kodim05_crop.png", tiny_model, 8).data)
    second = run("index", copy, "-o", index, "--model", tiny_model_path)
    assert second.exit_code == 0, second.stderr
    assert (
        second.stderr.strip()
        == f"ddncodec: {index}: {len(PHOTOS)} files, 2 read ({_average(new, changed)} bytes each on average)"
    )
    updated = similar.load_index(index)
    assert set(updated) == {os.path.abspath(p) for p in copy.rglob("*.ddn")}
    assert updated[str(sneaky.absolute())].signature.tobytes() == records[str(sneaky.absolute())].signature.tobytes()

    query = near_duplicate(DATA / "bsds" / "113044.png", tmp_path)
    indexed = run("similar", query, "--index", index, "--model", tiny_model_path, "--json")
    assert hits(indexed)[0]["path"] == str(new.absolute())
    assert f"searched {len(PHOTOS)} files: {len(PHOTOS)} from the index, none read" in indexed.stderr
    recorded = run("similar", sneaky, "--index", index, "--model", tiny_model_path, "--json")  # its record, unread
    assert str(sneaky.absolute()) not in [h["path"] for h in hits(recorded)]
    assert f"searched {len(PHOTOS) - 1} files: {len(PHOTOS) - 1} from the index, none read" in recorded.stderr


def _average(*paths: Path) -> str:
    return f"{sum(len(similar.read_prefix(p)) for p in paths) / len(paths):,.0f}"


def test_index_refuses_to_replace_what_is_not_an_index(library: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    shutil.copy(PHOTOS[0], photo)
    result = run("index", library, "-o", photo, "--model", tiny_model_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"ddncodec: error: {photo}: not a ddncodec index (--force replaces it)"
    assert photo.read_bytes() == PHOTOS[0].read_bytes()
    assert run("index", library, "-o", photo, "--model", tiny_model_path, "--force").exit_code == 0
    assert run("similar", PHOTOS[0], "--model", tiny_model_path).exit_code == 1  # neither LIBRARY nor --index


def test_an_index_of_another_version_is_rebuilt_and_a_damaged_one_refused(
    library: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    index = tmp_path / "photos.idx"
    assert run("index", library, "-o", index, "--model", tiny_model_path).exit_code == 0
    data = bytearray(index.read_bytes())
    data[4] += 1  # the version byte, the checksum made good: a sound index of another version
    index.write_bytes(bytes(data[:-4]) + zlib.crc32(data[:-4]).to_bytes(4, "big"))
    query = near_duplicate(PHOTOS[0], tmp_path)
    stale = run("similar", query, "--index", index, "--model", tiny_model_path)
    assert stale.exit_code == 2
    assert stale.stderr.strip() == (
        f"ddncodec: error: {index}: an index of another ddncodec version (rebuild it with ddncodec index)"
    )
    rebuilt = run("index", library, "-o", index, "--model", tiny_model_path)
    assert rebuilt.exit_code == 0
    assert rebuilt.stderr.startswith(f"ddncodec: {index}: an index of another ddncodec version: rebuilding it\n")
    assert f"{len(PHOTOS)} files, {len(PHOTOS)} read" in rebuilt.stderr
    assert hits(run("similar", query, "--index", index, "--model", tiny_model_path, "--json"))[0]["path"].endswith(
        f"{PHOTOS[0].stem}.ddn"
    )
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 1
    index.write_bytes(bytes(data))
    damaged = run("similar", query, "--index", index, "--model", tiny_model_path)
    assert damaged.exit_code == 2
    assert damaged.stderr.strip() == f"ddncodec: error: {index}: corrupt index (checksum mismatch)"

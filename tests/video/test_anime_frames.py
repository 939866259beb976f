"""The video reader and the anime-frame extractor on synthetic films whose frames carry their own index.

Every frame of a test film shows its index as a 6-bit code in full-width horizontal bands (black or
white, 8-10 rows each, which survives lossy H.264) above a horizontal grey ramp whose value gives the x
position in the frame. Both are written here and decoded back from what the code under test returns,
so a frame taken one position off, or a crop cut at the wrong x, is caught:

  * the code read from every crop must equal the frame number in the file name;
  * the ramp gives each crop's x offset in the frame (to within half a pixel after compression), and
    the overlapping columns of neighbouring crops must be identical, which pins the offsets exactly.

The films are H.264 with B-frames (decode order differs from display order, asserted) in an .mp4 of
144x96 (3:2) and an .mkv of 121x72 (odd width, so the centre crop's (W-H)//2 rounds down).
"""
import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from scenimefy_jax.video import anime_frames  # noqa: E402
from scenimefy_jax.video.reader import VideoReader, VideoReadError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "extract_anime_frames.py")

BITS = 6  # frame indices 0..63
RAMP = (30.0, 220.0)  # grey level at x = 0 and at x = W - 1
FILMS = {  # name: (file extension, width, height, frames, frame rate, pixel format)
    "Film One": (".mp4", 144, 96, 48, 24, "yuv420p"),
    "Second Film": (".mkv", 121, 72, 30, Fraction(30000, 1001), "yuv444p"),
}
FRAME_LIST = {  # k = 0..3 in this order, also for the films after a missing one
    "Missing Film": [5],
    "Film One": [40, 0, 17, 47, 17],  # unsorted, a repeat, the last frame
    "Broken Film": [1],
    "Second Film": [17, 0, 29, 35, 60],  # 0 and 17 as in Film One; 35 and 60 past its 30 frames
}
EXTRACTED = {"Film One": [0, 17, 40, 47], "Second Film": [0, 17, 29]}  # the frames that exist
K = {name: k for k, name in enumerate(FRAME_LIST)}


def _code_rows(height: int) -> int:
    return (height * 2 // 3) // BITS  # rows per bit; the bottom third is the ramp


def coded_frame(index: int, width: int, height: int) -> np.ndarray:
    """`[H, W, 3] uint8` grey frame: `index` in BITS bands (most significant first), then the x ramp."""
    rows = _code_rows(height)
    frame = np.empty((height, width), np.float64)
    for bit in range(BITS):
        frame[bit * rows:(bit + 1) * rows] = 235.0 if index >> (BITS - 1 - bit) & 1 else 20.0
    frame[BITS * rows:] = np.linspace(*RAMP, width)[None, :]
    return np.repeat(np.rint(frame).astype(np.uint8)[..., None], 3, axis=-1)


def read_code(image: np.ndarray) -> int:
    """The index coded in a frame or a full-height crop of one (band interiors only)."""
    rows = _code_rows(image.shape[0])
    bits = [image[bit * rows + 2:(bit + 1) * rows - 2].mean() > 128 for bit in range(BITS)]
    return int("".join("1" if b else "0" for b in bits), 2)


def ramp_offset(crop: np.ndarray, frame_width: int) -> float:
    """The x in the frame where `crop` starts, from the ramp rows (averaged over the crop's columns)."""
    rows = _code_rows(crop.shape[0]) * BITS
    values = crop[rows + 3:, :, 0].astype(np.float64).mean(axis=0)
    x = (values - RAMP[0]) * (frame_width - 1) / (RAMP[1] - RAMP[0])
    inner = slice(3, -3)  # the frame's own left and right edges blur under compression
    return float(np.mean(x[inner] - np.arange(crop.shape[1])[inner]))


def write_film(path, width, height, frames, rate, pix_fmt):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        # Short GOPs with a fixed pattern of 3 B-frames, so packets arrive out of display order and frame n
        # is not n keyframes in (scenecut=0: x264 sees a scene cut at every new code and would send I-frames).
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "bframes=3:b-adapt=0:keyint=10:scenecut=0"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(coded_frame(i, width, height), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("movies")
    for name, (ext, width, height, frames, rate, pix_fmt) in FILMS.items():
        write_film(folder / (name + ext), width, height, frames, rate, pix_fmt)
    (folder / "Broken Film.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
    (folder / "Second Film.txt").write_text("not a film")  # only .mp4 / .mkv count
    return folder


@pytest.fixture()
def frame_list(tmp_path):
    path = tmp_path / "frameList.json"
    path.write_text(json.dumps(FRAME_LIST, indent=1))
    return path


def _film_path(movies, name):
    return str(movies / (name + FILMS[name][0]))


# ----------------------------------------------------------------------------- the reader

def test_films_have_b_frames(movies):
    """The premise of the index tests: decode order is not display order in both films."""
    for name in FILMS:
        with av.open(_film_path(movies, name)) as container:
            pts = [p.pts for p in container.demux(video=0) if p.size]
        assert pts != sorted(pts), f"{name}: no reordered frames; the B-frame tests would prove nothing"


def test_reader_facts_and_every_frame_index(movies):
    for name, (ext, width, height, frames, rate, _) in FILMS.items():
        reader = VideoReader(_film_path(movies, name))
        info = reader.info
        assert (info.width, info.height, info.codec) == (width, height, "h264")
        assert isinstance(info.frame_rate, Fraction) and info.frame_rate == rate
        # MP4 records the frame count; Matroska does not, and the reader must not invent one.
        assert info.frame_count == (frames if ext == ".mp4" else None)
        assert info.duration_s == pytest.approx(frames / rate, abs=0.05)
        seen = [(index, read_code(rgb), rgb.shape, rgb.dtype) for index, rgb in reader.frames()]
        assert seen == [(i, i, (height, width, 3), np.uint8) for i in range(frames)]
        assert [i for i, _ in reader.frames()][-1] == frames - 1, "a reader must be iterable again"


def test_frames_at_yields_the_requested_frames_and_stops_early(movies):
    reader = VideoReader(_film_path(movies, "Film One"))
    decoded = []
    selection = reader.frames_at([12, 3, 3, 7], on_decoded=decoded.append)
    got = [(index, read_code(rgb)) for index, rgb in selection]
    assert got == [(3, 3), (7, 7), (12, 12)]
    assert selection.decoded == 13 and decoded == list(range(13)), "decoding must stop at the last wanted frame"
    assert selection.past_end == [] and selection.frame_count is None
    assert selection.timestamp_mismatches == []  # constant frame rate: timestamps agree with the count
    with pytest.raises(RuntimeError):
        list(selection)

    selection = reader.frames_at([46, 47, 48, 100])
    assert [index for index, _ in selection] == [46, 47]
    assert selection.past_end == [48, 100] and selection.frame_count == 48 == selection.decoded
    with pytest.raises(ValueError):
        reader.frames_at([-1])


def test_timestamp_gaps_are_reported_not_followed(tmp_path):
    """A clip missing the frame at time 3/24: the count still gives 0, 1, 2, 3, 4, and the frames whose
    timestamps say otherwise (counted 3 and 4, timed 4 and 5) are listed."""
    path = tmp_path / "gap.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 24)
        for i, t in enumerate([0, 1, 2, 4, 5]):
            frame = av.VideoFrame.from_ndarray(coded_frame(i, 64, 48), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 24)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    selection = VideoReader(path).frames_at(range(10))
    assert [(index, read_code(rgb)) for index, rgb in selection] == [(i, i) for i in range(5)]
    assert selection.timestamp_mismatches == [(3, 4), (4, 5)] and selection.past_end == [5, 6, 7, 8, 9]


def test_reader_errors_name_the_file(movies, tmp_path):
    with pytest.raises(VideoReadError, match="Broken Film.mp4"):
        VideoReader(movies / "Broken Film.mp4")
    with pytest.raises(VideoReadError, match="no such file"):
        VideoReader(tmp_path / "absent.mkv")


def test_colour_matrix_follows_the_tag_unless_told(tmp_path):
    """A BT.709-tagged clip decodes to its colours by default; `bt601` (OpenCV's conversion) shifts them."""
    path, colour = tmp_path / "tagged.mkv", np.array([200, 60, 30], np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt, stream.options = 32, 16, "yuv444p", {"qp": "0"}
        stream.codec_context.colorspace = 1  # AVCOL_SPC_BT709, written into the H.264 headers
        frame = av.VideoFrame.from_ndarray(np.broadcast_to(colour, (16, 32, 3)).copy(), format="rgb24")
        frame = frame.reformat(format="yuv444p", dst_colorspace="ITU709")
        frame.colorspace = 1
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    (_, tagged), = VideoReader(path).frames()
    (_, bt601), = VideoReader(path, colour_matrix="bt601").frames()
    assert np.abs(tagged.astype(int) - colour).max() <= 1
    assert np.abs(bt601.astype(int) - colour).max() >= 5


# ----------------------------------------------------------------------------- the frame list

@pytest.mark.parametrize("text, message", [
    ('{"Film One": [1, 2,]}', "not valid JSON"),
    ("", "not valid JSON"),
    ('[1, 2]', "expected a JSON object"),
    ("{}", "empty object"),
    ('{"Film One": [1], "Film One": [2]}', "listed twice"),
    ('{"Film One": 5}', "expected a list"),
    ('{"Film One": [1, -3]}', "integers >= 0"),
    ('{"Film One": [1, 2.5]}', "integers >= 0"),
    ('{"Film One": [true]}', "integers >= 0"),
    ('{"../Film One": [1]}', "not a plain file name"),
])
def test_bad_frame_lists_are_one_line_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "frameList.json"
    path.write_text(text)
    with pytest.raises(anime_frames.ConfigError) as error:
        anime_frames.read_frame_list(path)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_frame_list_keeps_film_order_and_sorts_frames(frame_list):
    films = anime_frames.read_frame_list(frame_list)
    assert list(films) == list(FRAME_LIST)
    assert films["Film One"] == [0, 17, 40, 47] and films["Missing Film"] == [5]


def test_a_missing_film_names_files_that_differ_only_in_case():
    names = ["your name.MP4", "Your Name.avi", "Your Name (2016).mkv", "YOUR NAME.mkv"]
    assert anime_frames.near_misses("Your Name", names) == ["your name.MP4", "YOUR NAME.mkv"]
    report = anime_frames.ExtractionReport("out", films=1, missing_films={"Your Name": ["your name.MP4"]})
    assert report.exit_status == 1 and "rename 'your name.MP4'?" in report.summary()[0]


def test_crops_follow_the_official_positions():
    frame = np.arange(5 * 12).reshape(5, 12, 1)
    left, centre, right = anime_frames.crop_squares(frame)
    np.testing.assert_array_equal(left, frame[:, 0:5])
    np.testing.assert_array_equal(centre, frame[:, 3:8])  # (12 - 5) // 2 = 3
    np.testing.assert_array_equal(right, frame[:, 7:12])
    with pytest.raises(ValueError, match="taller than wide"):
        anime_frames.crop_squares(np.zeros((6, 5, 3)))


# ----------------------------------------------------------------------------- the tool

def _outputs(folder):
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def _check_crops(output, film_index, frame, width, height):
    crops = [np.asarray(Image.open(output / f"movie_{film_index}_frame_{frame}_{c}.png")) for c in range(3)]
    offsets = [0, (width - height) // 2, width - height]
    for crop, x in zip(crops, offsets):
        assert crop.shape == (height, height, 3) and crop.dtype == np.uint8
        assert read_code(crop) == frame, f"film {film_index}: crop of frame {frame} shows frame {read_code(crop)}"
        assert abs(ramp_offset(crop, width) - x) < 0.5, (film_index, frame, x, ramp_offset(crop, width))
    # Neighbouring crops are cut from one decoded frame, so their common columns are identical.
    for (a, xa), (b, xb) in zip(zip(crops, offsets), zip(crops[1:], offsets[1:])):
        np.testing.assert_array_equal(a[:, xb - xa:], b[:, :height - (xb - xa)])


def test_tool_extracts_reports_and_resumes(movies, frame_list, tmp_path, monkeypatch, capsys):
    output = tmp_path / "anime"
    result = subprocess.run(
        [sys.executable, TOOL, "--frame-list", str(frame_list), "--movies", str(movies), "--output", str(output),
         "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr  # missing film, broken film, frames past the end
    want = sorted(f"movie_{K[name]}_frame_{n}_{c}.png" for name, frames in EXTRACTED.items() for n in frames
                  for c in range(3))
    assert _outputs(output) == want  # and no temporary files left behind
    for name, frames in EXTRACTED.items():
        _, width, height, *_ = FILMS[name]
        for frame in frames:
            _check_crops(output, K[name], frame, width, height)
    report = result.stdout
    assert "missing film: 'Missing Film'" in report
    assert "unreadable film: 'Broken Film'" in report and "Broken Film.mp4" in report
    assert "past the end: 2 frame(s) of 'Second Film', which has 30 frames: 35, 60" in report
    assert f"files: {len(want)} written, 0 skipped" in report

    # Second run, in-process: nothing written, everything skipped, and the complete film is not opened.
    from tools import extract_anime_frames as tool

    mtimes = {n: os.stat(output / n).st_mtime_ns for n in want}
    opened = []

    class CountingReader(VideoReader):
        def __init__(self, path, **kwargs):
            opened.append(os.path.basename(path))
            super().__init__(path, **kwargs)

    monkeypatch.setattr("scenimefy_jax.video.reader.VideoReader", CountingReader)
    argv = ["--frame-list", str(frame_list), "--movies", str(movies), "--output", str(output), "--no-progress"]
    assert tool.main(argv) == 1
    report = capsys.readouterr().out
    assert f"files: 0 written, {len(want)} skipped" in report
    assert "1 already complete" in report and "past the end: 2 frame(s)" in report
    assert opened == ["Broken Film.mp4", "Second Film.mkv"], "Film One is complete and must not be decoded"
    assert {n: os.stat(output / n).st_mtime_ns for n in want} == mtimes

    # A lost crop is written again, alone; a list of frames that all exist exits 0 without decoding.
    os.remove(output / f"movie_{K['Second Film']}_frame_17_2.png")
    opened.clear()
    assert tool.main(argv) == 1
    assert "files: 1 written" in capsys.readouterr().out
    _check_crops(output, K["Second Film"], 17, *FILMS["Second Film"][1:3])
    done = tmp_path / "done.json"
    # Same films in the same order (k), fewer frames; a film with none to take needs no file.
    done.write_text(json.dumps({"Missing Film": [], "Film One": [0, 47], "Broken Film": [], "Second Film": [29]}))
    opened.clear()
    assert tool.main(["--frame-list", str(done), "--movies", str(movies), "--output", str(output),
                      "--no-progress"]) == 0
    assert opened == [] and "files: 0 written, 9 skipped" in capsys.readouterr().out


def test_equal_frame_numbers_of_different_films_do_not_collide(movies, tmp_path):
    """Frame 17 of both films: two sets of files, each with its own film's picture (k in the name)."""
    report = anime_frames.extract_anime_frames({"Film One": [17], "Second Film": [17]}, movies, tmp_path / "o",
                                               progress=False)
    assert report.exit_status == 0 and report.written == 6
    one = np.asarray(Image.open(tmp_path / "o" / "movie_0_frame_17_0.png"))
    two = np.asarray(Image.open(tmp_path / "o" / "movie_1_frame_17_0.png"))
    assert one.shape == (96, 96, 3) and two.shape == (72, 72, 3) and read_code(one) == read_code(two) == 17


def test_tool_usage_errors_exit_2_with_one_line(movies, frame_list, tmp_path, capsys):
    from tools import extract_anime_frames as tool

    bad = tmp_path / "bad.json"
    bad.write_text('{"Film One": [1, 2')
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("")
    cases = [
        (bad, movies, tmp_path / "o1", [str(bad), "not valid JSON"]),
        (tmp_path / "absent.json", movies, tmp_path / "o2", ["absent.json", "no such file"]),
        (frame_list, tmp_path / "no_movies", tmp_path / "o3", ["no_movies", "no such folder"]),
        (frame_list, movies, not_a_folder / "out", [str(not_a_folder), "not writable"]),
    ]
    for frames, movie_dir, output, words in cases:
        status = tool.main(["--frame-list", str(frames), "--movies", str(movie_dir), "--output", str(output),
                            "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert status == 2 and len(err.splitlines()) == 1 and all(w in err for w in words), (status, err)
        assert not (os.path.exists(output) and os.listdir(output)), "nothing may be written on a usage error"

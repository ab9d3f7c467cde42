"""Pictures of a trained network (netc.plot, `netc eval --plot`, `netc show`): the confusion
matrix's counts, a conv layer's kernels placed in the grid as documented (a checkpoint whose
weights the test sets), one tile per feature map, PNG sizes, and the one-line refusals."""
import numpy as np
import pytest

from digit_files import write_digits
from netc import checkpoint, data, plot
from netc.cli import main

from test_plot import MISSING, NO_MATPLOTLIB, png_size, svg_texts

SPEC = """network small
input 1x32x32
conv(3, k=5, act=relu) - maxpool(4) - c2: conv(4, k=3) - fc(16, act=relu) - softmax(10)
"""


@pytest.fixture(autouse=True)
def _light_flags(monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch run of SPEC on 300 digits (with a test split of 200): its folder."""
    root = tmp_path_factory.mktemp("inside")
    write_digits(root, 300, 200)
    (root / "small.net").write_text(SPEC)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("NETC_CFLAGS", "-O1")
        assert main(["train", str(root / "small.net"), "--data", str(root / "digits.npz"),
                     "--epochs", "1", "--out", str(root / "run")]) == 0
    return root


def netc(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def with_weights(run, tmp_path, **weights):
    """A copy of the run's checkpoint with the named parameters replaced."""
    with np.load(run / "run" / "checkpoint.npz") as z:
        arrays = dict(z)
    for name, value in weights.items():
        arrays[f"param/{name}"] = value.astype(arrays[f"param/{name}"].dtype)
    np.savez(tmp_path / "set.npz", **arrays)
    return tmp_path / "set.npz"


def test_eval_plot_draws_the_confusion_matrix_it_prints(capsys, run, tmp_path):
    out = tmp_path / "cm.png"
    code, text, err = netc(capsys, "eval", run / "small.net", run / "run" / "checkpoint.npz",
                           "--plot", out)
    assert code == 0, err
    rows = text.splitlines()[-11:-1]  # the 10 rows of the printed matrix, then "confusion..."
    printed = np.array([[int(v.replace(",", "")) for v in row.split()[1:]] for row in rows])
    assert printed.sum() == 200 and text.splitlines()[-1] == f"confusion matrix: {out}"
    assert png_size(out) == (600, 600)
    figure = plot.draw_confusion(printed, [str(i) for i in range(10)], "t")
    axes = figure.axes[0]
    assert (axes.images[0].get_array() == printed).all()
    assert [t.get_text() for t in axes.texts] == [f"{v:,}" for v in printed.reshape(-1)]
    assert [t.get_text() for t in axes.get_xticklabels()] == [str(i) for i in range(10)]


def test_eval_plot_to_an_svg_writes_the_counts_as_text(capsys, run, tmp_path):
    out = tmp_path / "cm.svg"
    code, text, err = netc(capsys, "eval", run / "small.net", run / "run" / "checkpoint.npz",
                           "--plot", out)
    assert code == 0, err
    counts = [v for row in text.splitlines()[-11:-1] for v in row.split()[1:]]
    _, texts = svg_texts(out)
    # The cells' counts, row by row, somewhere among the axes' labels.
    assert any(texts[i:i + 100] == counts for i in range(len(texts)))
    assert len(set(counts)) > 2  # a matrix that tells the order apart


def test_a_kernel_of_one_bright_pixel_shows_at_its_place_in_the_grid(capsys, run, tmp_path):
    weight = np.zeros((3, 1, 5, 5))
    weight[2, 0, 1, 3] = 1.0  # filter 2: one bright pixel at row 1, column 3
    weight[0, 0, 4, 0] = -0.5
    ckpt = with_weights(run, tmp_path, **{"conv1.weight": weight})
    out = tmp_path / "f.png"
    assert netc(capsys, "show", run / "small.net", ckpt, "--filters", "conv1", "-o", out)[:2] \
        == (0, f"picture: {out}\n")
    assert png_size(out) == (800, 700)
    pixels = data.load_image(out, keep_channels=True)
    assert pixels.std() > 0.05
    figure = plot.draw_filters(checkpoint.read(ckpt).arrays["param/conv1.weight"], "conv1", True)
    images = figure.axes[0].images
    assert [i.get_gid() for i in images] == ["0.0", "1.0", "2.0"]
    assert plot.grid_columns(3) == 2  # 2 columns: filter 2 is row 1, column 0
    tile = images[2]
    assert np.unravel_index(np.argmax(tile.get_array()), (5, 5)) == (1, 3)
    assert tile.get_extent() == [-0.5, 4.5, 10.5, 5.5]  # left, right, bottom, top: row 1
    assert all(i.norm is images[0].norm for i in images)  # one colour scale
    assert (images[0].norm.vmin, images[0].norm.vmax) == (-1, 1)
    assert len(figure.axes) == 2  # the grid and its colour bar


def test_a_later_conv_shows_the_mean_over_its_inputs(run):
    weight = np.zeros((4, 3, 3, 3))
    weight[1, :, 0, 2] = [3.0, 0.0, 0.0]
    figure = plot.draw_filters(weight, "c2", first=False)
    images = figure.axes[0].images
    assert [i.get_gid() for i in images] == ["0", "1", "2", "3"]
    assert images[1].get_array()[0, 2] == 1.0 and images[1].get_extent()[:2] == [3.5, 6.5]
    assert "mean over the input channels" in figure.axes[0].get_title()


def test_the_maps_have_a_tile_per_channel_and_match_the_network(capsys, run, tmp_path):
    out = tmp_path / "m.png"
    code, text, err = netc(capsys, "show", run / "small.net", run / "run" / "checkpoint.npz",
                           "--maps", run / "seven.npy", "--layers", "conv1,pool1,c2,fc2", "-o",
                           out)
    assert (code, text) == (0, f"picture: {out}\n"), err
    width, height = png_size(out)
    assert width == 1000 and height > 400
    # The same picture drawn from the arena by hand: a tile per channel, the layer's shape.
    from netc import train
    trained = train.load_trained(run / "small.net", run / "run" / "checkpoint.npz", batch=1)
    image, _ = trained.conform(data.load_image(run / "seven.npy", keep_channels=True))
    x = trained.prepare(image[None])
    trained.model.forward(x)
    buf = trained.model.plan.buffer("c2.out")
    c2 = trained.model.mem[buf.offset:buf.offset + buf.size].reshape(buf.shape)[0]
    figure = plot.draw_maps([("input", x[0]), ("c2", c2), ("fc2", np.ones((10, 1, 1)))], "t")
    inputs, maps, fc = figure.axes
    assert len(inputs.images) == 1 and len(maps.images) == 4 == c2.shape[0]
    assert (maps.images[3].get_array() == c2[3]).all()
    assert maps.get_title() == "c2  4×5×5" and len(fc.images) == 1
    assert fc.images[0].get_array().shape == (1, 10)


def test_maps_of_a_test_image_by_index(capsys, run, tmp_path):
    out = tmp_path / "m.png"
    assert netc(capsys, "show", run / "small.net", run / "run" / "checkpoint.npz",
                "--index", 0, "-o", out)[:2] == (0, f"picture: {out}\n")
    assert png_size(out)[0] == 1000
    code, _, err = netc(capsys, "show", run / "small.net", run / "run" / "checkpoint.npz",
                        "--index", 200, "-o", out)
    assert code != 0 and err == "error: --index 200: the test set has 200 images, 0 to 199\n"


@pytest.mark.parametrize("argv, message", [
    (["--filters", "pool1"], "--filters pool1: not a conv layer; the conv layers: conv1, c2"),
    (["--filters", "nope"], "--filters nope: no such layer; the conv layers: conv1, c2"),
    (["--maps", "IMG", "--layers", "c2,x"], "--layers: no layer x; the layers: conv1, pool1, "
                                            "c2, fc1, fc2, softmax1"),
    (["--filters", "c2", "--layers", "c2"], "--layers goes with --maps or --index, not --filters"),
])
def test_a_bad_layer_is_refused_in_one_line(capsys, run, tmp_path, argv, message):
    argv = [str(run / "seven.npy") if a == "IMG" else a for a in argv]
    code, text, err = netc(capsys, "show", run / "small.net", run / "run" / "checkpoint.npz",
                           *argv, "-o", tmp_path / "x.png")
    assert (code, text) == (2, "") and err == f"error: {message}\n"
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_show_and_eval_plot_say_what_to_install(run, tmp_path):
    import subprocess
    import sys
    for argv in (["show", "--filters", "conv1"], ["eval", "--plot"]):
        done = subprocess.run([sys.executable, "-c", NO_MATPLOTLIB, argv[0], run / "small.net",
                               run / "run" / "checkpoint.npz", *argv[1:],
                               *(["-o"] if argv[0] == "show" else []), tmp_path / "x.png"],
                              capture_output=True, text=True)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", MISSING + "\n")
    assert not (tmp_path / "x.png").exists()

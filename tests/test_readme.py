"""Every command in README.md works as written: run in order, with bash, in a fresh copy of the
repository, as a newcomer would after cloning it. That test is slow (a minute or two): a new
virtual environment, `pip install -e .` (which needs the package index, as it does for a
newcomer), a cold compile and LeNet-5's training.

Also here: README's test command is the one CI runs, and the sample digits are the test images
that netc/data/README.md says they are.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from netc.data import load_image
from netc.data.idx import read_images, read_labels
from test_repo import repository_files

REPO = Path(__file__).resolve().parents[1]
CI_SCRIPT = REPO / ".ci" / "run"  # its last line is the test command
NEEDS_DOT = "needs Graphviz"  # README's comment on a command that runs Graphviz's dot


def readme_commands() -> list[str]:
    """The commands of README.md's ```sh blocks, in order (a trailing backslash continues one)."""
    blocks = re.findall(r"^```sh\n(.*?)^```$", (REPO / "README.md").read_text(), re.M | re.S)
    commands = []
    for block in blocks:
        for line in re.sub(r"\\\n", "", block).splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line)
    return commands


def readme_pictures() -> list[str]:
    """The files README.md shows as <img src="...">, relative to the repository."""
    return re.findall(r'<img src="([^"]+)"', (REPO / "README.md").read_text())


def written_by(command: str) -> str | None:
    """The file a netc command writes its picture to (-o or --plot), if it draws one."""
    words = shlex.split(command, comments=True)
    for flag in ("-o", "--plot"):
        if words[:1] == ["netc"] and flag in words:
            return words[words.index(flag) + 1]
    return None


def ci_test_command() -> str:
    return CI_SCRIPT.read_text().rstrip("\n").splitlines()[-1]


def test_readme_test_command_is_what_ci_runs():
    assert ci_test_command() in readme_commands()


def test_each_picture_the_readme_shows_is_committed_and_made_by_a_readme_command():
    pictures = readme_pictures()
    assert len(pictures) == 6  # curves, confusion matrix, filters, feature maps, two diagrams
    assert set(pictures) <= set(repository_files())
    made = {written_by(c) for c in readme_commands()}
    assert set(pictures) <= made, set(pictures) - made
    rendered = [c for c in readme_commands() if c.startswith("netc diagram") and written_by(c)
                and not written_by(c).endswith(".dot")]
    assert rendered and all(NEEDS_DOT in c for c in rendered)  # what the slow test leaves out


def fresh_environment() -> dict:
    """This process's environment without the virtual environment the tests run in.

    NETC_CACHE (set by conftest.py) stays: it keeps the compiled network out of the user's cache.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    if sys.prefix != sys.base_prefix:
        ours = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != ours)
    return env


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    checkout = tmp_path / "netc"
    for name in repository_files():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, checkout / name)
    # The test command runs this very test: running it here would recurse. It is the same line
    # as .ci/run (checked above), so CI runs it as written.
    commands = [c for c in readme_commands() if c != ci_test_command()]
    assert len(commands) == len(readme_commands()) - 1
    # Rendering a diagram needs Graphviz's dot, which README says; without it, that command and
    # its picture are left out.
    if shutil.which("dot") is None:
        commands = [c for c in commands if NEEDS_DOT not in c]
    pictures = {written_by(c) for c in commands} & set(readme_pictures())
    for picture in pictures:  # each must be made anew, not found in the copy
        (checkout / picture).unlink()
    logs = tmp_path / "logs"
    logs.mkdir()
    # One shell, so `. .venv/bin/activate` lasts; a brace group (not a subshell) per command,
    # closed on its own line because a command may end in a comment.
    script = "".join(f"{{ {c}\n}} > {shlex.quote(str(logs / str(i)))} 2>&1 || exit {i + 100}\n"
                     for i, c in enumerate(commands))
    done = subprocess.run(["bash", "-c", script], cwd=checkout, env=fresh_environment(),
                          capture_output=True, text=True, timeout=1800)
    if done.returncode:
        step = done.returncode - 100
        assert 0 <= step < len(commands), f"bash failed:\n{done.stdout}{done.stderr}"
        pytest.fail(f"README command failed:\n{commands[step]}\n"
                    f"{(logs / str(step)).read_text()[-4000:]}")
    outputs = {c: (logs / str(i)).read_text() for i, c in enumerate(commands)}

    def output_of(subcommand: str) -> tuple[str, str]:
        """The first command of that subcommand (the quick start's) and its output."""
        return next((command, output) for command, output in outputs.items()
                    if re.search(rf"\bnetc {subcommand} ", command))

    _, train = output_of("train")
    accuracy = re.search(r"^test accuracy ([\d.]+)% \([\d,]+ errors in 10,000\)", train, re.M)
    assert accuracy and float(accuracy[1]) > 97, train[-2000:]
    assert (checkout / "runs" / "lenet5" / "checkpoint.npz").is_file()
    _, evaluation = output_of("eval")
    assert f"accuracy {accuracy[1]}%" in evaluation  # the same weights on the same test set
    assert "confusion matrix" in evaluation
    predict, prediction = output_of("predict")
    image = shlex.split(predict, comments=True)[-1]
    label = Path(image).stem  # samples are named after their class
    assert re.search(rf"^{re.escape(image)}: {label} \(", prediction, re.M), prediction
    _, report = output_of("report")
    assert "61,706" in report  # LeNet-5's parameters, a closed-form literal
    for picture in pictures:
        assert ElementTree.parse(checkout / picture).getroot().tag.endswith("svg"), picture


def test_samples_are_the_first_test_images_named_by_label():
    shipped = REPO / "netc" / "data"
    images = read_images(shipped / "mnist-10k" / "t10k-images-idx3-ubyte.gz")
    labels = read_labels(shipped / "mnist-10k" / "t10k-labels-idx1-ubyte.gz")
    samples = sorted((shipped / "samples").glob("*.png"))
    assert [p.name for p in samples] == sorted(f"{label}.png" for label in labels[:5])
    for i in range(5):
        pixels = load_image(shipped / "samples" / f"{labels[i]}.png")
        assert pixels.shape == (1, 28, 28)
        assert (pixels[0] * 255).round().astype("uint8").tolist() == images[i].tolist()

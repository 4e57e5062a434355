"""The README's commands are the ones CI and users run; user-facing defaults."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_commands():
    """The commands of the README's opening bash blocks, in order."""
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_opens_with_main_and_test_commands():
    main, test = readme_commands()[:2]
    assert main.startswith("pip install -e . && python ")
    assert test == "pip install -e '.[test]' && pytest -q"


def test_ci_runs_exactly_the_readme_test_command():
    test_command = readme_commands()[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines
    # Nothing else is installed: CI tests what a user gets from the README.
    installs = [line for line in ci_lines if "pip install" in line and not line.startswith("#")]
    assert installs == ["python -m pip install --quiet --upgrade pip", test_command]
    # pytest's exit status 5 (no test collected) fails CI.
    assert '"$status" -eq 5' in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_script_exists():
    main = readme_commands()[0]
    script = main.split("python ", 1)[1].split()[0]
    assert (ROOT / script).is_file(), script


# The product never points at this development setup's data folder: a user
# who clones the repo has no `../shared`.
PRODUCT_PATHS = ("README.md", "setup.py", "setup.cfg", ".ci", "docs", "gin_configs", "benchmarks", "tools", "tf_deepemd")
TEXT_SUFFIXES = {"", ".py", ".sh", ".gin", ".md", ".cfg", ".txt", ".json", ".toml", ".yaml", ".yml"}
DEVELOPMENT_DATA = re.compile(r"\.\./shared|/work/shared|[\"']shared[\"'],\s*[\"']data[\"']")


def product_text_files():
    for name in PRODUCT_PATHS:
        path = ROOT / name
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if file.is_file() and file.suffix in TEXT_SUFFIXES and "__pycache__" not in file.parts:
                yield file


def test_no_product_file_points_at_the_development_data_folder():
    offending = [
        f"{file.relative_to(ROOT)}:{number}: {line.strip()}"
        for file in product_text_files()
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), start=1)
        if DEVELOPMENT_DATA.search(line)
    ]
    assert not offending, "\n".join(offending)


def test_a_config_without_data_dir_stops_naming_the_binding_and_the_layout(tmp_path):
    model_dir = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "tools/train.py", "--gin_file=gin_configs/cifar_fs_cpu.gin", f"--model_dir={model_dir}"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "run_experiment.data_dir" in completed.stderr
    assert "cifar-100-python.tar.gz" in completed.stderr  # the expected layout
    assert not model_dir.exists()


# A reference to a repository file that is not there misleads a reader: every
# path into the repository (one that starts with a top-level folder of it, or
# ``../``), every Markdown file named, and every file a gin config includes
# must exist, relative to the repository, the referring file's folder or, for
# gin includes, gin_configs/. Bare names of other files (``eval.py``, a run's
# ``config.gin``, the official code's ``train_meta.py``) are not paths.
REFERRING_FILES = ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "setup.py", "setup.cfg", "docs",
                   "tf_deepemd", "tools", "benchmarks", "gin_configs", "tests", ".ci")
FILE_REFERENCE = re.compile(r"(?<![\w/.-])((?:\.\.?/)?(?:[\w-]+/)*[\w.-]*\w\.(?:md|gin|py|sh))(?![\w/-])")


def referenced_files(text):
    """File paths named in ``text`` (URLs, patterns and ``revision:path`` left out)."""
    text = re.sub(r"https?://\S+", "", text)
    for match in FILE_REFERENCE.finditer(text):
        if text[match.start() - 1: match.start()] not in ("{", "}", "<", ">", "*", ":"):
            yield match.group(1)


def is_repository_path(reference, referring_file):
    if reference.startswith(("./", "../")):
        return True
    if "/" not in reference:
        return reference.endswith(".md")
    top_level = {path.name for path in ROOT.iterdir() if path.is_dir()}
    return reference.split("/")[0] in top_level or referring_file.suffix == ".gin"


def missing_references():
    missing = []
    for name in REFERRING_FILES:
        base = ROOT / name
        for file in [base] if base.is_file() else sorted(base.rglob("*")):
            if (not file.is_file() or file == pathlib.Path(__file__).resolve()
                    or file.suffix not in {".md", ".py", ".gin", ".sh", ".cfg", ""}):
                continue
            for number, line in enumerate(file.read_text(errors="replace").splitlines(), start=1):
                for reference in dict.fromkeys(referenced_files(line)):
                    places = (ROOT, file.parent, ROOT / "gin_configs")
                    if is_repository_path(reference, file) and not any(
                            (place / reference).is_file() for place in places):
                        missing.append(f"{file.relative_to(ROOT)}:{number}: {reference}")
    return missing


def test_every_referenced_repository_file_exists():
    missing = missing_references()
    assert not missing, "references to files that are not in the repository:\n" + "\n".join(missing)


def test_the_reference_check_reads_paths_and_flags_missing_ones():
    found = list(referenced_files(
        "see docs/method.md, `gin_configs/base/protocol.gin`, the official train_meta.py, "
        "gin_configs/{mini,cub}_1shot.gin, https://github.com/x/y/README.md, "
        "git show v1:tf_deepemd/ops/emd.py and NOTES.md."))
    assert found == ["docs/method.md", "gin_configs/base/protocol.gin", "train_meta.py", "NOTES.md"]
    readme = ROOT / "README.md"
    checked = [ref for ref in found if is_repository_path(ref, readme)]
    assert checked == ["docs/method.md", "gin_configs/base/protocol.gin", "NOTES.md"]
    assert is_repository_path("base/protocol.gin", ROOT / "gin_configs" / "mini_1shot.gin")


def test_the_package_has_one_version_and_ships_its_typing_marker():
    import tf_deepemd

    completed = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == tf_deepemd.__version__
    assert (ROOT / "tf_deepemd" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "setup.py").read_text()


def test_the_kernel_is_built_against_the_tensorflow_it_runs_with():
    """pip builds the kernel in an isolated environment from pyproject.toml's
    requirements: its TensorFlow pin must be the runtime's (setup.py)."""
    runtime = re.search(r'^TENSORFLOW = "(.+)"', (ROOT / "setup.py").read_text(), re.M).group(1)
    build = re.search(r"^requires = \[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert f'"{runtime}"' in build, (runtime, build)
    assert re.fullmatch(r"tensorflow-cpu==\d+\.\d+\.\*", runtime), runtime

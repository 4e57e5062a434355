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

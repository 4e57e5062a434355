"""The README's commands are the ones CI and users run."""

import pathlib
import re

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


def test_readme_main_command_script_exists():
    main = readme_commands()[0]
    script = main.split("python ", 1)[1].split()[0]
    assert (ROOT / script).is_file(), script

"""README.md says only what is true: its API example runs, its lesson index names every lesson and the
figures each one writes, and every image it shows is in the repository."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else None]


def test_the_api_example_runs_and_prints_what_it_promises():
    code = re.search(r"```python\n(.*?)```", section("A first look at the API"), re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.fullmatch(r"loss \d+\.\d{3}; block 4 attention \(1, 4, 17, 17\), class token reads patch \d+ most\n",
                        proc.stdout), proc.stdout


def test_the_lesson_index_names_every_lesson_and_the_figures_it_writes():
    index = section("The lessons")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\d\d\w*\.py)` \|(.*)$", index, re.M)}
    lessons = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]*_*.py"))
    assert sorted(rows) == lessons
    for lesson, row in rows.items():
        source = (ROOT / "lessons" / lesson).read_text(encoding="utf-8")
        figures = re.findall(r"`(\d\d\w*\.png)`", row)
        assert figures, lesson
        for name in figures:              # each named figure is a name the lesson saves under
            assert f'"{name}"' in source, (lesson, name)


def test_every_image_the_readme_shows_is_in_the_repository():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README) + re.findall(r'<img src="([^"]+)"', README)
    assert len(images) >= 4
    tracked = subprocess.run(["git", "ls-files", "lessons/figures"], capture_output=True, text=True, cwd=ROOT).stdout
    for path in images:
        assert (ROOT / path).is_file(), path
        if tracked:                       # in a git checkout: committed, not just left over from a run
            assert path in tracked.split(), f"{path} is not tracked by git"


def test_every_lesson_file_is_one_the_ci_glob_runs():
    # .ci/run and the lesson tests take lessons/[0-9][0-9]*_*.py; a lesson named otherwise (a letter after
    # the number without "*", say) would silently never run. Helpers start with "_" and are not lessons.
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "lessons/[0-9][0-9]*_*.py" in ci
    lessons = {p.name for p in (ROOT / "lessons").glob("*.py") if not p.name.startswith("_")}
    globbed = {p.name for p in (ROOT / "lessons").glob("[0-9][0-9]*_*.py")}
    assert lessons == globbed and {"05b_vlm_bridges.py", "08b_text_to_image.py", "09b_video_generation.py"} <= globbed

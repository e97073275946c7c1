"""Point this copy of the project at its GitHub repository, in one command:

    python tools/set_repo.py OWNER/NAME          # or https://github.com/OWNER/NAME(.git)

rewrites `REPO_URL` in helpers/core/environment.py (the setup cell clones it), the README's "Open in Colab"
badge and every notebook's badge and setup cell (stored outputs are kept: only the address
changes). Run it once after forking, then commit and push; the badges open your copy.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT = Path("helpers", "core", "environment.py")  # where REPO_URL is defined
_SLUG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_URL_LINE = re.compile(r'^REPO_URL = "https://github\.com/([^"]+?)(?:\.git)?"$', re.MULTILINE)


def parse_slug(text: str) -> str:
    """`OWNER/NAME` from `OWNER/NAME`, `github.com/OWNER/NAME` or a GitHub https/git address."""
    slug = re.sub(r"^(https?://)?(www\.)?github\.com[/:]", "", text.strip())
    slug = re.sub(r"^git@github\.com:", "", slug).removesuffix("/").removesuffix(".git")
    if not _SLUG.match(slug):
        raise ValueError(f"{text!r} is not a GitHub repository: write OWNER/NAME, e.g. "
                         "someone/cxr-text-localization")
    return slug


def current_slug(root: Path = ROOT) -> str:
    """The `OWNER/NAME` that helpers/core/environment.py names now."""
    match = _URL_LINE.search((root / ENVIRONMENT).read_text())
    if match is None:
        raise ValueError(f"{root / ENVIRONMENT}: no line REPO_URL = \"https://github.com/...\"")
    return match.group(1)


def set_repo(slug: str, root: Path = ROOT) -> list[Path]:
    """Replace the current repository address by `slug` in helpers/core/environment.py, the README and the notebooks;
    returns the files changed."""
    new, old = parse_slug(slug), current_slug(root)
    files = [root / ENVIRONMENT, root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]
    # every form the address takes: the clone URL, github.com/OLD/..., the Colab link .../github/OLD/...
    forms = [(f"github.com/{old}.git", f"github.com/{new}.git"), (f"github.com/{old}/", f"github.com/{new}/"),
             (f"/github/{old}/", f"/github/{new}/")]
    changed = []
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        updated = text
        for before, after in forms:
            updated = updated.replace(before, after)
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    if current_slug(root) != new:
        raise ValueError(f"{root / ENVIRONMENT}: REPO_URL was not updated")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", help="OWNER/NAME of your GitHub copy")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        changed = set_repo(args.repo, args.root)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in changed:
        print("updated", path.relative_to(args.root))
    print(f"REPO_URL is now https://github.com/{parse_slug(args.repo)}.git: commit and push.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

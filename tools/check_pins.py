"""Fails unless the running environment has exactly the versions pinned in the given file (so that
`make test-compat` cannot pass on newer packages by accident)."""
import sys
from importlib.metadata import version

wrong = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, pinned = line.split("==")
        if version(name) != pinned:
            wrong.append(f"{name} {version(name)} (pinned {pinned})")
        else:
            print(f"{name} {pinned}")
sys.exit(f"not the pinned versions: {', '.join(wrong)}" if wrong else 0)

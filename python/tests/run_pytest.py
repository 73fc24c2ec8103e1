"""meson test's runner for a pytest file: exit 77 (skipped) when numpy or
pytest is missing from this interpreter, or when the file needs torch
(--needs-torch) and torch is missing; otherwise pytest's own status.
    run_pytest.py [--needs-torch] FILE [pytest args...]"""
import importlib.util
import sys


def main() -> int:
    args = sys.argv[1:]
    needs = ["numpy", "pytest"]
    if args and args[0] == "--needs-torch":
        needs.append("torch")
        args = args[1:]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        print(f"skipped: {sys.executable} lacks {', '.join(missing)} "
              f"(Debian: apt-get install {' '.join('python3-' + m for m in missing)})")
        return 77
    import pytest
    return pytest.main(["-q", "-p", "no:cacheprovider"] + args)


# Guarded: tests that spawn processes re-import this file in each child.
if __name__ == "__main__":
    sys.exit(main())
